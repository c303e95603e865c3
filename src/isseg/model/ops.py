"""Tensor operations of inference that must trace into standard ONNX (``NonMaxSuppression``, dynamic ``TopK``).

The model's inference is written once, with these, so that the exported graph is the eager code traced
(:mod:`isseg.deploy.export`), not a second implementation. In eager mode they call torchvision's kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms as tv_nms


class _NMS(torch.autograd.Function):
    """Per-batch NMS: ``boxes [B, N, 4]``, ``scores [B, 1, N]`` -> selected ``[M, 3]`` int64 rows
    (batch, 0, box index) in descending score order per batch, boxes with score <= ``score_thresh`` ignored,
    at most ``max_out`` per batch. Exported as ONNX ``NonMaxSuppression`` (opset >= 11)."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_out: int, iou_thresh: float,  # noqa: D102
                score_thresh: float) -> Tensor:
        rows = []
        for b in range(boxes.shape[0]):
            s = scores[b, 0]
            idx = torch.nonzero(s > score_thresh).squeeze(1)
            keep = tv_nms(boxes[b, idx], s[idx], iou_thresh)[:max_out]
            sel = idx[keep]
            rows.append(torch.stack([torch.full_like(sel, b), torch.zeros_like(sel), sel], 1))
        return torch.cat(rows, 0) if rows else torch.zeros(0, 3, dtype=torch.int64, device=boxes.device)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou_thresh, score_thresh):  # noqa: D102
        return g.op(
            "NonMaxSuppression", boxes, scores,
            g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_thresh], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_thresh], dtype=torch.float32)),
            center_point_box_i=0,
        )  # fmt: skip


def nms_rows(boxes: Tensor, scores: Tensor, max_out: int, iou_thresh: float, score_thresh: float) -> Tensor:
    """NMS of each batch row independently (a class or a pyramid level as the batch: boxes of different rows
    never interact, with no coordinate offsets that would cost precision); see :class:`_NMS`."""
    return _NMS.apply(boxes, scores, max_out, iou_thresh, score_thresh)


def topk_dynamic(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """TopK of a 1-D tensor with ``min(k, len(x))`` that stays dynamic in a trace (Python ``min`` would freeze
    it); values in descending order."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        n = torch._shape_as_tensor(x)[0]
        kk = torch.minimum(n, torch.tensor(k, dtype=n.dtype))
        return x.topk(kk)  # type: ignore[arg-type]
    return x.topk(min(k, x.shape[0]))

