"""Tiled inference: small objects in large frames (4K cameras).

    from isseg.tiling import TilingOptions
    predictor = isseg.Predictor("model.xml", tiling=TilingOptions(overlap=0.2, merge="nmm"))
    det = predictor.predict(frame_4k)                 # Detections of the whole frame

Each frame is cut into overlapping tiles (:mod:`.plan`), every tile runs through the model at its own scale
(the Predictor's asynchronous requests: :mod:`.infer`), and the tiles' raw detections (boxes in frame pixels,
28x28 mask probabilities) are merged by class-wise NMS or greedy non-maximum merging (:mod:`.merge`); only
the survivors' masks are pasted at frame size. :mod:`.options` also maps the options to and from an exported
model's metadata (OpenVINO Model API's tiler keys). Usage and measurements: docs/tiling.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TilingOptions": "isseg.tiling.options",
    "Tile": "isseg.tiling.plan",
    "plan_tiles": "isseg.tiling.plan",
    "predict_tiled": "isseg.tiling.infer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'isseg.tiling' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
