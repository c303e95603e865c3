"""Checks every command runs before its expensive part: a run must not compute for minutes and then fail on
an output folder it cannot write, or on an option that was out of range from the start.

Each check raises ``ValueError`` with one line naming the option and what was expected; ``isseg.cli.main``
prints it as ``isseg <command>: error: ...``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path


def output_dir(path: str | os.PathLike, option: str = "--output", create: bool = True) -> Path:
    """Prove ``path`` a writable folder, or one that can be made (a probe file is created and removed). With
    ``create`` the folder is made now; without, nothing is left behind (the command makes it when it writes, so
    a run that fails early leaves no empty folder)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {folder}: is a file, expected a folder (or a path where one can be made)")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {folder}: a file is in the way of this folder path ({existing})")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{option} {folder}: cannot create the folder ({exc.strerror or exc})") from None
        existing = folder
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".isseg-write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{option} {folder}: the folder is not writable ({exc.strerror or exc})") from None
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {folder}: the folder is not writable (permissions)")
    return folder


def output_file(path: str | os.PathLike, option: str = "output") -> Path:
    """``path`` is a file that can be (over)written: not a folder, its folder writable."""
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"{option} {file}: is a folder, expected a file name")
    output_dir(file.parent if str(file.parent) else ".", f"{option} {file}: folder")
    if file.exists() and not os.access(file, os.W_OK):
        raise ValueError(f"{option} {file}: the file exists and is not writable")
    return file


def in_range(value: float | None, option: str, low: float, high: float) -> None:
    """``low <= value <= high`` (and finite); None passes."""
    if value is None:
        return
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{option}: expected a number in [{low:g}, {high:g}], got {value}")


def at_least(value: int | float | None, option: str, low: float) -> None:
    """``value >= low``; None passes."""
    if value is not None and not value >= low:
        raise ValueError(f"{option}: expected a value >= {low:g}, got {value}")


def device_for(backend: str, device: str | None) -> str | None:
    """The spelling each runtime wants, from any case: OpenVINO "CPU" / "GPU.1" / "AUTO", PyTorch and ONNX
    Runtime "cpu" / "cuda:0"."""
    if device is None:
        return None
    device = device.strip()
    if not device:
        raise ValueError("--device: empty device name")
    return device.upper() if backend == "openvino" else device.lower()


def backend_of(model: str | None, backend: str | None) -> str:
    """The backend a command will run: ``--backend``, else the model file's type."""
    if backend:
        return backend
    suffix = Path(str(model or "")).suffix.lower()
    return {".xml": "openvino", ".onnx": "onnx"}.get(suffix, "torch")
