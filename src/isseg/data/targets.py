"""Targets from COCO annotations: which annotations an image keeps, and the tensors the model trains on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from isseg.data.coco_json import usable_polygons
from isseg.data.masks import segmentation_to_mask


def index_annotations(
    images: Iterable[dict[str, Any]], annotations: Iterable[dict[str, Any]], categories: Iterable[int]
) -> tuple[dict[int, list[dict[str, Any]]], int]:
    """``({image id: its annotations}, number left out for having no polygon with >= 3 points)``.

    Only annotations of ``categories`` (the mapped category ids) are listed; real COCO files have a few
    annotations without a usable polygon, which cover no area.
    """
    wanted = set(categories)
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in images}
    without_mask = 0
    for ann in annotations:
        segm = ann["segmentation"]
        if isinstance(segm, list) and not usable_polygons(segm):
            without_mask += 1
            continue
        if ann["category_id"] in wanted:
            by_image[ann["image_id"]].append(ann)
    return by_image, without_mask


def keep_annotation(ann: dict[str, Any], img: dict[str, Any], train: bool) -> bool:
    """Everything for prediction; for training, not crowd and at least 1 pixel wide and high inside the image."""
    if not train:
        return True
    if ann.get("iscrowd", 0):
        return False
    x, y, w, h = ann["bbox"]
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(img["width"])), min(y + h, float(img["height"]))
    return x2 - x1 >= 1 and y2 - y1 >= 1


def coco_target(
    img: dict[str, Any], anns: Iterable[dict[str, Any]], label_of: dict[int, int], train: bool
) -> dict[str, Any]:
    """The target of one image from its ``images`` record and annotations (those :func:`keep_annotation`
    keeps): ``boxes`` float32 ``[N, 4]`` x1, y1, x2, y2 pixels (clipped to the image when ``train``),
    ``labels`` int64 ``[N]`` (``label_of[category_id]``), ``masks`` uint8 ``[N, H, W]`` 0/1, ``iscrowd`` int64
    ``[N]``, ``image_id`` int, ``orig_size`` ``(H, W)``."""
    h, w = img["height"], img["width"]
    kept = [a for a in anns if keep_annotation(a, img, train)]
    boxes = torch.tensor([a["bbox"] for a in kept], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    if train:
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    masks = np.zeros((len(kept), h, w), dtype=np.uint8)
    for k, a in enumerate(kept):
        segm = a["segmentation"]
        masks[k] = segmentation_to_mask(usable_polygons(segm) if isinstance(segm, list) else segm, h, w)
    return {
        "boxes": boxes.to(torch.float32),
        "labels": torch.tensor([label_of[a["category_id"]] for a in kept], dtype=torch.int64),
        "masks": torch.from_numpy(masks),
        "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in kept], dtype=torch.int64),
        "image_id": int(img["id"]),
        "orig_size": (h, w),
    }
