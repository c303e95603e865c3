"""Training-time assignment of anchors / proposals to ground truth, and balanced sampling."""

from __future__ import annotations

import torch
from torch import Tensor

BACKGROUND = -1  # matched index of a negative
IGNORE = -2  # matched index of an element that is neither (between the thresholds)


def match(iou: Tensor, fg_thresh: float, bg_thresh: float, low_quality_min_iou: float | None) -> Tensor:
    """Best ground truth per prediction from ``iou`` [G, P].

    Returns int64 [P]: the matched ground-truth index, ``BACKGROUND`` (iou < bg_thresh) or ``IGNORE``.
    Unless ``low_quality_min_iou`` is None, every ground truth also keeps the predictions that overlap it
    most, even below ``fg_thresh``, when that best IoU is >= ``low_quality_min_iou`` (and > 0), so that
    small objects get an anchor (torchvision/detectron2: 0; mmdetection: 0.3 for the RPN, 0.5 for RoIs).
    """
    if iou.numel() == 0:
        return torch.full((iou.shape[1],), BACKGROUND, dtype=torch.int64, device=iou.device)
    best_iou, matches = iou.max(dim=0)
    all_matches = matches.clone()
    matches[best_iou < fg_thresh] = IGNORE
    matches[best_iou < bg_thresh] = BACKGROUND
    if low_quality_min_iou is not None:
        best_per_gt = iou.max(dim=1, keepdim=True).values
        good = (best_per_gt > 0) & (best_per_gt >= low_quality_min_iou)
        _, pred_idx = torch.nonzero((iou == best_per_gt) & good, as_tuple=True)
        matches[pred_idx] = all_matches[pred_idx]
    return matches


def sample_balanced(labels: Tensor, batch_size: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """Random positive / negative indices from ``labels`` [P] (1 fg, 0 bg, -1 ignore).

    At most ``batch_size * positive_fraction`` positives; negatives fill the rest of ``batch_size``.
    """
    positive = torch.nonzero(labels >= 1).squeeze(1)
    negative = torch.nonzero(labels == 0).squeeze(1)
    num_pos = min(positive.numel(), int(batch_size * positive_fraction))
    num_neg = min(negative.numel(), batch_size - num_pos)
    pos = positive[torch.randperm(positive.numel(), device=labels.device)[:num_pos]]
    neg = negative[torch.randperm(negative.numel(), device=labels.device)[:num_neg]]
    return pos, neg
