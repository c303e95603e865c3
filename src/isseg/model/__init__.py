"""The Mask R-CNN network in PyTorch (names imported on first use: ``isseg.model.masks`` stays light)."""

from isseg.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Detections": "isseg.model.detections",
    "InstanceMasks": "isseg.model.masks",
    "MaskRCNN": "isseg.model.mask_rcnn",
    "build_model": "isseg.model.mask_rcnn",
})
