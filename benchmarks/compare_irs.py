"""End-to-end latency of several OpenVINO IRs of one network, measured in one run, image by image in turn.

    .venv/bin/python benchmarks/compare_irs.py before/security-0002.xml after/security-0002.xml --images 8 --rounds 2
    .venv/bin/python benchmarks/compare_irs.py before/m-int8.xml after/m-int8.xml --precision f32

Each IR runs through ``isseg.Predictor`` (latency mode, decode + pre-processing + inference + post-processing, as
``isseg benchmark`` times them) on the same coco-mini val images; the IRs take turns on every image so that the
load of a shared machine affects them alike. Printed: each IR's median end-to-end ms (and its spread), and the
median over images of its per-image ratio to the first IR (pairs measured seconds apart: the ratio survives a
drifting load that moves the medians).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="IR .xml files; the first is the reference")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1, help="measure the images this many times")
    p.add_argument("--precision", help="Predictor precision (f32, bf16; default: the device's)")
    args = p.parse_args(argv)

    from isseg.deploy.predictor import Predictor
    from isseg.testing.bench_measure import measure_interleaved
    from isseg.testing.datasets import coco_images

    paths = coco_images(args.images) * args.rounds
    runners = [(f"{m.parent.name}/{m.name}", Predictor(m, precision=args.precision)) for m in args.models]
    results, _ = measure_interleaved(runners, paths, warmup=1)
    per_image = [[sum(v) for v in zip(*r.per_image.values())] for r in results]
    print(f"{len(paths)} images ({args.images} x {args.rounds}), precision {args.precision or 'default'}\n")
    print("| IR | end-to-end ms (median) | min - max | x first (median of per-image ratios) |\n|---|---|---|---|")
    for r, times in zip(results, per_image):
        ratios = [a / b for a, b in zip(times, per_image[0])]
        print(f"| {r.name} | {r.e2e_ms:.1f} | {1000 * min(times):.0f} - {1000 * max(times):.0f} "
              f"| {statistics.median(ratios):.3f} ({min(ratios):.3f} - {max(ratios):.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
