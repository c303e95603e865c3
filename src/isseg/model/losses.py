"""Box regression losses shared by the RPN and the box head."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def box_regression_loss(pred: Tensor, target: Tensor, kind: str, beta: float) -> Tensor:
    """Sum over elements of smooth-L1 (``beta`` > 0) or L1; the caller normalizes."""
    if kind == "l1" or beta == 0:
        return F.l1_loss(pred, target, reduction="sum")
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
