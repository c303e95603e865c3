"""How fast can this CPU run the network at all? A measured compute ceiling for the benchmark's ratios.

Mask R-CNN at 768x1024 is ~420 GFLOPs, almost all of it in convolutions and fully connected layers, so its
latency is bounded by the rate at which the CPU multiplies and adds. That rate differs by an order of
magnitude between CPUs of the same core count (AMX tiles on recent Xeons, AVX512-BF16/VNNI dot products
elsewhere, plain FMA on older ones), and so does every "N x faster than eager PyTorch" claim.

:func:`isseg.deploy.rate_probe.probe_rate` measures it (one 3x3 convolution of the network's dominant
shape, 256 -> 256 channels on the 192x256 P2 map, on the same device, precision and threads as the
benchmarked model; the best of several runs). A smaller map (96x128, used before) spread 290-400 GFLOP/s bf16
between runs on Zen 4 and fell below what the network's own large layers reach (a bound above the measured
latency); the P2 map gives 400-420 bf16 and 825-835 int8 there, about 93 % of the 448 / 896 GOP/s peak of two
Zen 4 cores. ``network GFLOPs / rate`` is then the latency no implementation of the same network can beat on
this machine with that precision; the benchmark reports it next to the measured latency. On a shared host
whose speed drifts, :class:`RateSampler` takes the probe between the benchmark's images instead, so that rate
and latencies come from the same moments.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from isseg.deploy.rate_probe import best_rate, probe_request, run_probe


class RateSampler:
    """The probe's rate sampled between a benchmark's images, so that the bound comes from the same moments as
    the latencies it is compared with. On a shared host the CPU's speed can change by 3x within minutes (an
    Intel Xeon with AMX here: one best-of-20 probe gave 362, another 998 GFLOP/s bf16 in the same hour), and
    a probe taken at another moment than the measurement gives a bound above the measured latency or far
    below it. ``sample()`` keeps the best of ``repeats`` runs per precision; :meth:`rate` is their median."""

    def __init__(self, precisions: Iterable[str], repeats: int = 3, device: str = "CPU", channels: int = 256,
                 size: tuple[int, int] = (192, 256)) -> None:
        self.repeats, self.device, self.channels, self.size = repeats, device, channels, size
        self._probes = {p: probe_request(p, None, device, channels, size) for p in sorted(set(precisions))}
        self.samples: dict[str, list[float]] = {p: [] for p in self._probes}

    def sample(self) -> None:
        """One sample of every precision's rate (GFLOP/s), now."""
        for precision, (request, x) in self._probes.items():
            profiles = run_probe(request, x, self.repeats)
            self.samples[precision].append(best_rate(profiles, self.channels, self.size, self.device))

    def rate(self, precision: str) -> float:
        """Median of the samples of ``precision`` (one sample is taken now when there is none yet)."""
        if not self.samples[precision]:
            self.sample()
        return statistics.median(self.samples[precision])

