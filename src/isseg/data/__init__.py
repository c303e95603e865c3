"""COCO-format datasets, mask encodings, training transforms and a procedural synthetic dataset."""

from isseg.data.coco import CocoDataset, load_coco_json, match_class_names, read_image_bgr
from isseg.data.masks import mask_to_rle, masks_to_rles, polygons_to_mask, rle_to_mask, segmentation_to_mask
from isseg.data.transforms import RandomHorizontalFlip, collate, hflip, to_tensor_image

__all__ = [
    "CocoDataset",
    "RandomHorizontalFlip",
    "collate",
    "hflip",
    "load_coco_json",
    "mask_to_rle",
    "masks_to_rles",
    "match_class_names",
    "polygons_to_mask",
    "read_image_bgr",
    "rle_to_mask",
    "segmentation_to_mask",
    "to_tensor_image",
]
