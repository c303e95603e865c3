"""What every dataset-format reader shares: the table of format names, the COCO dict a dataset is read into
(:class:`LoadedDataset`), the builder the readers fill (:class:`DatasetBuilder`), and the image size read from a
file's header (:func:`image_size`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isseg.data.masks import rle_area, rle_to_bbox, segmentation_to_rle
from isseg.sources.decode import decode_image, image_header, read_bytes

PathLike = str | os.PathLike

# user-facing name -> Datumaro importer name (None: read natively, by isseg.data.formats and isseg.data.yolo_seg)
FORMATS: dict[str, str | None] = {
    "coco": None,
    "yolo-seg": None,
    "cvat": "cvat",
    "voc": "voc_instance_segmentation",
    "labelme": "label_me",
    "datumaro": "datumaro",
}
ALIASES = {"yolo": "yolo-seg", "ultralytics": "yolo-seg", "yolo_seg": "yolo-seg", "yolo_ultralytics": "yolo-seg",
           "label_me": "labelme", "voc_instance_segmentation": "voc", "cvat_images": "cvat"}


@dataclass
class LoadedDataset:
    """A dataset read into COCO: ``coco`` (validated), the folder its ``file_name`` entries are relative to,
    the format it came from, and what was left out (``{"box only": 3, ...}``)."""

    coco: dict[str, Any]
    image_dir: Path
    format: str
    source: Path
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in sorted(self.coco["categories"], key=lambda c: c["id"])]

    def write(self, path: PathLike) -> Path:
        """Write the COCO dict as JSON, atomically (temporary file + rename)."""
        from isseg.atomic import atomic_write

        return atomic_write(path, json.dumps(self.coco))


def normalize_format(name: str | None) -> str | None:
    """The canonical name of a format (aliases resolved); None stays None (auto-detect)."""
    if name is None or name == "auto":
        return None
    key = name.strip().lower()
    return ALIASES.get(key, key)


class DatasetBuilder:
    """Accumulates images and annotations into a COCO dict with contiguous ids."""

    def __init__(self, names: Sequence[str], source: Path, fmt: str) -> None:
        self.names = list(names)
        self.source = source
        self.fmt = fmt
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.paths: list[Path] = []
        self.skipped: Counter[str] = Counter()

    def add_image(self, path: Path, height: int, width: int) -> int:
        iid = len(self.images) + 1
        self.images.append({"id": iid, "file_name": "", "height": int(height), "width": int(width)})
        self.paths.append(path.resolve())
        return iid

    def add_annotation(self, image_id: int, label: int, segmentation: Any, iscrowd: bool = False) -> None:
        img = self.images[image_id - 1]
        if isinstance(segmentation, list):
            xs = [v for p in segmentation for v in p[0::2]]
            ys = [v for p in segmentation for v in p[1::2]]
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            area = float(rle_area(segmentation_to_rle(segmentation, img["height"], img["width"])))
        else:
            bbox, area = rle_to_bbox(segmentation), float(rle_area(segmentation))
        self.annotations.append({
            "id": len(self.annotations) + 1, "image_id": image_id, "category_id": label + 1,
            "segmentation": segmentation, "bbox": [float(v) for v in bbox], "area": area,
            "iscrowd": int(bool(iscrowd)),
        })  # fmt: skip

    def build(self) -> LoadedDataset:
        if not self.images:
            raise ValueError(f"{self.source}: no images found ({self.fmt} dataset)")
        root = Path(os.path.commonpath([str(p.parent) for p in self.paths]))
        for img, p in zip(self.images, self.paths):
            img["file_name"] = p.relative_to(root).as_posix()
        coco = {"images": self.images, "annotations": self.annotations,
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.names)]}
        return LoadedDataset(coco, root, self.fmt, self.source, self.skipped)


def image_size(path: Path, source: Path, item: str) -> tuple[int, int]:
    """(height, width) of the upright image (EXIF orientation applied), from the file's header without decoding
    the pixels (:func:`isseg.sources.decode.image_header`); a file whose header only OpenCV reads is decoded.
    ``ValueError`` naming the dataset, the item and the file."""
    if not path.is_file():
        raise ValueError(f"{source}: item '{item}': image file not found: {path}")
    try:
        data = read_bytes(path)
        header = image_header(data)
        if header is not None:
            return header.upright_hw
        height, width = decode_image(data, path).shape[:2]
    except (OSError, ValueError) as exc:  # both name the file
        raise ValueError(f"{source}: item '{item}': cannot read the image: {exc}") from None
    return height, width
