"""Learning-rate schedule: linear warm-up times a step or cosine decay, as a pure function of the iteration.

The schedule is stateless (the learning rate is recomputed from the iteration number every step), so a
resumed run needs nothing but the iteration counter to continue on exactly the same curve.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class LRSchedule:
    """``lr(it) = base_lr * warmup(it) * decay(it)`` for ``it`` in ``[0, max_iter)``.

    warmup: linear from ``warmup_factor`` to 1 over ``warmup_iters`` iterations (detectron2 style:
    multiplies the decay, so a step inside the warm-up still applies).
    step: multiply by ``gamma`` at each iteration in ``steps`` (sorted, in iterations).
    cosine: half a cosine from 1 down to ``min_lr_factor`` at ``max_iter``.
    """

    base_lr: float
    max_iter: int
    kind: Literal["step", "cosine", "constant"] = "step"
    steps: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    min_lr_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.base_lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.base_lr}")
        if self.max_iter < 1:
            raise ValueError(f"the number of iterations must be >= 1, got {self.max_iter}")
        if self.kind not in ("step", "cosine", "constant"):
            raise ValueError(f"schedule must be step, cosine or constant, got {self.kind!r}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup iterations must be >= 0, got {self.warmup_iters}")
        if list(self.steps) != sorted(self.steps) or any(s < 0 for s in self.steps):
            raise ValueError(f"steps must be increasing non-negative iterations, got {list(self.steps)}")

    def factor(self, iteration: int) -> float:
        """Multiplier of ``base_lr`` at ``iteration`` (0-based: the iteration about to be run)."""
        if self.kind == "step":
            decay = self.gamma ** bisect.bisect_right(self.steps, iteration)
        elif self.kind == "cosine":
            t = min(iteration, self.max_iter) / self.max_iter
            decay = self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
        else:
            decay = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            decay *= self.warmup_factor * (1.0 - alpha) + alpha
        return decay

    def lr(self, iteration: int) -> float:
        return self.base_lr * self.factor(iteration)

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set every parameter group's lr for ``iteration`` (groups may scale it with ``lr_scale``)."""
        lr = self.lr(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr


def resolve_steps(steps: Sequence[float], max_iter: int) -> tuple[int, ...]:
    """Decay points as iterations: values in (0, 1) are fractions of ``max_iter``, values >= 1 iterations.

    Fractions let one command line serve any dataset size (the default 0.67 / 0.89 are mmdetection's
    "1x" epochs 8 and 11 of 12).
    """
    out = []
    for s in steps:
        if s <= 0:
            raise ValueError(f"--steps values must be > 0 (fraction < 1 or iteration >= 1), got {s}")
        out.append(int(round(s * max_iter)) if s < 1 else int(s))
    return tuple(sorted(out))
