"""Deployment benchmark script: ``python benchmarks/bench_deploy.py [isseg benchmark options]``.

Same as ``isseg benchmark`` (its options: ``src/isseg/cli/benchmark.py``; the benchmark itself:
``src/isseg/testing/benchmark.py``); writes the Markdown tables to stdout and, with ``--json``, the raw numbers.
Example (this machine, exports kept for the next run):

    python benchmarks/bench_deploy.py --images 8 --workdir /tmp/isseg-bench --json bench.json
"""

from __future__ import annotations

import sys

from isseg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
