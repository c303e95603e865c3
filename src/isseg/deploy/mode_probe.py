"""Which OpenVINO performance mode runs a model faster here: measured on the machine, not assumed.

Throughput mode (the CPU plugin's streams, several requests in flight, the caller's pre- and post-processing
overlapped with inference) won 10-13 % images/s over latency mode on a 2-core AMD Zen 4 and lost 8 % on an
Intel Xeon with AMX (docs/deploy.md), so no constant is right everywhere. :func:`faster_mode` runs the model
in both modes on the first frame of the run, alternating, and keeps the faster; the answer is remembered per
machine, OpenVINO version, model file, device and precision (``$ISSEG_CACHE/modes.json``, default
``~/.cache/isseg``), so that a machine pays the probe (two compilations and a few inferences) once per model.

    mode = faster_mode("exported/security-0002.xml", first_image)        # "latency" or "throughput"

``isseg predict --mode auto`` uses it for a folder, several images or a video with an OpenVINO IR
(:func:`isseg.stream.options.choose_mode`); ``isseg benchmark`` reports its choice next to both modes' rates.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("latency", "throughput")
CACHE_NAME = "modes.json"


@dataclass(frozen=True)
class ModeProbe:
    """The probe's result: the faster ``mode`` and each mode's median images/s over the rounds."""

    mode: str
    rates: dict[str, float]
    key: str
    cached: bool = False


def cache_path() -> Path:
    """``$ISSEG_CACHE/modes.json`` (default ``~/.cache/isseg``, the registry's cache folder)."""
    return Path(os.environ.get("ISSEG_CACHE", Path.home() / ".cache" / "isseg")).expanduser() / CACHE_NAME


def probe_key(model_path: str | Path, device: str, precision: str | None) -> str:
    """What the answer depends on: the device as OpenVINO names it and the cores this process may use, the
    OpenVINO version, the model file (path, size, modification time), the device and the precision."""
    import openvino as ov

    from isseg.deploy.runtime_openvino import shared_core

    path = Path(model_path).resolve()
    stat = path.stat()
    name = str(shared_core().get_property(device.split(".")[0].upper(), "FULL_DEVICE_NAME"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{name} | {cores} cores | openvino {ov.__version__} | {path} {stat.st_size} {stat.st_mtime_ns} | "
            f"{device.upper()} | {precision or 'default'}")


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: probe again and rewrite it
    return data if isinstance(data, dict) else {}


def measure_modes(make: Callable[[str], Any], image: np.ndarray, rounds: int = 3) -> dict[str, float]:
    """Median images/s of each mode over ``rounds`` alternating rounds on ``image`` (HxWx3 uint8 BGR), pre- and
    post-processing included as a run does them: latency mode ``predict`` one image after the other,
    throughput mode ``predict_stream`` with the plugin's optimal number of requests in flight. ``make(mode)``
    gives an OpenVINO :class:`isseg.Predictor` in that mode. Each round runs as many images as throughput mode
    has requests (at least 2)."""
    predictors = {m: make(m) for m in MODES}
    try:
        n = max(2, predictors["throughput"].runtime.num_requests)
        predictors["latency"].predict(image)  # warm-up: first inferences allocate and pick kernels
        list(predictors["throughput"].predict_stream([image] * n))
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        for r in range(rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                t0 = time.perf_counter()
                if mode == "latency":
                    for _ in range(n):
                        predictors[mode].predict(image)
                else:
                    for _ in predictors[mode].predict_stream([image] * n):
                        pass
                rates[mode].append(n / (time.perf_counter() - t0))
    finally:
        for p in predictors.values():
            p.close()
    return {m: statistics.median(v) for m, v in rates.items()}


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
    from isseg.atomic import atomic_write

    key = probe_key(model_path, device, precision)
    path = cache_path()
    if use_cache:
        entry = _read_cache(path).get(key)
        if isinstance(entry, dict) and entry.get("mode") in MODES:
            return ModeProbe(entry["mode"], dict(entry.get("rates", {})), key, cached=True)
    from isseg.deploy.predictor import Predictor

    rates = measure_modes(lambda m: Predictor(model_path, device=device, precision=precision, mode=m), image, rounds)
    result = ModeProbe(max(MODES, key=lambda m: rates[m]), rates, key)
    if use_cache:
        cache = _read_cache(path)
        cache[key] = {k: v for k, v in asdict(result).items() if k in ("mode", "rates")} | {
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        with contextlib.suppress(OSError):  # a read-only home: the answer still holds for this run
            atomic_write(path, json.dumps(cache, indent=1))
    return result
