"""Training-time augmentation and batching.

Only geometry the model cannot do for itself lives here (a horizontal flip). Multi-scale resizing and
normalization are the model's job (``model.transform`` in train mode, per preset), so they are not repeated
in the data pipeline: images leave here as ``uint8 [3, H, W]`` BGR at their original size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def to_tensor_image(image: np.ndarray | Tensor) -> Tensor:
    """``uint8 [H, W, 3]`` BGR (or ``[H, W]`` gray) numpy image -> ``uint8 [3, H, W]`` BGR tensor.

    A tensor that already is ``[3, H, W]`` is returned as is, so datasets may hand over either form.
    """
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensor must be [3, H, W], got {tuple(image.shape)}")
        return image
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3] BGR or [H, W] gray, got {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def hflip(image: np.ndarray | Tensor, target: dict[str, Any]) -> tuple[np.ndarray | Tensor, dict[str, Any]]:
    """Mirror an image (``[H, W, C]`` numpy or ``[C, H, W]`` tensor) and its target left-right.

    Boxes are in continuous pixel coordinates (COCO's), so ``x -> W - x`` maps the image edges onto each
    other exactly: ``(x1, x2) -> (W - x2, W - x1)``.
    """
    if isinstance(image, Tensor):
        width = image.shape[-1]
        image = image.flip(-1)
    else:
        width = image.shape[1]
        image = np.ascontiguousarray(image[:, ::-1])
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"].clone()
        boxes[:, 0] = width - target["boxes"][:, 2]
        boxes[:, 2] = width - target["boxes"][:, 0]
        target["boxes"] = boxes
    if target.get("masks") is not None:
        target["masks"] = target["masks"].flip(-1)
    return image, target


class RandomHorizontalFlip:
    """Flip with probability ``p``. Draws from torch's RNG (or ``generator``), which DataLoader re-seeds in
    every worker; a numpy Generator created here would be copied into each worker and flip in lockstep."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if self.p > 0 and torch.rand((), generator=self.generator).item() < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def collate(
    batch: Sequence[tuple[np.ndarray | Tensor, dict[str, Any]]],
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """DataLoader ``collate_fn``: ``(list of uint8 [3, H, W] BGR tensors, list of target dicts)``.

    Images keep their own sizes (no stacking); the model pads the batch itself.
    """
    images = [to_tensor_image(image) for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
