"""Run the test suite as a few pytest processes instead of one: ``python tests/run_in_groups.py [pytest args]``.

Why: in one process, the whole suite (579 tests) died of a segmentation fault at test 321-343 (CI, and four
runs here), always after the in-process Ray tests and never in a part of the suite run alone. Ray's native
library stays in the process after ``ray.shutdown()``: its signal handlers (SIGTRAP, SIGBUS) and alternate
signal stack, its gRPC threads and an OpenTelemetry reader thread. The fault came by the kernel (``SI_KERNEL``)
to the main thread while it waited for a child process, so no Python traceback was written; its cause was not
found. So the modules that start Ray in-process run in a process of their own, and the rest in ``GROUPS``
processes of consecutive files. Each group prints its own summary; the exit status is the first non-zero one
(5, "no tests collected" in a group that a ``-k`` filtered out, counts as success).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPS = 3  # processes for the modules without in-process Ray
HERE = Path(__file__).resolve().parent


def groups(files: list[Path]) -> list[list[Path]]:
    """The modules that call ``ray.init`` first (one group), then the others in ``GROUPS`` runs of files."""
    ray = [f for f in files if "ray.init(" in f.read_text(encoding="utf-8")]
    rest = [f for f in files if f not in ray]
    size = -(-len(rest) // GROUPS)
    return [g for g in [ray] + [rest[i : i + size] for i in range(0, len(rest), size)] if g]


def main(args: list[str]) -> int:
    status = 0
    for k, group in enumerate(groups(sorted(HERE.glob("test_*.py"))), 1):
        print(f"--- group {k}: {group[0].name} .. {group[-1].name} ({len(group)} files)", flush=True)
        code = subprocess.run([sys.executable, "-m", "pytest", *args, *map(str, group)], cwd=HERE.parent).returncode
        if code not in (0, 5) and status == 0:
            status = code
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
