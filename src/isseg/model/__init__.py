"""The Mask R-CNN network in PyTorch."""

from isseg.model.detections import Detections
from isseg.model.mask_rcnn import MaskRCNN, build_model

__all__ = ["Detections", "MaskRCNN", "build_model"]
