"""The isseg checkpoint format, one owner: what a checkpoint holds and the one crash-safe way to write it.

``{"format": "isseg", "version": 1, "config": ModelConfig.to_dict(), "model": state_dict, ...}`` plus whatever
the writer adds (the trainer: optimizer, scaler, iteration, RNG states). The config makes a checkpoint
self-describing: the preset, its classes and its inference size travel with the weights.

A checkpoint is written with :func:`isseg.atomic.atomic_write`: a process killed at any moment leaves either the
previous checkpoint or the new one, never a truncated file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from isseg.atomic import atomic_write

FORMAT = "isseg"
VERSION = 1


def checkpoint_payload(model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """The checkpoint dictionary of ``model`` (a ``MaskRCNN``) with ``extra`` entries."""
    return {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),  # type: ignore[union-attr]
            "model": model.state_dict(), **extra}


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves ``path`` half-written (:func:`isseg.atomic.atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(path: str | Path, model: torch.nn.Module, **extra: Any) -> Path:
    """Write an isseg checkpoint of ``model`` atomically."""
    return atomic_save(checkpoint_payload(model, **extra), path)
