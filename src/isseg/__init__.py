"""isseg: Mask R-CNN instance segmentation end to end.

    import isseg
    model = isseg.build_model("security-0002")
    isseg.load_weights(model, "checkpoint.pth")
    det = model.eval().predict(image_bgr)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names and the module that defines each; imported on first use so `import isseg` stays light.
_EXPORTS = {
    "ModelConfig": "isseg.config",
    "PRESETS": "isseg.config",
    "get_config": "isseg.config",
    "MaskRCNN": "isseg.model.mask_rcnn",
    "build_model": "isseg.model.mask_rcnn",
    "Detections": "isseg.model.detections",
    "load_weights": "isseg.weights.loading",
    "save_checkpoint": "isseg.weights.loading",
    "load_model": "isseg.weights.loading",
    "export": "isseg.deploy.export",
    "Predictor": "isseg.deploy.predictor",
    "coco_eval": "isseg.engine.coco_eval",
    "train": "isseg.engine.trainer",
    "evaluate": "isseg.engine.evaluate",
}

__all__ = sorted(_EXPORTS)

# Names other libraries use for something else: what to call instead.
_NOT_HERE = {
    "load_checkpoint": "isseg.load_model(path) builds and loads a model; isseg.load_weights(model, path) loads "
                       "into a model you built; isseg.weights.loading.read_checkpoint(path) returns the raw checkpoint",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        hint = f"; {_NOT_HERE[name]}" if name in _NOT_HERE else ""
        raise AttributeError(f"module 'isseg' has no attribute {name!r}{hint}")
    return getattr(importlib.import_module(module), name)
