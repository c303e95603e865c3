"""The one way isseg writes a file that must never be seen half-written (checkpoints, results, shards, reports).

The content goes to a temporary file in the same folder, is flushed and fsync'ed, and the file is moved over
the target with ``os.replace`` (atomic on POSIX and Windows), then the folder entry is fsync'ed: a process
killed at any moment leaves the previous file or the new one, never a truncated one, and no temporary file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | os.PathLike, content: bytes | str | Callable[[IO[bytes]], object]) -> Path:
    """Write ``content`` (bytes, UTF-8 text, or a function writing to a binary file) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes | bytearray | memoryview):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


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
