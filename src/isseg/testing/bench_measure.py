"""The measurements of ``isseg benchmark``: per-stage latency of several configurations interleaved image by
image, and the agreement of each configuration's detections with a reference configuration's (images/s of
latency and throughput mode in alternated rounds: :func:`isseg.deploy.mode_probe.measure_rounds`). Images are decoded by
:func:`isseg.sources.decode.read_image_file`, the decoder every isseg path uses, and the "decode" stage times it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from isseg.deploy.compare import compare
from isseg.model.masks import InstanceMasks
from isseg.sources.decode import read_image_file

STAGES = ("decode", "preprocess", "infer", "postprocess")


@dataclass
class Result:
    """One configuration's numbers (times in ms, rates in images / s)."""

    name: str
    stages_ms: dict[str, float] = field(default_factory=dict)  # medians
    e2e_ms: float = 0.0  # median of the per-image sums
    latency_ips: float = 0.0  # images / s of predict() one image after the other (latency mode), decode included
    throughput: float = 0.0  # images / s of predict_stream in throughput mode (or latency_ips where none)
    throughput_mode: str = ""  # how throughput mode ran: requests, streams, requests per stream, threads
    paired_latency: float = 0.0  # images / s of latency mode in the throughput pass, rounds alternated with it
    mode_noise: float = 0.0  # how far a mode's rate moved between its own rounds there (relative; ModeRounds.noise)
    latency_mode: str = ""  # how latency mode ran (OpenVINO): requests, streams, threads
    auto_mode: str = ""  # what ``--mode auto``'s probe picked (isseg.deploy.mode_probe), "" where not probed
    auto_rates: dict[str, float] = field(default_factory=dict)  # the probe's images/s of each mode
    detections: float = 0.0  # mean per image
    agreement: dict[str, float] = field(default_factory=dict)
    precision: str = ""  # the compute precision of the network's convolutions: fp32 / bf16 / int8 ("" unknown)
    bound_ms: float | None = None  # network GFLOPs / the probed rate at that precision (isseg.testing.ceiling)
    per_image: dict[str, list[float]] = field(default_factory=dict)  # seconds of each stage, image by image


def _median_ms(values: Sequence[float]) -> float:
    return 1000.0 * statistics.median(values) if values else float("nan")


def measure_interleaved(runners: Sequence[tuple[str, Any]], paths: Sequence[Path], warmup: int = 1,
                        between: Callable[[], None] | None = None) -> tuple[list[Result], list[list[Any]]]:
    """Per-stage latency of every runner (``predict(image)`` + ``timings``), image by image in turn, so that
    the load of a shared machine affects all of them alike; ``between()`` is called after each image's runs
    (the benchmark samples the CPU's rate there). Decoding is timed once per image. Returns the results and
    each runner's kept detections (per image), for :func:`agreement`."""
    first = read_image_file(paths[0])
    for _, runner in runners:
        for _ in range(warmup):
            runner.predict(first)
    times = [{k: [] for k in STAGES} for _ in runners]
    dets: list[list[Any]] = [[] for _ in runners]
    for path in paths:
        t0 = time.perf_counter()
        image = read_image_file(path)
        decode = time.perf_counter() - t0
        for i, (_, runner) in enumerate(runners):
            dets[i].append(_kept(runner.predict(image)))
            times[i]["decode"].append(decode)
            for k, v in runner.timings.items():
                times[i][k].append(v)
        if between is not None:
            between()
    results = []
    for (name, _), t, d in zip(runners, times, dets):
        e2e = [sum(v) for v in zip(*t.values())]
        r = Result(name, {k: _median_ms(v) for k, v in t.items()}, _median_ms(e2e), len(e2e) / sum(e2e), per_image=t)
        r.detections = float(np.mean([len(x) for x in d]))
        results.append(r)
    return results, dets


class _Packed:
    """A measured result kept for the agreement columns with its masks bit-packed, the full-size masks freed.
    Keeping every image's [N, H, W] masks alive would make each new result a fresh ``mmap`` of tens of MB, whose
    page faults (costly on this VM) then showed up as 60-90 ms of "postprocess" that a real run, which frees
    each result, does not pay (measured: 84 ms kept, 12 ms freed, same images)."""

    def __init__(self, det: Any) -> None:
        self.det = det
        self.shape = self.bits = None
        if det.masks is None or isinstance(det.masks, InstanceMasks):  # already compact: kept as it is
            return
        self.shape = det.masks.shape
        self.bits = np.packbits(
            det.masks.reshape(len(det), int(np.prod(det.masks.shape[1:]))), axis=1)
        det.masks = None

    def __len__(self) -> int:
        return len(self.det)

    def unpacked(self) -> Any:
        if self.bits is None:
            return self.det
        n = int(np.prod(self.shape[1:]))
        masks = np.unpackbits(self.bits, axis=1, count=n).astype(bool).reshape(self.shape)
        return replace(self.det, masks=masks)


def _kept(result: Any) -> Any:
    if isinstance(result, np.ndarray):  # torchvision's masks: only their number is used (it is no reference)
        return range(len(result))
    return _Packed(result) if getattr(result, "masks", None) is not None else result


def _unpacked(result: Any) -> Any:
    return result.unpacked() if isinstance(result, _Packed) else result


def agreement(reference: list[Any], dets: list[Any]) -> dict[str, float]:
    """How far ``dets`` agree with ``reference`` (both per image, from :func:`measure_interleaved`), over all
    detections and over those scoring >= 0.5: the share of the reference's detections matched, and the mean
    box and mask IoU of the matches (see :func:`isseg.deploy.compare.compare`)."""
    out: dict[str, float] = {}
    for label, min_score in (("all", 0.0), ("0.5", 0.5)):
        agreements = [compare(_unpacked(a), _unpacked(b), min_score=min_score) for a, b in zip(reference, dets)]
        ref_count = sum(a.count_a for a in agreements)
        matched = sum(a.matched for a in agreements)
        out[f"matched_{label}"] = matched / ref_count if ref_count else 1.0
        weights = [a.matched for a in agreements]
        total = sum(weights) or 1
        out[f"box_iou_{label}"] = sum(a.box_iou * w for a, w in zip(agreements, weights)) / total
        out[f"mask_iou_{label}"] = sum(a.mask_iou * w for a, w in zip(agreements, weights)) / total
    return out
