"""The COCO-format instance segmentation dataset (:class:`CocoDataset`) that training and evaluation read.

Its parts live by idea: the JSON is read and validated in :mod:`isseg.data.coco_json`, images are decoded and
pre-flighted in :mod:`isseg.data.images` (EXIF orientation rules there), targets are built in
:mod:`isseg.data.targets`. The names callers import from here (``load_coco_json``, ``read_image_bgr``, ...) are
re-exported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isseg.data.coco_json import (
    load_coco_json,
    match_class_names,
    read_json,
    usable_polygons,
    validate_coco,
    validate_segmentation,
)
from isseg.data.images import check_image_file, check_image_files, read_image_bgr
from isseg.data.targets import coco_target, index_annotations, keep_annotation

__all__ = [
    "CocoDataset",
    "check_image_file",
    "load_coco_json",
    "match_class_names",
    "read_image_bgr",
    "read_json",
    "usable_polygons",
    "validate_coco",
    "validate_segmentation",
]

PathLike = str | os.PathLike


class CocoDataset(torch.utils.data.Dataset):
    """A COCO-format instance segmentation dataset for training and prediction.

    ``dataset[i]`` -> ``(image, target)``: image ``uint8 [H, W, 3]`` BGR (EXIF orientation applied, see
    :mod:`isseg.data.images`); target dict (:func:`isseg.data.targets.coco_target`):

    - ``boxes`` float32 ``[N, 4]`` (x1, y1, x2, y2) in pixels, ``labels`` int64 ``[N]`` contiguous 0-based,
    - ``masks`` uint8 ``[N, H, W]`` 0/1, ``iscrowd`` int64 ``[N]``,
    - ``image_id`` int (COCO id), ``orig_size`` ``(H, W)``.

    ``train=True`` drops crowd regions and boxes narrower or lower than 1 pixel (the model takes no crowd
    targets, see docs/architecture.md) and clips boxes to the image. ``train=False`` keeps every
    annotation with its ``iscrowd`` flag (the COCO evaluator reads the JSON itself, so prediction only
    needs the images). Annotations without a usable polygon and those whose category is outside
    ``class_names`` are left out in both modes.

    Category ids map to contiguous labels in category-id order (``category_ids[label]`` is the COCO id),
    or, with ``class_names`` (e.g. a model's), to the position of the category's name in that list.
    ``transform(image, target) -> (image, target)`` runs last (e.g. :class:`~isseg.data.transforms.
    RandomHorizontalFlip`). ``skip_empty`` leaves out images with no target instance (for training).
    """

    def __init__(
        self,
        annotation_json: PathLike,
        image_dir: PathLike,
        train: bool = False,
        class_names: Sequence[str] | None = None,
        transform: Callable[[np.ndarray, dict[str, Any]], tuple[Any, dict[str, Any]]] | None = None,
        skip_empty: bool = False,
    ) -> None:
        self.annotation_file = Path(annotation_json)
        self.image_dir = Path(image_dir)
        self.train = train
        self.transform = transform
        data = load_coco_json(self.annotation_file)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.categories: list[dict[str, Any]] = categories
        if class_names is None:
            self.category_ids: list[int] = [c["id"] for c in categories]
            self.class_names: list[str] = [c["name"] for c in categories]
        else:
            self.category_ids = match_class_names(class_names, categories, str(self.annotation_file))
            self.class_names = list(class_names)
        self._label_of: dict[int, int] = {cid: i for i, cid in enumerate(self.category_ids)}
        # categories of the file no class maps to (their annotations are left out of the targets)
        self.unmapped_category_ids: list[int] = [c["id"] for c in categories if c["id"] not in self._label_of]
        # num_without_mask: annotations whose polygons all have < 3 points (real COCO has a few)
        self._anns, self.num_without_mask = index_annotations(data["images"], data["annotations"], self._label_of)
        if self.num_without_mask:
            warnings.warn(
                f"{self.annotation_file}: {self.num_without_mask} annotation(s) have no polygon with >= 3 "
                "points; they are left out of the targets",
                stacklevel=2,
            )
        images = data["images"]
        if skip_empty:
            images = [img for img in images if any(keep_annotation(a, img, train) for a in self._anns[img["id"]])]
        self.images: list[dict[str, Any]] = images
        self.exif_ignored: set[str] = set()  # files whose EXIF orientation contradicted the JSON's size

    # -- categories ------------------------------------------------------------------------------------
    def label_to_category_id(self, label: int) -> int:
        """Contiguous 0-based label -> COCO category id."""
        return self.category_ids[label]

    def category_id_to_label(self, category_id: int) -> int:
        """COCO category id -> contiguous 0-based label (``KeyError`` if the category is not mapped)."""
        return self._label_of[category_id]

    # -- images ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_ids(self) -> list[int]:
        return [img["id"] for img in self.images]

    def image_info(self, i: int) -> dict[str, Any]:
        """The ``images`` record of item ``i`` (``id``, ``file_name``, ``width``, ``height``, ...)."""
        return self.images[i]

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.images[i]["file_name"]

    def load_image(self, i: int) -> np.ndarray:
        """``uint8 [H, W, 3]`` BGR; ``FileNotFoundError`` / ``ValueError`` naming the file if unusable."""
        info = self.images[i]
        image, exif_ignored = read_image_bgr(self.image_path(i), (info["height"], info["width"]))
        if exif_ignored and info["file_name"] not in self.exif_ignored:
            self.exif_ignored.add(info["file_name"])
            warnings.warn(
                f"{self.image_path(i)}: its EXIF orientation rotates it away from the size in "
                f"{self.annotation_file}; using the pixels as stored",
                stacklevel=2,
            )
        return image

    def try_load_image(self, i: int) -> tuple[np.ndarray | None, str | None]:
        """``(image, None)``, or ``(None, reason)`` for a missing / undecodable / mis-sized file, so that an
        evaluation loop can skip and report it."""
        try:
            return self.load_image(i), None
        except (FileNotFoundError, ValueError) as exc:
            return None, str(exc)

    def preflight(self, progress: bool = False, workers: int = 4) -> list[tuple[int, str]]:
        """``(index, reason)`` of every image that cannot be used (missing, unreadable, truncated, corrupt, or
        not the annotated size), found before training starts rather than when the image is first sampled.
        See :func:`~isseg.data.images.check_image_file`; ``workers`` threads (the decoders release the GIL)."""
        files = [(self.image_path(i), (img["height"], img["width"])) for i, img in enumerate(self.images)]
        return check_image_files(files, progress=progress, workers=workers)

    def drop(self, indices: Sequence[int]) -> None:
        """Leave items out (e.g. the bad images :meth:`preflight` found)."""
        gone = set(indices)
        self.images = [img for i, img in enumerate(self.images) if i not in gone]

    # -- targets ---------------------------------------------------------------------------------------
    def load_target(self, i: int) -> dict[str, Any]:
        """The target dict of item ``i`` (see the class docstring); no image decoding."""
        img = self.images[i]
        return coco_target(img, self._anns[img["id"]], self._label_of, self.train)

    def train_annotations(self, i: int) -> list[dict[str, Any]]:
        """The annotations of item ``i`` its target is built from (mapped classes, those ``keep_annotation``
        keeps), as COCO dicts (for :class:`isseg.data.tiles.TileDataset`, which cuts them to a tile)."""
        img = self.images[i]
        return [a for a in self._anns[img["id"]] if keep_annotation(a, img, self.train)]

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        image = self.load_image(i)
        target = self.load_target(i)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"CocoDataset({str(self.annotation_file)!r}, images={len(self)}, "
            f"classes={len(self.class_names)}, train={self.train})"
        )
