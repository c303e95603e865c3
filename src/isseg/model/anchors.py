"""Anchor boxes on the FPN levels, one size and several aspect ratios per level."""

from __future__ import annotations

import torch
from torch import Tensor

from isseg.config import AnchorConfig


def base_anchors(size: float, aspect_ratios: tuple[float, ...], round_base: bool) -> Tensor:
    """[A, 4] boxes centred on 0 with area ``size**2`` and height/width == ratio.

    torchvision rounds them to integers; detectron2 and mmdetection keep them fractional.
    """
    ratios = torch.tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    ws = size / h_ratios
    hs = size * h_ratios
    anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
    return anchors.round() if round_base else anchors


def grid_anchors(base: Tensor, stride_x: int, stride_y: int, height: int, width: int) -> Tensor:
    """[H*W*A, 4] anchors ordered (y, x, anchor) as the RPN head's outputs are flattened."""
    shifts_x = torch.arange(width, dtype=torch.float32, device=base.device) * stride_x
    shifts_y = torch.arange(height, dtype=torch.float32, device=base.device) * stride_y
    sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base.reshape(1, -1, 4)).reshape(-1, 4)


class AnchorGenerator(torch.nn.Module):
    def __init__(self, cfg: AnchorConfig) -> None:
        super().__init__()
        if len(cfg.sizes) != len(cfg.strides):
            raise ValueError(f"anchors: {len(cfg.sizes)} sizes but {len(cfg.strides)} strides")
        self.strides = cfg.strides
        self.strides_from_image = cfg.strides_from_image
        self.cell_anchors = [base_anchors(s, cfg.aspect_ratios, cfg.round_base) for s in cfg.sizes]
        self.num_anchors = len(cfg.aspect_ratios)
        self._cache: dict[tuple, list[Tensor]] = {}

    def forward(
        self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int], device: torch.device
    ) -> list[Tensor]:
        """One [H_l*W_l*A, 4] tensor per level (the same for every image of a padded batch). Sizes may be traced
        0-dim tensors: then the anchors are computed in the graph, never cached."""
        if torch.jit.is_tracing() or any(isinstance(v, Tensor) for v in image_size):
            return self._generate(feature_sizes, image_size, device)
        key = (tuple(tuple(int(v) for v in s) for s in feature_sizes), tuple(image_size), str(device))
        if key not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[key] = self._generate(feature_sizes, image_size, device)
        return self._cache[key]

    def _generate(self, feature_sizes: list, image_size: tuple, device: torch.device) -> list[Tensor]:
        levels = []
        for base, stride, (h, w) in zip(self.cell_anchors, self.strides, feature_sizes):
            sy, sx = (image_size[0] // h, image_size[1] // w) if self.strides_from_image else (stride, stride)
            levels.append(grid_anchors(base.to(device), sx, sy, h, w))
        return levels
