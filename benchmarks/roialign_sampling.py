"""What one RoIAlign costs on OpenVINO's CPU plugin, by samples per bin (issue 23: is RoIAlign's time the graph
around it or the kernel's own work?).

    .venv/bin/python benchmarks/roialign_sampling.py [--rois 800] [--runs 8] [--threads 2]

Builds a P2-sized pool of the seed at 768x1024: a 1x1 convolution (so that the features arrive in the network's
precision and layout, as P2 does), one ``ROIAlign`` (aligned, ``half_pixel``, spatial scale 1/4) of seeded random
RoIs of 8-112 px (the sizes mmdetection's level formula sends to P2), and a fully connected layer behind it (as
fc6 is; a RoIAlign that is itself the model's output runs another path). For each sampling ratio (0 = adaptive,
the preset's; 1, 2, 4 per bin axis) it times the ``ROIAlign`` layer with the plugin's counters (median of
``--runs``) and prints the kernel it ran, and the GFLOP/s of its bilinear samples (4 multiply-adds per sample
and channel).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import numpy as np

C, H, W, S, STRIDE = 256, 192, 256, 7, 4


def rois(count: int, seed: int = 0) -> np.ndarray:
    """[count, 4] x1, y1, x2, y2 in image pixels: sides of 8-112 px inside a 1024x768 image."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(8, 112, (count, 2))
    corner = rng.uniform(0, [W * STRIDE - 112, H * STRIDE - 112], (count, 2))
    return np.concatenate([corner, corner + size], 1).astype(np.float32)


def samples(boxes: np.ndarray, ratio: int) -> int:
    """Bilinear samples of all bins: ``ratio`` per axis, or ceil(side / 7) per axis when adaptive (0)."""
    if ratio:
        return len(boxes) * S * S * ratio * ratio
    side = (boxes[:, 2:] - boxes[:, :2]) / STRIDE
    return int(sum(S * S * math.ceil(w / S) * math.ceil(h / S) for w, h in side))


def build(count: int, ratio: int) -> object:
    """The pool as an OpenVINO model: features [1, C, H, W] and RoIs [count, 4] in, fc [count, 64] out."""
    import openvino as ov
    import openvino.opset13 as op
    from openvino import opset9

    rng = np.random.default_rng(1)
    x = op.parameter([1, C, H, W], np.float32, name="features")
    conv = op.convolution(x, op.constant(rng.standard_normal((C, C, 1, 1)).astype(np.float32) * 0.05),
                          [1, 1], [0, 0], [0, 0], [1, 1])
    r = op.parameter([count, 4], np.float32, name="rois")
    pooled = opset9.roi_align(conv, r, op.constant(np.zeros(count, np.int32)), S, S, ratio, 1.0 / STRIDE, "avg",
                              "half_pixel")
    flat = op.reshape(pooled, op.constant(np.array([count, C * S * S], np.int64)), False)
    fc = op.matmul(flat, op.constant(rng.standard_normal((64, C * S * S)).astype(np.float32) * 0.01), False, True)
    return ov.Model([fc], [x, r])


def time_pool(count: int, ratio: int, runs: int, threads: int | None) -> tuple[float, str]:
    """(median ms of the ``ROIAlign`` layer, the kernel the plugin ran)."""
    from isseg.deploy.ov_core import shared_core

    config = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = shared_core().compile_model(build(count, ratio), "CPU", config).create_infer_request()
    feats = np.random.default_rng(2).standard_normal((1, C, H, W)).astype(np.float32)
    boxes = rois(count)
    request.infer({0: feats, 1: boxes})  # warm-up
    times, kernel = [], ""
    for _ in range(runs):
        request.infer({0: feats, 1: boxes})
        for info in request.profiling_info:
            if info.node_type == "ROIAlign":
                times.append(info.real_time.total_seconds() * 1000.0)
                kernel = info.exec_type
    return statistics.median(times), kernel


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rois", type=int, default=800)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: the plugin's)")
    args = p.parse_args(argv)
    boxes = rois(args.rois)
    print(f"RoIAlign of {args.rois} RoIs on a {C}x{H}x{W} map, medians of {args.runs} runs\n")
    print("| sampling ratio | samples | ms | GFLOP/s | kernel |\n|---|---|---|---|---|")
    for ratio in (0, 1, 2, 4):
        ms, kernel = time_pool(args.rois, ratio, args.runs, args.threads)
        n = samples(boxes, ratio)
        print(f"| {ratio or 'adaptive'} | {n} | {ms:.2f} | {8 * n * C / ms / 1e6:.1f} | {kernel} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
