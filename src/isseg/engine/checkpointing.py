"""Validation and checkpoints of a training run.

``last.pth`` holds the model, optimizer, gradient scaler, schedule, iteration, best metric and every rank's RNG
state (through :func:`isseg.weights.checkpoint.checkpoint_payload`, the one checkpoint format), so a resume
continues bit for bit; ``best.pth`` is a lean model-only checkpoint of the best validation mask AP, with the
best-F1 confidence threshold of that validation (:mod:`isseg.engine.threshold`); ``last.pth`` carries the
threshold too when its weights were the ones just validated. Both store the tiling of a run trained on tiles
(``tiling``: export and predict tile with it), and such a run validates tiled. Rank 0 validates and writes; the
other ranks wait at barriers, so every rank sees the same files and metric.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from isseg.engine import distributed as dist_utils
from isseg.engine.rng_state import get_rng_state, seed_everything, set_rng_state
from isseg.engine.schedule import LRSchedule
from isseg.engine.train_config import TrainConfig
from isseg.weights.checkpoint import atomic_save, checkpoint_payload


def read_resume_state(resume: str | bool, out: Path, main: bool) -> dict[str, Any] | None:
    """The checkpoint ``TrainConfig.resume`` asks for (True / "auto": ``<out>/last.pth`` if present; a path:
    that file), with its path under ``"_path"``; None for a new run. A new run refuses an existing
    ``last.pth``, and an unreadable or foreign file is one ValueError naming it."""
    last = out / "last.pth"
    if resume is True or resume == "auto":
        if not last.is_file():
            if main:
                print(f"isseg train: no {last} to resume from; starting a new run")
            return None
        path = last
    elif resume:
        path = Path(str(resume))
        if not path.is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
    else:
        if last.is_file():
            raise ValueError(f"{last} exists: pass --resume to continue that run, or another --output")
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated / foreign file: pickle and zip errors of many kinds
        raise ValueError(f"--resume {path}: cannot read the checkpoint: {exc}") from None
    for key in ("model", "optimizer", "iteration", "config"):
        if not isinstance(state, dict) or key not in state:
            raise ValueError(f"--resume {path}: not an isseg training checkpoint (no '{key}' entry)")
    state["_path"] = str(path)
    return state


class Checkpointer:
    """Writes and restores the checkpoints of the run in ``out`` for this rank of ``world`` processes."""

    def __init__(self, cfg: TrainConfig, out: Path, rank: int, world: int, iters_per_epoch: int) -> None:
        self.cfg = cfg
        self.out = out
        self.rank = rank
        self.world = world
        self.main = rank == 0
        self.iters_per_epoch = iters_per_epoch

    def restore(self, state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None) -> tuple[int, float | None]:
        """Load ``state`` (from :func:`read_resume_state`) into the model, optimizer and scaler and set this
        rank's RNG state; returns the iteration and best metric to continue from."""
        path = state["_path"]
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"--resume {path}: does not match this model / optimizer: {exc}") from None
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        iteration = int(state["iteration"])
        saved = state.get("train", {})
        same_batch = saved.get("global_batch") == self.cfg.batch_size * self.world
        if not same_batch or saved.get("seed") != self.cfg.seed:
            warnings.warn(
                f"--resume {path}: global batch / seed differ from the checkpoint's "
                f"({saved.get('global_batch')}, {saved.get('seed')}); the batch order will not continue the "
                "original run's", stacklevel=2,
            )  # fmt: skip
        rng = state.get("rng") or []
        if len(rng) == self.world:
            set_rng_state(rng[self.rank])
        else:
            seed_everything(self.cfg.seed + self.rank + 7919 * iteration)
        if self.main:
            print(f"isseg train: resumed from {path} at iteration {iteration}")
        return iteration, state.get("best_metric")

    def save(self, names: Sequence[str], model: nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler | None, schedule: LRSchedule, iteration: int,
             best_metric: float | None, confidence_threshold: float | None = None) -> None:
        """Write the same full state under each of ``names``; every rank must call it (the RNG states are
        gathered), rank 0 writes, everyone waits for it. ``confidence_threshold``: the best-F1 threshold of
        these very weights on the validation set, when they were just evaluated."""
        rng = dist_utils.all_gather_object(get_rng_state())  # collective: every rank takes part
        state = checkpoint_payload(
            model,
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            schedule=dataclasses.asdict(schedule),
            iteration=iteration,
            epoch=iteration // self.iters_per_epoch,
            best_metric=best_metric,
            confidence_threshold=confidence_threshold,
            tiling=self.tiling_entry(),
            rng=rng,
            train={
                "global_batch": self.cfg.batch_size * self.world, "world_size": self.world,
                "seed": self.cfg.seed, "iters_per_epoch": self.iters_per_epoch,
                "config": dataclasses.asdict(self.cfg),
            },
        )  # fmt: skip
        dist_utils.barrier()
        if self.main:
            for name in names:
                atomic_save(state, self.out / name)
        dist_utils.barrier()

    def save_best(self, model: nn.Module, iteration: int, best_metric: float | None,
                  confidence_threshold: float | None = None) -> None:
        """``best.pth``: a lean checkpoint for deployment, the model and its config, no optimizer, and the
        best-F1 confidence threshold of its validation (``isseg export`` deploys it; rank 0)."""
        atomic_save(checkpoint_payload(model, iteration=iteration, best_metric=best_metric,
                                       confidence_threshold=confidence_threshold, tiling=self.tiling_entry()),
                    self.out / "best.pth")

    def tiling_entry(self) -> str | None:
        """The checkpoint's ``tiling`` entry: the tiled inference of a run trained on tiles (``TilingOptions``
        JSON, read back by :func:`isseg.weights.checkpoint.checkpoint_tiling`), else None."""
        tiling = self.cfg.tiling()
        return None if tiling is None else tiling.to_json()


def validate(model: nn.Module, cfg: TrainConfig, main: bool, train_mode: Callable[[], None]) -> dict[str, Any] | None:
    """Rank 0 evaluates ``model`` on the validation set (tiled, as deployed, when trained on tiles) while the
    others wait; returns the metrics on rank 0
    (``isseg.engine.evaluate.evaluate``'s result), None elsewhere or without a validation set.
    ``train_mode`` puts the model back into training mode afterwards."""
    if cfg.val_data is None:
        return None
    result = None
    if main:
        from isseg.engine.evaluate import evaluate

        model.eval()
        predictor: Any = model
        if cfg.tile is not None:  # validate as the model will be deployed: tiled
            from isseg.deploy.predictor import Predictor

            predictor = Predictor(model, backend="torch", threshold=0.0, tiling=cfg.tiling(),
                                  device=str(next(model.parameters()).device))
        try:
            with torch.no_grad():
                result = evaluate(predictor, cfg.val_data, str(cfg.val_images), progress=cfg.progress)
        finally:
            if predictor is not model:
                predictor.close()
            train_mode()
    dist_utils.barrier()
    return result


def f1_threshold(result: dict[str, Any] | None) -> float | None:
    """The best-F1 confidence threshold of ``evaluate``'s result (None without one)."""
    value = ((result or {}).get("confidence_threshold") or {}).get("threshold")
    return float(value) if isinstance(value, (int, float)) else None


def mask_ap(result: dict[str, Any]) -> float | None:
    """Validation mask AP (COCO AP@[.5:.95]) from ``evaluate``'s result, None when it has none."""
    segm = result.get("segm") or {}
    value = segm.get("AP")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
