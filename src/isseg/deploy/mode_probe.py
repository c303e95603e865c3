"""Which OpenVINO performance mode runs a model faster here: measured on the machine, not assumed.

Throughput mode (the CPU plugin's streams, several requests in flight, the caller's pre- and post-processing
overlapped with inference) won 10-13 % images/s over latency mode on a 2-core AMD Zen 4 and lost 8 % on an
Intel Xeon with AMX (docs/deploy.md), so no constant is right everywhere. :func:`faster_mode` runs the model
in both modes on the first frame of the run, alternating, and keeps the faster; the answer is remembered per
machine, OpenVINO version, model file, device and precision (:mod:`isseg.deploy.machine_cache`), so that a
machine pays the probe (two compilations and a few inferences) once per model.

    mode = faster_mode("exported/security-0002.xml", first_image)        # "latency" or "throughput"

``isseg predict --mode auto`` uses it for a folder, several images or a video with an OpenVINO IR
(:func:`isseg.stream.options.choose_mode`); ``isseg benchmark`` reports its choice next to both modes' rates.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isseg.deploy.machine_cache import machine, read_cache, remember

MODES = ("latency", "throughput")
CACHE_NAME = "modes.json"


@dataclass(frozen=True)
class ModeProbe:
    """The probe's result: the faster ``mode`` and each mode's median images/s over the rounds."""

    mode: str
    rates: dict[str, float]
    key: str
    cached: bool = False


def probe_key(model_path: str | Path, device: str, precision: str | None) -> str:
    """What the answer depends on: the device as OpenVINO names it and the cores this process may use, the
    OpenVINO version, the model file (path, size, modification time), the device and the precision."""
    path = Path(model_path).resolve()
    stat = path.stat()
    return (f"{machine(device)} | {path} {stat.st_size} {stat.st_mtime_ns} | {device.upper()} | "
            f"{precision or 'default'}")


@dataclass(frozen=True)
class ModeRounds:
    """Images/s of each mode in each alternated round (:func:`measure_rounds`), and how each mode ran."""

    rates: dict[str, list[float]]
    setup: dict[str, str]

    def medians(self) -> dict[str, float]:
        return {m: statistics.median(v) for m, v in self.rates.items()}

    def noise(self) -> float:
        """How far one mode's rate moved between its own rounds, relative to its median (the larger of the two
        modes; 0 with one round): on a shared machine whose speed drifts, two modes that differ by less than
        this are not told apart."""
        spreads = [(max(v) - min(v)) / statistics.median(v) for v in self.rates.values() if len(v) > 1]
        return max(spreads, default=0.0)


def describe(predictor: Any) -> str:
    """How an OpenVINO predictor runs: "2 requests, 2 streams (1 per stream) x 1 thread"; "" on other backends."""
    try:
        compiled = predictor.runtime.compiled
        streams = int(compiled.get_property("NUM_STREAMS"))
        threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    except Exception:  # noqa: BLE001 - not an OpenVINO runtime
        return ""
    n = max(1, int(predictor.runtime.num_requests))
    per = f"{n / streams:g} per stream" if streams else "?"
    return (f"{n} request{'s' if n > 1 else ''}, {streams} stream{'s' if streams > 1 else ''} ({per}) x "
            f"{threads} thread{'s' if threads > 1 else ''}")


def measure_rounds(make: Callable[[str], Any], frames: Callable[[int], Iterable[np.ndarray]],
                   rounds: int) -> ModeRounds:
    """Both modes' images/s in ``rounds`` alternated rounds (latency first, then throughput first, ...), so that
    the drift of a shared machine, which can change its speed by 2x within minutes, affects both alike. Pre- and
    post-processing count as a run does them: latency mode ``predict`` one image after the other, throughput mode
    ``predict_stream`` with the plugin's requests in flight. ``make(mode)`` gives an OpenVINO
    :class:`isseg.Predictor` in that mode; ``frames(n)`` gives one round's images (HxWx3 uint8 BGR; anything
    iterable, read as the round runs), ``n`` being the requests throughput mode keeps in flight."""
    predictors = {m: make(m) for m in MODES}
    try:
        n = max(1, predictors["throughput"].runtime.num_requests)
        first = next(iter(frames(n)))
        predictors["latency"].predict(first)  # warm-up: first inferences allocate and pick kernels
        list(predictors["throughput"].predict_stream([first] * n))  # every request
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        for r in range(rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                count, t0 = 0, time.perf_counter()
                if mode == "latency":
                    for image in frames(n):
                        predictors[mode].predict(image)
                        count += 1
                else:
                    count = sum(1 for _ in predictors[mode].predict_stream(frames(n)))
                rates[mode].append(count / (time.perf_counter() - t0))
        return ModeRounds(rates, {m: describe(p) for m, p in predictors.items()})
    finally:
        for p in predictors.values():
            p.close()


def measure_modes(make: Callable[[str], Any], image: np.ndarray, rounds: int = 3) -> dict[str, float]:
    """Median images/s of each mode over ``rounds`` alternated rounds on ``image`` (:func:`measure_rounds`),
    each round as many images as throughput mode has requests (at least 2)."""
    return measure_rounds(make, lambda n: [image] * max(2, n), rounds).medians()


def first_image(sources: Any) -> np.ndarray | None:
    """The first readable image of a run's sources (a still image, or a video file's first frame), None when
    none of them gives one; live sources are skipped (they are run in latency mode anyway)."""
    from isseg.sources.frames import ReadOptions, image_frame, video_frames

    for source in sources:
        try:
            if source.kind == "image":
                frame = image_frame(source)
            elif source.kind == "video":
                frame = next(iter(video_frames(source, ReadOptions(limit=1))), None)
            else:
                continue
        except (ValueError, OSError):
            continue
        if frame is not None and frame.image is not None:
            return frame.image
    return None


def faster_mode(model_path: str | Path, image: np.ndarray, device: str = "CPU", precision: str | None = None,
                use_cache: bool = True, rounds: int = 3) -> ModeProbe:
    """The faster OpenVINO mode for ``model_path`` on this machine (:func:`measure_modes`), from the cache when
    this machine already probed this model file, device and precision; a new answer is stored."""
    key = probe_key(model_path, device, precision)
    if use_cache:
        entry = read_cache(CACHE_NAME).get(key)
        if isinstance(entry, dict) and entry.get("mode") in MODES:
            return ModeProbe(entry["mode"], dict(entry.get("rates", {})), key, cached=True)
    from isseg.deploy.predictor import Predictor

    rates = measure_modes(lambda m: Predictor(model_path, device=device, precision=precision, mode=m), image, rounds)
    result = ModeProbe(max(MODES, key=lambda m: rates[m]), rates, key)
    if use_cache:
        remember(CACHE_NAME, key, {"mode": result.mode, "rates": result.rates})
    return result
