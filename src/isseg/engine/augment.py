"""The training augmentations a recipe or a hyper-parameter search sets by strength (``TrainConfig`` fields):

- ``horizontal_flip``: probability of the left-right flip (:class:`isseg.data.transforms.RandomHorizontalFlip`);
- ``color_jitter`` s in [0, 1]: per image, contrast x ``U(1 - s, 1 + s)`` around the image's mean and brightness
  ``+ U(-s, s) * 64`` grey levels (:class:`ColorJitter`);
- ``scale_jitter`` s in [0, 1): the training short sides spread over ``[1 - s, 1 + s]`` x the inference size in
  five steps (:func:`jittered_sizes`, set as the preset's ``input.train_sizes``; the model resizes).

Randomness comes from torch's generator, which :class:`isseg.engine.sampler.SeededDataset` seeds per sample,
so a run and its resume draw the same augmentations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Transform = Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]


class ColorJitter:
    """Random contrast and brightness of a BGR ``uint8 [H, W, 3]`` image (see the module docstring)."""

    def __init__(self, strength: float) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"color jitter strength must be in [0, 1], got {strength}")
        self.strength = float(strength)

    def __call__(self, image: np.ndarray, target: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        if self.strength <= 0:
            return image, target
        u = torch.rand(2).tolist()
        contrast = 1.0 + self.strength * (2 * u[0] - 1)
        brightness = self.strength * (2 * u[1] - 1) * 64.0
        x = np.asarray(image, np.float32)
        mean = float(x.mean())
        out = (x - mean) * contrast + mean + brightness
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), target

    def __repr__(self) -> str:
        return f"ColorJitter({self.strength:g})"


class Compose:
    """Transforms applied in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def training_transform(horizontal_flip: float, color_jitter: float) -> Transform | None:
    """The data-side augmentations of these strengths (None when all are off)."""
    from isseg.data.transforms import RandomHorizontalFlip

    steps: list[Transform] = []
    if color_jitter > 0:
        steps.append(ColorJitter(color_jitter))
    if horizontal_flip > 0:
        steps.append(RandomHorizontalFlip(horizontal_flip))
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else Compose(steps)


def jittered_sizes(size: int, strength: float, limit: int | None = None) -> tuple[int, ...]:
    """Five training short sides spread over ``size * [1 - s, 1 + s]`` (at most ``limit``, at least 16 px)."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"scale jitter must be in [0, 1), got {strength}")
    sizes = {max(16, int(round(size * (1 + strength * k / 2)))) for k in (-2, -1, 0, 1, 2)}
    return tuple(sorted(min(s, limit) if limit else s for s in sizes))
