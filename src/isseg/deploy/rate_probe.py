"""The rate at which OpenVINO runs the network's dominant convolution on this machine, at a precision.

One 3x3 256 -> 256 convolution on the 192x256 P2 map of a 768x1024 input (the FPN output and RPN
convolutions there, the network's two largest layers), compiled as isseg compiles its models (latency hint,
the given threads), timed by the plugin's own counters: the kernel, not the layout conversions around it.
Noise only ever slows a run down, so the best of several runs is the machine's rate.

Two users: the benchmark's compute bound (:mod:`isseg.testing.ceiling`: network GFLOPs / rate), and the
choice of the default inference precision (:func:`faster_precision`), because
OpenVINO's own default is not the fastest everywhere: on an Intel Xeon without AMX (AVX512-BF16 and FP16
only) its bf16 convolutions ran at 158 GFLOP/s against 257-296 in f32 (docs/deploy.md).

INT8 is probed the way NNCF quantizes: ``FakeQuantize`` on the activations (unsigned, 256 levels) and
weights (signed, 255 levels) in front of a float convolution, which OpenVINO's CPU plugin turns into an
integer convolution (``probe_exec_type`` says which kernel ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: OpenVINO ``INFERENCE_PRECISION_HINT`` of each probed precision (int8 = integer convolution, rest f32)
PROBE_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


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


def probe_request(precision: str, threads: int | None, device: str, channels: int, size: tuple[int, int]
                  ) -> tuple[Any, np.ndarray]:
    """(infer request, input) of the probe compiled as isseg's models are (latency hint, ``threads``), run
    once: the first run selects kernels and allocates."""
    from isseg.deploy.ov_core import shared_core

    if precision not in PROBE_PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PROBE_PRECISIONS)}, got {precision!r}")
    h, w = size
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PROBE_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
                              "PERF_COUNT": True}  # profile: time the kernel, not the layout conversions around it
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = shared_core().compile_model(_probe_model(channels, h, w, precision == "int8"), device, config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).uniform(0, 4, (1, channels, h, w)).astype(np.float32)
    request.infer({0: x})
    return request, x


def run_probe(request: Any, x: np.ndarray, runs: int) -> list[list[Any]]:
    """Run a compiled probe ``runs`` times -> the profile entries of its Convolution node for each run."""
    profiles = []
    for _ in range(runs):
        request.infer({0: x})
        profiles.append([p for p in request.profiling_info if p.node_type == "Convolution"])
    return profiles


def best_rate(profiles: list[list[Any]], channels: int, size: tuple[int, int], device: str) -> float:
    """GFLOP/s (multiply and add counted as 2) of the fastest of the profiled runs (:func:`run_probe`)."""
    best = min(sum(p.real_time.total_seconds() for p in conv) for conv in profiles)
    if not best > 0:
        raise RuntimeError(f"the rate probe found no timed Convolution in OpenVINO's profile on {device}")
    return 2.0 * channels * channels * 9 * size[0] * size[1] / best / 1e9


def probe_rate(precision: str = "bf16", threads: int | None = None, device: str = "CPU", channels: int = 256,
               size: tuple[int, int] = (192, 256), repeats: int = 20) -> float:
    """Best GFLOP/s of one 3x3 ``channels`` -> ``channels`` convolution on a ``size`` feature map, with
    OpenVINO on ``device`` at ``precision`` ("fp32", "bf16", "fp16" or "int8"), over ``repeats`` runs."""
    request, x = probe_request(precision, threads, device, channels, size)
    return best_rate(run_probe(request, x, repeats), channels, size, device)


def probe_exec_type(precision: str, threads: int | None = None, device: str = "CPU", channels: int = 256,
                    size: tuple[int, int] = (96, 128)) -> str:
    """The kernel OpenVINO runs for ``probe_rate``'s convolution (same arguments), e.g. ``brgconv_avx512_I8``."""
    conv = run_probe(*probe_request(precision, threads, device, channels, size), 1)[0]
    if not conv:
        raise RuntimeError(f"the rate probe found no Convolution in OpenVINO's profile on {device}")
    return conv[0].exec_type


#: f32 replaces OpenVINO's default inference precision only when its convolutions run this much faster (the
#: two differ by 1.6-3x where they differ at all: bf16 2x f32 on Zen 4, ~3x with AMX, f32 1.6-1.9x bf16 on
#: an Intel Xeon without AMX), so that a noisy probe never trades a real gain for a doubt
PRECISION_MARGIN = 1.2
CACHE_NAME = "precisions.json"
#: OpenVINO's name of a float inference precision -> :func:`probe_rate`'s
AS_PROBED = {"bf16": "bf16", "f16": "fp16", "f32": "fp32"}


@dataclass(frozen=True)
class PrecisionChoice:
    """The inference precision isseg gives float models on a device when none is asked for (OpenVINO's names:
    "f32", "bf16", "f16"), OpenVINO's own default there, each one's probe rate (GFLOP/s; {} when nothing had to
    be measured) and the cache key."""

    precision: str
    openvino_default: str
    rates: dict[str, float]
    key: str = ""
    cached: bool = False


def measure_precisions(precisions: tuple[str, ...], device: str = "CPU", rounds: int = 3, repeats: int = 3,
                       size: tuple[int, int] = (96, 128)) -> dict[str, float]:
    """Each precision's probe rate (OpenVINO's names), the best over ``rounds`` alternated rounds of ``repeats``
    runs: a machine that slows down for a moment slows one round, not one precision."""
    probes = {p: probe_request(AS_PROBED[p], None, device, 256, size) for p in precisions}
    rates = dict.fromkeys(precisions, 0.0)
    for r in range(rounds):
        for p in precisions if r % 2 == 0 else precisions[::-1]:
            rates[p] = max(rates[p], best_rate(run_probe(*probes[p], repeats), 256, size, device))
    return rates


def openvino_default(device: str) -> str:
    """OpenVINO's own default inference precision on ``device`` ("f32", "bf16", "f16")."""
    from isseg.deploy.ov_core import shared_core

    return str(shared_core().get_property(device, "INFERENCE_PRECISION_HINT").to_string())


def faster_precision(device: str = "CPU", use_cache: bool = True) -> PrecisionChoice:
    """The precision to run float models in on ``device`` when the caller asks for none: OpenVINO's default
    there, unless f32 convolutions run ``PRECISION_MARGIN`` times faster (an Intel Xeon without AMX: its bf16
    and f16 kernels ran at 0.5-0.6x f32). Measured once per machine (:mod:`isseg.deploy.machine_cache`);
    devices other than the CPU keep their default unmeasured."""
    from isseg.deploy.machine_cache import machine, read_cache, remember

    device = device.upper()
    default = openvino_default(device)
    if device != "CPU" or default not in AS_PROBED or default == "f32":
        return PrecisionChoice(default, default, {})
    key = f"{machine(device)} | {device} | default precision"
    entry = read_cache(CACHE_NAME).get(key) if use_cache else None
    if isinstance(entry, dict) and entry.get("precision") in (default, "f32"):
        return PrecisionChoice(entry["precision"], default, dict(entry.get("rates", {})), key, cached=True)
    rates = measure_precisions((default, "f32"), device)
    choice = PrecisionChoice("f32" if rates["f32"] > PRECISION_MARGIN * rates[default] else default, default,
                             rates, key)
    if use_cache:
        remember(CACHE_NAME, key, {"precision": choice.precision, "rates": rates})
    return choice
