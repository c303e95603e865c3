"""How fast can this CPU run the network at all? A measured compute ceiling for the benchmark's ratios.

Mask R-CNN at 768x1024 is ~420 GFLOPs, almost all of it in convolutions and fully connected layers, so its
latency is bounded by the rate at which the CPU multiplies and adds. That rate differs by an order of
magnitude between CPUs of the same core count (AMX tiles on recent Xeons, AVX512-BF16/VNNI dot products
elsewhere, plain FMA on older ones), and so does every "N x faster than eager PyTorch" claim.

``probe_rate`` measures it: OpenVINO runs one 3x3 convolution of the network's dominant shape (256 -> 256
channels on the 192x256 P2 map of a 768x1024 input, as the FPN output and RPN convolutions there, the two
largest layers) on the same device, precision and threads as the benchmarked model, and the best of 20 runs
gives GFLOP/s. Noise only ever slows a run down, so the best run is the machine's rate; a smaller map (96x128,
used before) spread 290-400 GFLOP/s bf16 between runs on this machine and fell below what the network's own
large layers reach (a bound above the measured latency), the P2 map gives 400-420 bf16 and 825-835 int8,
about 93 % of the 448 / 896 GOP/s peak of two Zen 4 cores. ``network GFLOPs / rate`` is
then the latency no implementation of the same network can beat on this machine with that precision; the
benchmark reports it next to the measured latency. On a shared host whose speed drifts, :class:`RateSampler`
takes the probe between the benchmark's images instead, so that rate and latencies come from the same moments.

INT8 is probed the way NNCF quantizes: ``FakeQuantize`` on the activations (unsigned, 256 levels) and
weights (signed, 255 levels) in front of a float convolution, which OpenVINO's CPU plugin turns into an
integer convolution (``probe_exec_type`` says which kernel ran).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
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


def _probe_request(precision: str, threads: int | None, device: str, channels: int, size: tuple[int, int]
                   ) -> tuple[Any, np.ndarray]:
    """(infer request, input) of the probe compiled as the benchmark's models are (latency hint, ``threads``),
    run once: the first run selects kernels and allocates."""
    from isseg.deploy.runtime_openvino import shared_core

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


def _profile_probe(precision: str, threads: int | None, device: str, channels: int, size: tuple[int, int],
                   runs: int) -> list[list[Any]]:
    """The profile entries of the probe's Convolution node in each of ``runs`` runs after a warm-up."""
    return _run_probe(*_probe_request(precision, threads, device, channels, size), runs)


def _run_probe(request: Any, x: np.ndarray, runs: int) -> list[list[Any]]:
    """Run a compiled probe ``runs`` times -> the profile entries of its Convolution node for each run."""
    profiles = []
    for _ in range(runs):
        request.infer({0: x})
        profiles.append([p for p in request.profiling_info if p.node_type == "Convolution"])
    return profiles


def _best_rate(profiles: list[list[Any]], channels: int, size: tuple[int, int], device: str) -> float:
    best = min(sum(p.real_time.total_seconds() for p in conv) for conv in profiles)
    if not best > 0:
        raise RuntimeError(f"the ceiling probe found no timed Convolution in OpenVINO's profile on {device}")
    return 2.0 * channels * channels * 9 * size[0] * size[1] / best / 1e9


class RateSampler:
    """The probe's rate sampled between a benchmark's images, so that the bound comes from the same moments as
    the latencies it is compared with. On a shared host the CPU's speed can change by 3x within minutes (an
    Intel Xeon with AMX here: one best-of-20 probe gave 362, another 998 GFLOP/s bf16 in the same hour), and
    a probe taken at another moment than the measurement gives a bound above the measured latency or far
    below it. ``sample()`` keeps the best of ``repeats`` runs per precision; :meth:`rate` is their median."""

    def __init__(self, precisions: Iterable[str], repeats: int = 3, device: str = "CPU", channels: int = 256,
                 size: tuple[int, int] = (192, 256)) -> None:
        self.repeats, self.device, self.channels, self.size = repeats, device, channels, size
        self._probes = {p: _probe_request(p, None, device, channels, size) for p in sorted(set(precisions))}
        self.samples: dict[str, list[float]] = {p: [] for p in self._probes}

    def sample(self) -> None:
        """One sample of every precision's rate (GFLOP/s), now."""
        for precision, (request, x) in self._probes.items():
            profiles = _run_probe(request, x, self.repeats)
            self.samples[precision].append(_best_rate(profiles, self.channels, self.size, self.device))

    def rate(self, precision: str) -> float:
        """Median of the samples of ``precision`` (one sample is taken now when there is none yet)."""
        if not self.samples[precision]:
            self.sample()
        return statistics.median(self.samples[precision])


def probe_rate(precision: str = "bf16", threads: int | None = None, device: str = "CPU", channels: int = 256,
               size: tuple[int, int] = (192, 256), repeats: int = 20) -> float:
    """Best GFLOP/s (multiply and add counted as 2) of one 3x3 ``channels`` -> ``channels`` convolution on a
    ``size`` feature map, with OpenVINO on ``device`` at ``precision`` ("fp32", "bf16" or "int8")."""
    profiles = _profile_probe(precision, threads, device, channels, size, repeats)
    return _best_rate(profiles, channels, size, device)


def probe_exec_type(precision: str, threads: int | None = None, device: str = "CPU", channels: int = 256,
                    size: tuple[int, int] = (96, 128)) -> str:
    """The kernel OpenVINO runs for ``probe_rate``'s convolution (same arguments), e.g. ``brgconv_avx512_I8``."""
    conv = _profile_probe(precision, threads, device, channels, size, 1)[0]
    if not conv:
        raise RuntimeError(f"the ceiling probe found no Convolution in OpenVINO's profile on {device}")
    return conv[0].exec_type
