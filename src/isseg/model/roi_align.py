"""RoIAlign for training on a CPU: the function of torchvision's ``roi_align``, with a backward ~3-4x faster.

torchvision's CPU backward scatters every bilinear sample of every bin into the feature map's gradient one float
at a time; in a ``fast-cpu`` step (ResNet-18, 64 channels, 128 px) it took ~27 % of the step. Here the same sum is
written as a sparse matrix ``W`` [bins, N*H*W] (16 weights per bin at sampling ratio 2: 4 samples x 4 corners)
applied to the feature map laid out as a table [N*H*W, C]:

- forward: ``torch.nn.functional.embedding_bag`` (one bag of weighted rows per bin);
- backward: ``W^T @ grad`` as one sparse-dense matrix product.

The samples, their clamping at the borders, the zeros outside ``[-1, size]``, the adaptive grid
(``sampling_ratio=0``: ``ceil(roi_size / output_size)`` samples per bin side) and ``aligned`` are torchvision's, so
the outputs and the feature gradients agree with it to float rounding (tests/test_roi_align.py). The sums run in
fp32 (as torchvision's autocast does); the RoI coordinates are read in fp32, never rounded to the features' dtype.
No gradient flows to the RoIs, as in torchvision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _WeightedRows(torch.autograd.Function):
    """``out[b] = sum_j weights[j] * table[index[j]]`` over bag ``b``'s entries (``bag[j] == b``)."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, weights: Tensor, offsets: Tensor, bag: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(index, weights, bag)
        ctx.rows = table.shape[0]
        return F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None]:  # noqa: D102
        index, weights, bag = ctx.saved_tensors
        w_t = torch.sparse_coo_tensor(torch.stack([index, bag]), weights, (ctx.rows, grad.shape[0]),
                                      check_invariants=False)  # duplicates add up, as the scatter did
        with torch.autocast(grad.device.type, enabled=False):  # a backward called inside autocast stays in fp32
            return torch.sparse.mm(w_t, grad.contiguous().float()), None, None, None, None


def _axis(start: Tensor, length: Tensor, out: int, grid: Tensor, most: int, size: int) -> tuple[Tensor, ...]:
    """One axis of the samples: RoIs' ``start`` and ``length`` [R] (feature pixels), ``grid`` [R] samples per bin
    -> (low, high) neighbour indices and their weights [R, out, most], and the samples that exist ([R, out, most]:
    ``i < grid``) and lie within ``[-1, size]`` (the others add zero)."""
    bins = torch.arange(out, dtype=torch.float32, device=start.device)[None, :, None]
    steps = torch.arange(most, dtype=torch.float32, device=start.device)[None, None, :]
    g = grid.clamp(min=1).to(torch.float32)[:, None, None]
    pos = start[:, None, None] + (bins + (steps + 0.5) / g) * (length / out)[:, None, None]
    keep = (steps < grid[:, None, None]) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.floor().to(torch.int64)
    top = low >= size - 1
    low = torch.where(top, torch.full_like(low, size - 1), low)
    high = torch.where(top, low, low + 1)
    frac = torch.where(top, torch.zeros_like(pos), pos - low)
    return low, high, 1.0 - frac, frac, keep


def roi_align_rows(feat: Tensor, rois: Tensor, output_size: int, spatial_scale: float, sampling_ratio: int,
                   aligned: bool) -> Tensor:
    """torchvision's ``roi_align(feat, rois, output_size, spatial_scale, sampling_ratio, aligned)``.

    ``feat`` [N, C, H, W] (any float dtype; summed in fp32), ``rois`` [R, 5] (batch index, x1, y1, x2, y2 in
    image pixels) -> [R, C, output_size, output_size] in ``feat``'s dtype, differentiable in ``feat``.
    """
    n, c, h, w = feat.shape
    r, out = rois.shape[0], output_size
    if r == 0:
        return feat[:0, :, :1, :1].expand(0, c, out, out)  # empty, in the features' graph
    rois = rois.detach().to(torch.float32)
    offset = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * spatial_scale - offset, rois[:, 2] * spatial_scale - offset
    width, height = rois[:, 3] * spatial_scale - offset - x1, rois[:, 4] * spatial_scale - offset - y1
    if not aligned:
        width, height = width.clamp(min=1.0), height.clamp(min=1.0)
    if sampling_ratio > 0:
        gy = gx = torch.full((r,), sampling_ratio, dtype=torch.int64, device=rois.device)
    else:
        gy, gx = torch.ceil(height / out).to(torch.int64), torch.ceil(width / out).to(torch.int64)
    my, mx = max(int(gy.max()), 1), max(int(gx.max()), 1)
    yl, yh, wy0, wy1, ky = _axis(y1, height, out, gy, my, h)
    xl, xh, wx0, wx1, kx = _axis(x1, width, out, gx, mx, w)
    # [R, out_y, out_x, my, mx, 4 corners]: rows of the table and their weights, bag-major (one bag per bin)
    shape = (r, out, 1, my, 1, 4), (r, 1, out, 1, mx, 4)
    iy, ix = torch.stack([yl, yl, yh, yh], -1).view(shape[0]), torch.stack([xl, xh, xl, xh], -1).view(shape[1])
    vy, vx = torch.stack([wy0, wy0, wy1, wy1], -1).view(shape[0]), torch.stack([wx0, wx1, wx0, wx1], -1).view(shape[1])
    base = (rois[:, 0].to(torch.int64) * (h * w)).view(r, 1, 1, 1, 1, 1)
    index = base + iy * w + ix
    count = (gy * gx).clamp(min=1).to(torch.float32).view(r, 1, 1, 1, 1, 1)
    weights = vy * vx * (ky.view(r, out, 1, my, 1, 1) & kx.view(r, 1, out, 1, mx, 1)) / count
    index, weights = index.reshape(-1), weights.reshape(-1)
    per_bag = my * mx * 4  # samples that do not exist or lie outside [-1, size] stay in, with weight 0
    bags = r * out * out
    offsets = torch.arange(0, bags * per_bag, per_bag, device=rois.device)
    bag = torch.arange(bags, device=rois.device)[:, None].expand(bags, per_bag).reshape(-1)
    table = feat.permute(0, 2, 3, 1).reshape(n * h * w, c).to(torch.float32)
    with torch.autocast(feat.device.type, enabled=False):
        pooled = _WeightedRows.apply(table, index, weights, offsets, bag)
    return pooled.view(r, out, out, c).permute(0, 3, 1, 2).to(feat.dtype)


def use_rows(feat: Tensor) -> bool:
    """Whether :class:`isseg.model.roi_heads.MultiScaleRoIAlign` takes :func:`roi_align_rows`: when training on a
    CPU (a gradient is wanted for ``feat``), never when tracing or exporting (they keep torchvision's operator)."""
    return (feat.device.type == "cpu" and feat.requires_grad and torch.is_grad_enabled()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())
