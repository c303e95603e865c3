"""Box <-> regression-target encoding: (dx, dy, dw, dh) scaled by per-coordinate weights.

The weights (10, 10, 5, 5) of the RoI head equal mmdetection's target_stds (0.1, 0.1, 0.2, 0.2).
Widths are ``x2 - x1`` (no +1) in every implementation isseg reproduces.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Largest allowed exp(dw): a box can grow at most 1000/16 times (all reference implementations).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(self, weights: tuple[float, float, float, float], clip: float = BBOX_XFORM_CLIP,
                 clamp_both_sides: bool = False) -> None:
        self.weights = weights
        self.clip = clip
        self.min_clip = -clip if clamp_both_sides else None  # mmdetection also bounds shrinking

    def encode(self, reference: Tensor, proposals: Tensor) -> Tensor:
        """Targets [N,4] that turn ``proposals`` [N,4] into ``reference`` [N,4] boxes."""
        wx, wy, ww, wh = self.weights
        pw = proposals[:, 2] - proposals[:, 0]
        ph = proposals[:, 3] - proposals[:, 1]
        px = proposals[:, 0] + 0.5 * pw
        py = proposals[:, 1] + 0.5 * ph
        gw = reference[:, 2] - reference[:, 0]
        gh = reference[:, 3] - reference[:, 1]
        gx = reference[:, 0] + 0.5 * gw
        gy = reference[:, 1] + 0.5 * gh
        return torch.stack(
            [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=1
        )

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply ``deltas`` [N, 4k] to ``boxes`` [N, 4]; returns [N, 4k] boxes (x1, y1, x2, y2).

        Each coordinate is computed with the same operations as the reference implementations' column-wise
        code, on [N, k, 2] (x, y) pairs: the exported graph then has a few element-wise operations on whole
        tensors instead of strided slices of every column and a concatenation (80 classes x 1000 RoIs)."""
        boxes = boxes.to(deltas.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        size = torch.stack([widths, heights], 1)[:, None]  # [N, 1, 2]
        ctr = torch.stack([boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights], 1)[:, None]
        scaled = deltas.reshape(deltas.shape[0], -1, 4) / deltas.new_tensor(self.weights)  # [N, k, 4]
        dxy = scaled[..., :2]
        dwh = scaled[..., 2:].clamp(min=self.min_clip, max=self.clip)
        pred_ctr = dxy * size + ctr
        pred_wh = torch.exp(dwh) * size
        return torch.cat([pred_ctr - 0.5 * pred_wh, pred_ctr + 0.5 * pred_wh], 2).reshape(deltas.shape[0], -1)


def clip_boxes(boxes: Tensor, height: int | Tensor, width: int | Tensor) -> Tensor:
    """Clamp x to [0, width] and y to [0, height]; ``boxes`` [..., 4]. The size may be a traced 0-dim tensor
    (an exported graph clips to its own, dynamic, input size)."""
    if isinstance(width, Tensor) or isinstance(height, Tensor):
        w = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
        h = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
        upper = torch.stack([w, h, w, h])
    else:
        upper = boxes.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), upper)
