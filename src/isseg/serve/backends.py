"""The one place where the server calls isseg's inference API: ``isseg.Predictor``, ``Detections``, records, the
OpenVINO runtime of :mod:`isseg.deploy.runtime_openvino` and the pre-processing of :mod:`isseg.model.transform`.

Kept apart so that a change of the Predictor or the runtime is one edit here; nothing else in ``isseg.serve``
imports the model or deploy packages' inference code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_predictor(source: str | Path, backend: str | None = None, device: str | None = None,
                   precision: str | None = None, num_threads: int = 0, preset: str | None = None,
                   tiling: Any = None) -> Any:
    """A Predictor of ``source`` (IR / ONNX / checkpoint / registry name); every detection (threshold 0), the
    server filters per request. ``tiling``: ``PredictorOptions.tiling`` (None: the model's own)."""
    from isseg import Predictor

    return Predictor(str(source), backend=backend, device=device, threshold=0.0, precision=precision,
                     mode="latency", num_threads=num_threads, preset=preset, tiling=tiling)


def class_names(predictor: Any) -> tuple[str, ...]:
    return tuple(predictor.class_names)


def describe(predictor: Any) -> dict[str, Any]:
    """What the metadata endpoint says about the backend (and ``tiling``, the tiling options as JSON, when the
    Predictor tiles)."""
    runtime = getattr(predictor, "runtime", None)
    tiling = getattr(predictor, "tiling", None)
    return {"backend": predictor.backend, "device": str(getattr(runtime, "device", "")),
            "input_size": list(getattr(predictor, "input_size", ())),
            "precision": str(getattr(runtime, "inference_precision", None) or ""),
            **({"tiling": tiling.to_json()} if tiling is not None else {})}


def detect(predictor: Any, image: np.ndarray, threshold: float, masks: bool = True) -> tuple[Any, dict[str, float]]:
    """-> (Detections in the image's own pixels, seconds per stage). One predictor is used by one thread at a time."""
    det = predictor.predict(image, threshold=threshold, masks=masks)
    return det, dict(predictor.timings)


def input_config(predictor: Any) -> Any:
    """The ``InputConfig`` (resize, letterbox, canvas) a Predictor pre-processes images with."""
    return predictor.config.input


def network_input(image: np.ndarray, config: Any) -> np.ndarray:
    """HxWx3 uint8 BGR image -> the network's float32 [1, 3, H, W] input: :func:`isseg.model.transform.network_input`,
    exactly what ``Predictor.predict`` feeds the network (no inference state: thread-safe)."""
    from isseg.model.transform import network_input as prepare

    return prepare(image, config)[0]


def contract_runtime(path: str | Path, device: str, precision: str | None, workers: int) -> Any:
    """The exported network compiled by isseg's OpenVINO runtime for ``workers`` requests in flight: the
    LATENCY hint for one, THROUGHPUT with ``workers`` requests for more (the runtime owns every property)."""
    from isseg.deploy.runtime_openvino import OpenVINORuntime

    throughput = workers > 1
    return OpenVINORuntime(path, device, precision, mode="throughput" if throughput else "latency",
                           num_requests=workers if throughput else 0)


def read_network(path: str | Path) -> Any:
    """``ov.Model`` of an IR or ONNX file (:func:`isseg.deploy.runtime_openvino.read_ir`), for its rt_info."""
    from isseg.deploy.runtime_openvino import read_ir

    return read_ir(path)


def record(det: Any, file: str, masks: bool = True) -> dict[str, Any]:
    """The per-image result record (COCO RLE masks) that ``isseg predict`` and the Ray shards write too."""
    from isseg.engine.records import detections_record

    return detections_record(det, file, None, masks=masks)
