"""Stress of OpenVINO's asynchronous path: create a Predictor, stream images through it, delete it; repeat.

    .venv/bin/python benchmarks/stress_async.py --model /tmp/isseg-bench/security-0002.xml --rounds 8

With one ``ov.Core`` per model (isseg before the shared Core of ``isseg.deploy.runtime_openvino``), the
stress runs this script grew out of aborted the process with "terminate called after throwing an instance
of 'std::system_error' / Resource deadlock avoided" in 6 of 7 runs, within 2-4 rounds, with the seed-size
(768x1024) model; small models did not show it. Exit status 0 and "done" mean every round finished. Mix
``--modes`` and ``--requests`` to vary the executor set-up; a bad image is put into every stream to
exercise the error path too.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="exported IR (.xml), e.g. from `isseg export` at 768x1024")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--images", type=int, default=6, help="coco-mini val images per stream (each used twice)")
    p.add_argument("--modes", nargs="+", default=["latency", "throughput"], choices=("latency", "throughput"))
    p.add_argument("--requests", nargs="+", type=int, default=[3, 2, 1], help="requests in flight, cycled")
    args = p.parse_args(argv)
    faulthandler.enable()  # a native abort still prints where each thread was

    from isseg.deploy.predictor import Predictor
    from isseg.sources.decode import read_image_file
    from isseg.testing.datasets import coco_images

    images = [read_image_file(path) for path in coco_images(args.images)]
    stream = images + [Path("/nonexistent/missing.jpg")] + images[::-1]
    for r in range(args.rounds):
        mode, requests = args.modes[r % len(args.modes)], args.requests[r % len(args.requests)]
        t0 = time.perf_counter()
        predictor = Predictor(args.model, mode=mode, num_requests=requests)
        results = list(predictor.predict_stream(stream, errors="return"))
        errors = sum(isinstance(x, Exception) for x in results)
        del predictor
        gc.collect()
        print(f"round {r}: {mode}, {requests} requests, {len(results)} results ({errors} error), "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        if len(results) != len(stream) or errors != 1:
            print("unexpected results", flush=True)
            return 1
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
