"""How fast can this CPU run the network at all? A measured compute ceiling for the benchmark's ratios.

Mask R-CNN at 768x1024 is ~420 GFLOPs, almost all of it in convolutions and fully connected layers, so its
latency is bounded by the rate at which the CPU multiplies and adds. That rate differs by an order of
magnitude between CPUs of the same core count (AMX tiles on recent Xeons, AVX512-BF16/VNNI dot products
elsewhere, plain FMA on older ones), and so does every "N x faster than eager PyTorch" claim.

``probe_rate`` measures it: OpenVINO runs one 3x3 convolution of the network's dominant shape (256 -> 256
channels, as in the FPN output and RPN convolutions and the mask head) on the same device, precision and
threads as the benchmarked model, and the best of a few runs gives GFLOP/s. ``network GFLOPs / rate`` is
then the latency no implementation of the same network can beat on this machine with that precision; the
benchmark reports it next to the measured latency.

INT8 is probed the way NNCF quantizes: ``FakeQuantize`` on the activations (unsigned, 256 levels) and
weights (signed, 255 levels) in front of a float convolution, which OpenVINO's CPU plugin turns into an
integer convolution (``probe_exec_type`` says which kernel ran).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: OpenVINO ``INFERENCE_PRECISION_HINT`` of each probed precision (int8 = integer convolution, rest f32)
PROBE_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def _probe_model(channels: int, height: int, width: int, int8: bool) -> Any:
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([1, channels, height, width], ov.Type.f32, name="x")
    w = ops.constant(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.05)
    src: Any = x
    if int8:
        def fq(node: Any, low: float, high: float, levels: int) -> Any:
            lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
            return ops.fake_quantize(node, lo, hi, lo, hi, levels)

        src = fq(x, 0.0, 4.0, 256)
        w = fq(w, -0.2, 0.2, 255)
    y = ops.convolution(src, w, [1, 1], [1, 1], [1, 1], [1, 1])
    return ov.Model([ops.relu(y)], [x], "ceiling_probe")


def probe_rate(precision: str = "bf16", threads: int | None = None, device: str = "CPU", channels: int = 256,
               size: tuple[int, int] = (96, 128), repeats: int = 10) -> float:
    """Best GFLOP/s (multiply and add counted as 2) of one 3x3 ``channels`` -> ``channels`` convolution on a
    ``size`` feature map, with OpenVINO on ``device`` at ``precision`` ("fp32", "bf16" or "int8")."""
    from isseg.deploy.runtime_openvino import shared_core

    if precision not in PROBE_PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PROBE_PRECISIONS)}, got {precision!r}")
    h, w = size
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PROBE_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    config["PERF_COUNT"] = True  # time the convolution kernel itself, not the layout conversions around it
    compiled = shared_core().compile_model(_probe_model(channels, h, w, precision == "int8"), device, config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).uniform(0, 4, (1, channels, h, w)).astype(np.float32)
    request.infer({0: x})  # first run: kernel selection, memory
    best = float("inf")
    for _ in range(repeats):
        request.infer({0: x})
        conv = sum(p.real_time.total_seconds() for p in request.profiling_info if p.node_type == "Convolution")
        best = min(best, conv)
    if not 0 < best < float("inf"):
        raise RuntimeError(f"the ceiling probe found no timed Convolution in OpenVINO's profile on {device}")
    flops = 2.0 * channels * channels * 9 * h * w
    return flops / best / 1e9


def probe_exec_type(precision: str, device: str = "CPU") -> str:
    """The kernel OpenVINO picks for the probe's convolution at ``precision`` (e.g. ``brgconv_avx512_I8``)."""
    from isseg.deploy.runtime_openvino import shared_core

    compiled = shared_core().compile_model(_probe_model(32, 16, 16, precision == "int8"), device,
                                       {"INFERENCE_PRECISION_HINT": PROBE_PRECISIONS[precision], "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer({0: np.ones((1, 32, 16, 16), np.float32)})
    return next(p.exec_type for p in request.profiling_info if p.node_type == "Convolution")
