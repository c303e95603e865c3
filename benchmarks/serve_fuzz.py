"""The longer fuzz run of ``isseg serve``: ``tests/test_serve_fuzz.py`` with many more examples.

    .venv/bin/python benchmarks/serve_fuzz.py --examples 300        # ~20x the CI run's examples

The CI run generates 10 requests per API operation from the server's OpenAPI schema (schemathesis: examples,
coverage and fuzzing phases, valid and invalid requests) and 60 random binary-tensor requests; this one runs the
same tests with ``--examples`` per operation (and 6x that of binary requests), against the same real server
(HTTPS on 127.0.0.1, API keys), bounded by the number of examples and by ``--timeout`` seconds. The checks are
the CI run's: no 5xx, every answer as the schema declares it, 401 without the key, the server healthy at the end.
Prints the pytest summary and the wall time; the exit code is pytest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=300, help="examples per API operation (CI: 10)")
    p.add_argument("--timeout", type=float, default=3600, help="stop the run after this many seconds")
    p.add_argument("pytest_args", nargs="*", help="more pytest arguments, e.g. -k framing")
    args = p.parse_args(argv)
    env = {**os.environ, "ISSEG_FUZZ_EXAMPLES": str(args.examples),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_serve_fuzz.py"), "-q", "-p", "no:cacheprovider",
           *args.pytest_args]
    try:
        rc = subprocess.run(cmd, cwd=REPO, env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"serve_fuzz: stopped after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    print(f"serve_fuzz: {args.examples} examples per operation, {time.perf_counter() - t0:.0f} s, pytest exit {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
