"""isseg: Mask R-CNN instance segmentation end to end.

    import isseg
    model = isseg.build_model("security-0002")
    isseg.load_weights(model, "checkpoint.pth")
    det = model.eval().predict(image_bgr)
"""

from __future__ import annotations

from isseg.lazy import lazy_exports

__version__ = "0.1.0"

# Public names and the module that defines each; imported on first use so `import isseg` stays light.
_EXPORTS = {
    "ModelConfig": "isseg.config",
    "PRESETS": "isseg.config",
    "get_config": "isseg.config",
    "MaskRCNN": "isseg.model.mask_rcnn",
    "build_model": "isseg.model.mask_rcnn",
    "Detections": "isseg.model.detections",
    "InstanceMasks": "isseg.model.masks",
    "load_weights": "isseg.weights.loading",
    "save_checkpoint": "isseg.weights.loading",
    "load_model": "isseg.weights.loading",
    "export": "isseg.deploy.export",
    "Predictor": "isseg.deploy.predictor",
    "coco_eval": "isseg.engine.coco_eval",
    "train": "isseg.engine.trainer",
    "evaluate": "isseg.engine.evaluate",
    "PredictorOptions": "isseg.deploy.predictor",
    "StreamEngine": "isseg.stream",
    "StreamOptions": "isseg.stream",
    "FrameProcessor": "isseg.stream",
    "run_stream": "isseg.stream",
    "Source": "isseg.sources",
    "ReadOptions": "isseg.sources",
    "expand_inputs": "isseg.sources",
    "iter_frames": "isseg.sources",
    "read_image": "isseg.sources",
    "Tracker": "isseg.track",
    "TrackerConfig": "isseg.track",
}

# Names other libraries use for something else: what to call instead.
_NOT_HERE = {
    "load_checkpoint": "isseg.load_model(path) builds and loads a model; isseg.load_weights(model, path) loads "
                       "into a model you built; isseg.weights.loading.read_checkpoint(path) returns the raw checkpoint",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS, _NOT_HERE)
