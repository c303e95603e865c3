"""Pre-processing (resize, normalize, pad) and the way back (boxes and masks to the original image).

Every reference implementation resizes a little differently (library, rounding of the new size), and
box coordinates depend on it at the sub-pixel level; ``InputConfig`` names the variant and this module
reproduces it.
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
class ImageBatch:
    """tensor: float32 [N, 3, Hp, Wp] normalized and padded; sizes are (height, width)."""

    tensor: Tensor
    image_sizes: list[tuple[int, int]]  # after resizing, before padding
    original_sizes: list[tuple[int, int]]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def resized_size(height: int, width: int, cfg: InputConfig, short: int | None = None,
                 long: int | None = None) -> tuple[int, int]:
    """New (height, width) for an image, following ``cfg.resize`` and ``cfg.size_rounding``."""
    if cfg.resize == "fit":
        fh, fw = cfg.fit_size
        scale = min(fh / height, fw / width)
        return min(fh, max(1, int(height * scale + 0.5))), min(fw, max(1, int(width * scale + 0.5)))
    short = cfg.min_size if short is None else short
    long = cfg.max_size if long is None else long
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
    array = image.permute(1, 2, 0).cpu().numpy()
    h, w = size
    if backend == "cv2":
        out = cv2.resize(array, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        out = np.array(Image.fromarray(array).resize((w, h), Image.BILINEAR))
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).to(image.device)


class ImageTransform(torch.nn.Module):
    """List of BGR [3, H, W] images (uint8 or float 0..255) -> normalized, padded ``ImageBatch``."""

    def __init__(self, cfg: InputConfig) -> None:
        super().__init__()
        self.cfg = cfg
        order = [2, 1, 0] if cfg.channel_order == "rgb" else [0, 1, 2]
        self.channel_index = order
        self.register_buffer("mean", torch.tensor(cfg.mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(3, 1, 1), persistent=False)

    def normalize(self, image: Tensor) -> Tensor:
        x = image[self.channel_index].float()
        if self.cfg.pixel_scale != 1.0:
            x = x / self.cfg.pixel_scale
        return (x - self.mean) / self.std

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> tuple[ImageBatch, list[dict[str, Tensor]] | None]:
        cfg = self.cfg
        if self.training:
            short, long = random.choice(cfg.train_min_sizes), cfg.train_max_size
        else:
            short, long = cfg.min_size, cfg.max_size
        resized, image_sizes, original_sizes = [], [], []
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"expected images as [3, H, W] tensors, got shape {tuple(img.shape)}")
            h, w = int(img.shape[1]), int(img.shape[2])
            original_sizes.append((h, w))
            if self.training:  # multi-scale training: always torch bilinear, as the library is irrelevant
                x = self.normalize(img)
                fit = cfg if cfg.resize == "shortest_edge" else _as_shortest_edge(cfg)
                nh, nw = resized_size(h, w, fit, short, long)
                x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            elif cfg.resize_backend == "torch":
                x = self.normalize(img)
                if cfg.size_rounding == "floor" and cfg.resize == "shortest_edge":
                    scale = min(short / min(h, w), long / max(h, w))
                    x = F.interpolate(x[None], scale_factor=scale, mode="bilinear",
                                      recompute_scale_factor=True, align_corners=False)[0]
                else:
                    size = resized_size(h, w, cfg, short, long)
                    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
            else:
                size = resized_size(h, w, cfg, short, long)
                u8 = img if img.dtype == torch.uint8 else img.clamp(0, 255).round().to(torch.uint8)
                x = self.normalize(_resize_uint8(u8, size, cfg.resize_backend))
            resized.append(x)
            image_sizes.append((int(x.shape[1]), int(x.shape[2])))
        batch = self.pad(resized)
        if targets is not None:
            targets = [_scale_target(t, o, r) for t, o, r in zip(targets, original_sizes, image_sizes)]
        return ImageBatch(batch, image_sizes, original_sizes), targets

    def pad(self, images: list[Tensor]) -> Tensor:
        cfg = self.cfg
        if cfg.pad_to == "fixed" and not self.training:
            ph, pw = cfg.fit_size
        else:
            d = cfg.size_divisor
            ph = int(math.ceil(max(i.shape[1] for i in images) / d) * d)
            pw = int(math.ceil(max(i.shape[2] for i in images) / d) * d)
        zeros = torch.zeros(3, 1, 1, device=self.mean.device)
        fill = zeros if cfg.pad_normalized else self.normalize(zeros)  # pixel 0 padded before normalization
        batch = fill.to(images[0]).expand(len(images), 3, ph, pw).clone()
        for b, img in zip(batch, images):
            b[:, : img.shape[1], : img.shape[2]].copy_(img)
        return batch


def _as_shortest_edge(cfg: InputConfig) -> InputConfig:
    from dataclasses import replace

    return replace(cfg, resize="shortest_edge", size_rounding="round")


def _scale_target(target: dict[str, Tensor], original: tuple[int, int], resized: tuple[int, int]
                  ) -> dict[str, Tensor]:
    """Boxes to the resized image; masks stay at the original size (mask targets are cut from them)."""
    ry, rx = resized[0] / original[0], resized[1] / original[1]
    out = dict(target)
    scale = torch.tensor([rx, ry, rx, ry], dtype=torch.float32, device=target["boxes"].device)
    out["boxes"] = target["boxes"].float() * scale
    return out


def boxes_to_original(boxes: Tensor, resized: tuple[int, int], original: tuple[int, int]) -> Tensor:
    """[N, 4] boxes from resized-image pixels back to original-image pixels (per-axis ratios)."""
    ratio_h = torch.tensor(original[0], dtype=torch.float32) / torch.tensor(resized[0], dtype=torch.float32)
    ratio_w = torch.tensor(original[1], dtype=torch.float32) / torch.tensor(resized[1], dtype=torch.float32)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], method: str,
                threshold: float) -> Tensor:
    """Paste [N, M, M] mask probabilities into [N, H, W] boolean full-image masks at ``boxes`` [N, 4]."""
    h, w = image_size
    out = torch.zeros((masks.shape[0], h, w), dtype=torch.bool)
    if masks.shape[0] == 0:
        return out
    masks, boxes = masks.float().cpu(), boxes.float().cpu()
    for i in range(masks.shape[0]):
        if method == "torchvision":
            _paste_torchvision(masks[i], boxes[i], out[i], threshold)
        else:
            _paste_grid_sample(masks[i], boxes[i], out[i], threshold)
    return out


def _paste_torchvision(mask: Tensor, box: Tensor, out: Tensor, threshold: float) -> None:
    """torchvision: pad the mask by one cell, grow the box to match, resize bilinearly, ``> threshold``."""
    m = mask.shape[-1]
    scale = (m + 2) / m
    padded = F.pad(mask[None, None], (1, 1, 1, 1))
    half_w = (box[2] - box[0]) * 0.5 * scale
    half_h = (box[3] - box[1]) * 0.5 * scale
    cx, cy = (box[2] + box[0]) * 0.5, (box[3] + box[1]) * 0.5
    x0, y0, x1, y1 = (int(v) for v in torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h]).to(
        torch.int64))
    bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    resized = F.interpolate(padded, size=(bh, bw), mode="bilinear", align_corners=False)[0, 0]
    im_h, im_w = out.shape
    xa, xb = max(x0, 0), min(x1 + 1, im_w)
    ya, yb = max(y0, 0), min(y1 + 1, im_h)
    if xb > xa and yb > ya:
        out[ya:yb, xa:xb] = resized[ya - y0 : yb - y0, xa - x0 : xb - x0] > threshold


def _paste_grid_sample(mask: Tensor, box: Tensor, out: Tensor, threshold: float) -> None:
    """detectron2 / mmdetection: sample the mask at each pixel centre inside the box, ``>= threshold``."""
    im_h, im_w = out.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    xa, ya = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
    xb, yb = min(int(math.ceil(x1)) + 1, im_w), min(int(math.ceil(y1)) + 1, im_h)
    if xb <= xa or yb <= ya:
        return
    ys = (torch.arange(ya, yb, dtype=torch.float32) + 0.5 - y0) / max(y1 - y0, 1e-6) * 2 - 1
    xs = (torch.arange(xa, xb, dtype=torch.float32) + 0.5 - x0) / max(x1 - x0, 1e-6) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]
    sampled = F.grid_sample(mask[None, None], grid, align_corners=False)[0, 0]
    out[ya:yb, xa:xb] = sampled >= threshold
