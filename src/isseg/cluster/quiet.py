"""Ray's messages that mean nothing to an isseg user, kept out of the output of ``--ray`` runs.

A successful run used to end with lines such as ``[... E ...] core_worker.cc: Actor with class name:
'MapWorker(MapBatches(PredictActor))' ... has constructor arguments in the object store and max_restarts > 0``
(an error-level line of Ray's C++ core about Ray Data's own arguments, which Ray Data holds for the whole run)
``Progress bars disabled. To enable, set ...`` (isseg draws its own) and ``Token authentication is enabled for
this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out`` (the secure default of the local Ray a run starts; the
warning of a cluster *without* authentication is kept). Ray writes the first from C++ straight
to the process's standard error, out of reach of Python's logging, so :func:`quiet_ray` puts a filter on file
descriptor 2 itself: a small separate process that copies everything to the real standard error, as it comes,
except the complete lines that match :data:`NOISE`. Being a separate process, it still copies what a crashing
isseg wrote last, and anything else (Ray's real errors and warnings, isseg's own lines, Python tracebacks)
passes unchanged. ``ISSEG_RAY_NOISE=1`` turns the filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator

NOISE = (
    r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store and "
    r"max_restarts > 0",
    r"Progress bars disabled\. To enable, set `ray\.data\.DataContext",
    r"Token authentication is enabled for this Ray cluster\. Set RAY_AUTH_MODE=disabled to opt out",
)

# the filter process: chunks from stdin to stdout as they come (partial lines too, e.g. a progress bar's \r),
# minus the complete lines that match a pattern of argv
_FILTER = r"""
import os, re, sys
noise = re.compile("|".join(sys.argv[1:]))
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    kept = [line for line in chunk.splitlines(keepends=True)
            if not (line.endswith(b"\n") and noise.search(line.decode("utf-8", "replace")))]
    data = b"".join(kept)
    while data:
        data = data[os.write(1, data):]
"""


_LINGERING: list[subprocess.Popen] = []


def is_noise(line: str) -> bool:
    """Whether ``line`` is one of the messages :func:`quiet_ray` drops."""
    return any(re.search(pattern, line) for pattern in NOISE)


@contextlib.contextmanager
def quiet_ray() -> Iterator[None]:
    """Within the block, standard error (file descriptor 2, so C++ output too) goes through the filter."""
    if os.environ.get("ISSEG_RAY_NOISE") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 to filter
        yield
        return
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, *NOISE], stdin=read_end, stdout=real,
                                stderr=real, close_fds=True)
    except OSError:
        os.close(read_end)
        os.close(write_end)
        os.close(real)
        yield
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer here is closed: the filter ends once processes Ray started
        os.close(real)  # (and which inherited it) have exited too
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            _LINGERING.append(proc)  # it ends by itself at the pipe's end of file
