"""The one place where the server calls isseg's inference API (``isseg.Predictor``, ``Detections``, records).

Kept apart so that a change of the Predictor is one edit here; nothing else in ``isseg.serve`` imports the model or
deploy packages' inference code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_predictor(source: str | Path, backend: str | None = None, device: str | None = None,
                   precision: str | None = None, num_threads: int = 0, preset: str | None = None) -> Any:
    """A Predictor of ``source`` (IR / ONNX / checkpoint / registry name); every detection (threshold 0), the
    server filters per request."""
    from isseg import Predictor

    return Predictor(str(source), backend=backend, device=device, threshold=0.0, precision=precision,
                     mode="latency", num_threads=num_threads, preset=preset)


def class_names(predictor: Any) -> tuple[str, ...]:
    return tuple(predictor.class_names)


def describe(predictor: Any) -> dict[str, Any]:
    """What the metadata endpoint says about the backend."""
    runtime = getattr(predictor, "runtime", None)
    return {"backend": predictor.backend, "device": str(getattr(runtime, "device", "")),
            "input_size": list(getattr(predictor, "input_size", ())),
            "precision": str(getattr(runtime, "inference_precision", None) or "")}


def detect(predictor: Any, image: np.ndarray, threshold: float, masks: bool = True) -> tuple[Any, dict[str, float]]:
    """-> (Detections in the image's own pixels, seconds per stage). One predictor is used by one thread at a time."""
    det = predictor.predict(image, threshold=threshold, masks=masks)
    return det, dict(predictor.timings)


def network_input(predictor: Any, image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR image -> the network's float32 [1, 3, H, W] input, exactly as ``predict`` prepares it."""
    x = predictor.preprocess(image)[0]
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(1, 3, *np.asarray(x).shape[-2:]))


def record(det: Any, file: str, masks: bool = True) -> dict[str, Any]:
    """The per-image result record (COCO RLE masks) that ``isseg predict`` and the Ray shards write too."""
    from isseg.engine.records import detections_record

    return detections_record(det, file, None, masks=masks)
