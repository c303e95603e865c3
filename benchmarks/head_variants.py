"""The second stage's two slowest layers against their rate, each written the ways the graph could write it.

    .venv/bin/python benchmarks/head_variants.py [--rois 1000] [--masks 100] [--runs 8] [--precision bf16]

On an Intel Xeon with AMX the box head's fc6 ([R, 12544] x [12544, 1024], ~26 GFLOPs at 1000 RoIs) ran at
~420 GFLOP/s in bf16 where the network's 3x3 convolutions reach 1.3-1.9 TFLOP/s, and the mask head's 2x2
stride-2 deconvolution at about half the convolutions' rate (docs/deploy.md). This script builds each layer
alone, with the dynamic RoI count of the exported graph, in the forms an export could emit:

- fc6: OpenVINO's FullyConnected (what ``nn.Linear`` becomes); the same with K split in 4 (four partial products
  added: each weight block a quarter of the size); the RoIs as the spatial axis of a 1x1 convolution;
- the mask deconvolution + ReLU: ``ConvolutionBackpropData``; a 1x1 convolution to 4C channels + ReLU +
  ``DepthToSpace`` (the same function: each output pixel of a stride-2 2x2 deconvolution reads one input pixel).

Each variant is checked against the first (max abs difference; the precision's rounding is expected) and
timed with the plugin's per-node counters, variants interleaved run by run; medians of the nodes' sum.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np


def _fc_variants(ops: Any, rng: np.random.Generator) -> dict[str, Any]:
    w = (rng.standard_normal((1024, 12544)) * 0.01).astype(np.float32)

    def flat(x: Any) -> Any:
        return ops.reshape(x, ops.constant(np.array([0, 12544], np.int64)), True)

    def fc(x: Any) -> Any:
        return ops.matmul(flat(x), ops.constant(w), False, True)

    def ksplit(x: Any) -> Any:
        parts = ops.split(flat(x), ops.constant(np.int64(1)), 4).outputs()
        k = 12544 // 4
        y = ops.matmul(parts[0], ops.constant(w[:, :k]), False, True)
        for i in range(1, 4):
            y = ops.add(y, ops.matmul(parts[i], ops.constant(w[:, i * k:(i + 1) * k]), False, True))
        return y

    def spatial(x: Any) -> Any:
        f = ops.transpose(ops.reshape(x, ops.constant(np.array([1, -1, 12544], np.int64)), False),
                          ops.constant(np.array([0, 2, 1], np.int64)))
        y = ops.convolution(ops.unsqueeze(f, ops.constant(np.array([3], np.int64))),
                            ops.constant(w.reshape(1024, 12544, 1, 1)), [1, 1], [0, 0], [0, 0], [1, 1])
        return ops.transpose(ops.squeeze(y, ops.constant(np.array([0, 3], np.int64))),
                             ops.constant(np.array([1, 0], np.int64)))

    return {"fc6 FullyConnected": fc, "fc6 K split in 4": ksplit, "fc6 RoIs as 1x1-conv pixels": spatial}


def _deconv_variants(ops: Any, rng: np.random.Generator) -> dict[str, Any]:
    w = (rng.standard_normal((256, 256, 2, 2)) * 0.05).astype(np.float32)  # [C_in, C_out, 2, 2]
    b = rng.standard_normal(256).astype(np.float32)

    def deconv(x: Any) -> Any:
        y = ops.convolution_backprop_data(x, ops.constant(w), [2, 2], pads_begin=[0, 0], pads_end=[0, 0],
                                          dilations=[1, 1])
        return ops.relu(ops.add(y, ops.constant(b.reshape(1, -1, 1, 1))))

    def conv_d2s(x: Any) -> Any:
        w2 = w.transpose(1, 2, 3, 0).reshape(1024, 256, 1, 1)  # output channel c*4 + 2i + j
        y = ops.convolution(x, ops.constant(w2), [1, 1], [0, 0], [0, 0], [1, 1])
        y = ops.relu(ops.add(y, ops.constant(np.repeat(b, 4).reshape(1, -1, 1, 1))))
        return ops.depth_to_space(y, "depth_first", 2)

    return {"deconv ConvolutionBackpropData": deconv, "deconv 1x1 conv + DepthToSpace": conv_d2s}


def run(variants: dict[str, Any], shape: tuple[int, ...], precision: str, runs: int) -> list[str]:
    import openvino as ov
    import openvino.opset13 as ops

    core = ov.Core()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    requests = {}
    for name, build in variants.items():
        p = ops.parameter([-1, *shape[1:]], ov.Type.f32, name="x")
        model = ov.Model([build(ops.relu(p, name="input_relu"))], [p])  # makes the input the network's precision
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                     "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True})
        requests[name] = compiled.create_infer_request()
    times: dict[str, list[float]] = {n: [] for n in requests}
    outputs: dict[str, np.ndarray] = {}
    for r in range(runs + 1):
        for name, request in requests.items():
            request.infer({0: x})
            outputs[name] = request.get_output_tensor(0).data.copy()
            layers = [p for p in request.profiling_info
                      if p.node_type not in ("Parameter", "Result") and p.node_name != "input_relu"]
            if r:  # the first run selects kernels and allocates
                times[name].append(sum(p.real_time.total_seconds() for p in layers) * 1e3)
    first = next(iter(outputs.values()))
    return [f"| {n} | {statistics.median(t):.1f} | {np.abs(outputs[n] - first).max():.3g} |" for n, t in times.items()]


def main(argv: list[str] | None = None) -> int:
    import openvino.opset13 as ops

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rois", type=int, default=1000, help="RoIs through fc6 (default: %(default)s)")
    p.add_argument("--masks", type=int, default=100, help="detections through the deconvolution")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--precision", default="bf16", help="INFERENCE_PRECISION_HINT (default: %(default)s)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| variant | ms (median of the layers' times) | max abs difference to the first |\n|---|---|---|")
    for line in run(_fc_variants(ops, rng), (args.rois, 256, 7, 7), args.precision, args.runs):
        print(line)
    for line in run(_deconv_variants(ops, rng), (args.masks, 256, 14, 14), args.precision, args.runs):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
