"""The isseg checkpoint format, one owner: what a checkpoint holds and the one crash-safe way to write it.

``{"format": "isseg", "version": 1, "config": ModelConfig.to_dict(), "model": state_dict, ...}`` plus whatever
the writer adds (the trainer: optimizer, scaler, iteration, RNG states). The config makes a checkpoint
self-describing: the preset, its classes and its inference size travel with the weights.

A file is first written to a temporary file in the same directory, flushed and fsync'ed, and then moved over
the old one with ``os.replace`` (atomic on POSIX and Windows): a process killed at any moment leaves either
the previous checkpoint or the new one, never a truncated file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "isseg"
VERSION = 1


def checkpoint_payload(model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """The checkpoint dictionary of ``model`` (a ``MaskRCNN``) with ``extra`` entries."""
    return {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),  # type: ignore[union-attr]
            "model": model.state_dict(), **extra}


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves ``path`` half-written (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(path: str | Path, model: torch.nn.Module, **extra: Any) -> Path:
    """Write an isseg checkpoint of ``model`` atomically."""
    return atomic_save(checkpoint_payload(model, **extra), path)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (the directory entry); not possible on Windows, where it is skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
