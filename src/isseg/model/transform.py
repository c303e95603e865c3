"""Pre-processing: a BGR image becomes the network input of its preset (resize, letterbox, normalize, pad).

Every reference implementation resizes a little differently (library, rounding of the new size), and box
coordinates depend on it at the sub-pixel level; ``InputConfig`` names the variant and this module reproduces
it. It is the one pre-processing of isseg: ``MaskRCNN`` and every ``Predictor`` backend call
:func:`prepare_image`, so the exported graph sees exactly the input the eager model sees.

The split between the application and the network follows the deployment contract: the application resizes
(and, for a fixed canvas, letterboxes) the image; the network normalizes it, pads it to ``size_divisor`` and
clips boxes to its own input extent. Normalization commutes with bilinear resizing, so torchvision's order
(normalize, then resize) is reproduced up to float rounding.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from isseg.config import InputConfig


@dataclass
class PreparedImage:
    """One image as the network takes it: ``input`` float32 [3, h, w], BGR, 0..255 (the resized image, or the
    letterboxed canvas of a "fit" preset); ``content_size`` (h, w) of the resized image inside it;
    ``original_size`` (H, W) of the image as given."""

    input: Tensor
    content_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.input.shape[1]), int(self.input.shape[2])


@dataclass
class ImageBatch:
    """tensor: float32 [N, 3, Hp, Wp] normalized and padded; sizes are (height, width)."""

    tensor: Tensor
    image_sizes: list[tuple[int, int]]  # the extent boxes are clipped to: the network input of each image
    content_sizes: list[tuple[int, int]]  # the resized image inside it (== image_sizes but for a letterbox)
    original_sizes: list[tuple[int, int]]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def resized_size(height: int, width: int, cfg: InputConfig, size: tuple[int, int] | None = None
                 ) -> tuple[int, int]:
    """New (height, width) for an image, following ``cfg.resize`` and ``cfg.size_rounding`` at ``size``
    (default ``cfg.size``; training passes its drawn scale)."""
    a, b = cfg.size if size is None else size
    if cfg.resize == "fit":
        scale = min(a / height, b / width)
        return min(a, max(1, int(height * scale + 0.5))), min(b, max(1, int(width * scale + 0.5)))
    short, long = a, b
    if cfg.size_rounding == "floor":  # torchvision: interpolate(scale_factor=s, recompute_scale_factor=True)
        scale = min(short / min(height, width), long / max(height, width))
        return math.floor(height * scale), math.floor(width * scale)
    if cfg.size_rounding == "detectron2":  # ResizeShortestEdge: short side first, then cap the long side
        scale = short / min(height, width)
        nh, nw = (short, scale * width) if height < width else (scale * height, short)
        if max(nh, nw) > long:
            s = long / max(nh, nw)
            nh, nw = nh * s, nw * s
        return int(nh + 0.5), int(nw + 0.5)
    scale = min(long / max(height, width), short / min(height, width))  # mmcv.rescale_size
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _resize_uint8(image: Tensor, size: tuple[int, int], backend: str) -> Tensor:
    """Resize a uint8 [3, H, W] image with cv2 or PIL (both on HWC arrays on the CPU)."""
    array = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    h, w = size
    if backend == "cv2":
        out = cv2.resize(array, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        out = np.array(Image.fromarray(array).resize((w, h), Image.BILINEAR))
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).to(image.device)


def resize_image(image: Tensor, cfg: InputConfig, size: tuple[int, int] | None = None,
                 backend: str | None = None) -> Tensor:
    """BGR [3, H, W] (uint8, or float 0..255) -> float32 [3, h, w] resized as the preset says."""
    h, w = int(image.shape[1]), int(image.shape[2])
    backend = backend or cfg.resize_backend
    a, b = cfg.size if size is None else size
    if backend == "torch":
        x = image.float()
        if cfg.size_rounding == "floor" and cfg.resize == "shortest_edge":  # torchvision's exact call
            scale = min(a / min(h, w), b / max(h, w))
            return F.interpolate(x[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                                 align_corners=False)[0]
        return F.interpolate(x[None], size=resized_size(h, w, cfg, size), mode="bilinear", align_corners=False)[0]
    new = resized_size(h, w, cfg, size)
    u8 = image if image.dtype == torch.uint8 else image.clamp(0, 255).round().to(torch.uint8)
    out = u8 if new == (h, w) else _resize_uint8(u8, new, backend)
    return out.float()


def letterbox(image: Tensor, canvas: tuple[int, int], fill: tuple[float, float, float]) -> Tensor:
    """float [3, h, w] -> [3, H, W] canvas with the image top-left and ``fill`` (BGR) elsewhere."""
    h, w = int(image.shape[1]), int(image.shape[2])
    if (h, w) == tuple(canvas):
        return image
    out = torch.tensor(fill, dtype=image.dtype, device=image.device).view(3, 1, 1).expand(3, *canvas).clone()
    out[:, :h, :w] = image
    return out


def prepare_image(image: Tensor, cfg: InputConfig) -> PreparedImage:
    """Inference pre-processing of one BGR [3, H, W] image (uint8 or float 0..255): resize, and letterbox into
    the canvas of a "fit" preset."""
    original = (int(image.shape[1]), int(image.shape[2]))
    x = resize_image(image, cfg)
    content = (int(x.shape[1]), int(x.shape[2]))
    if cfg.resize == "fit":
        x = letterbox(x, cfg.size, cfg.pad_pixel())
    return PreparedImage(x, content, original)


class ImageTransform(torch.nn.Module):
    """List of BGR [3, H, W] images (uint8 or float 0..255) -> normalized, padded ``ImageBatch``."""

    def __init__(self, cfg: InputConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bgr_to_rgb = cfg.channel_order == "rgb"
        self.register_buffer("mean", torch.tensor(cfg.mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(3, 1, 1), persistent=False)

    def normalize(self, image: Tensor) -> Tensor:
        """BGR 0..255 [..., 3, H, W] -> the network's normalized input (traceable)."""
        x = image.float()
        if self.bgr_to_rgb:
            x = torch.flip(x, dims=[-3])
        if self.cfg.pixel_scale != 1.0:
            x = x / self.cfg.pixel_scale
        x = x - self.mean
        if any(s != 1.0 for s in self.cfg.std):
            x = x / self.std
        return x

    def pad(self, x: Tensor) -> Tensor:
        """Normalized [N, 3, H, W] -> padded right/bottom with zeros to a multiple of ``size_divisor``
        (traceable: the exported graph pads its dynamic input the same way)."""
        d = self.cfg.size_divisor
        h, w = x.shape[-2], x.shape[-1]
        return F.pad(x, (0, (-w) % d, 0, (-h) % d))

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> tuple[ImageBatch, list[dict[str, Tensor]] | None]:
        cfg = self.cfg
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"expected images as [3, H, W] tensors, got shape {tuple(img.shape)}")
        if self.training:  # multi-scale training, no letterbox; torch bilinear (the library is irrelevant)
            prepared = []
            for img in images:
                size = cfg.training_size(random.choice(cfg.train_sizes))
                x = resize_image(img, cfg, size, backend="torch")
                hw = (int(x.shape[1]), int(x.shape[2]))
                prepared.append(PreparedImage(x, hw, (int(img.shape[1]), int(img.shape[2]))))
        else:
            prepared = [prepare_image(img, cfg) for img in images]
        batch = self.batch([p.input for p in prepared])
        image_sizes = [p.input_size for p in prepared]
        if targets is not None:
            targets = [_scale_target(t, p.original_size, p.content_size) for t, p in zip(targets, prepared)]
        return ImageBatch(batch, image_sizes, [p.content_size for p in prepared],
                          [p.original_size for p in prepared]), targets

    def batch(self, inputs: list[Tensor]) -> Tensor:
        """Network inputs [3, h_i, w_i] -> one normalized batch, zero-padded to a common multiple of the divisor."""
        d = self.cfg.size_divisor
        ph = int(math.ceil(max(i.shape[1] for i in inputs) / d) * d)
        pw = int(math.ceil(max(i.shape[2] for i in inputs) / d) * d)
        out = inputs[0].new_zeros((len(inputs), 3, ph, pw))
        for b, x in zip(out, inputs):
            b[:, : x.shape[1], : x.shape[2]].copy_(self.normalize(x))
        return out


def _scale_target(target: dict[str, Tensor], original: tuple[int, int], resized: tuple[int, int]
                  ) -> dict[str, Tensor]:
    """Boxes to the resized image; masks stay at the original size (mask targets are cut from them)."""
    ry, rx = resized[0] / original[0], resized[1] / original[1]
    out = dict(target)
    scale = torch.tensor([rx, ry, rx, ry], dtype=torch.float32, device=target["boxes"].device)
    out["boxes"] = target["boxes"].float() * scale
    return out


def network_input(image: np.ndarray | str, cfg: InputConfig) -> tuple[np.ndarray, PreparedImage]:
    """A user image (checked by :func:`isseg.sources.decode.read_image`) -> (the exported graph's ``image`` input,
    float32 [1, 3, h, w] C-contiguous, and its ``PreparedImage``): what every runtime is fed."""
    from isseg.sources.decode import read_image

    array = read_image(image)
    prepared = prepare_image(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1), cfg)
    return np.ascontiguousarray(prepared.input[None].numpy(), dtype=np.float32), prepared
