"""Datasets in other annotation formats, read into the one validated COCO dict that :class:`CocoDataset` uses.

Training and evaluation have a single data path (COCO instances JSON + an image folder); every other format
is converted here, once, into that dict. Formats:

- ``coco``: a COCO instances JSON file, read natively (``images`` gives the image folder).
- ``yolo-seg`` (aliases ``yolo``, ``ultralytics``): an Ultralytics segmentation export (``data.yaml`` with
  ``names`` and ``train``/``val``/``test`` image folders, ``labels/...`` text files of normalized polygons).
  Read natively: Datumaro's YOLO importers read boxes only.
- through Datumaro (the ``data`` extra): ``cvat`` (CVAT for images 1.1 XML), ``voc`` (Pascal VOC
  ``SegmentationObject`` / ``SegmentationClass`` PNGs), ``labelme``, ``datumaro``, and any other Datumaro
  importer name.

What is kept: polygons stay polygons (the parts of one object, Datumaro's shared ``group``, stay one
annotation), masks become COCO RLE, ``is_crowd`` becomes ``iscrowd``. Class order is the format's label order
(category ids 1..K in that order), so it is the order of the trained model's classes; ``classes=`` imposes
another (LabelMe files carry no label list, so there it is the order of first appearance). Annotations
without a region (boxes only, points, lines) are counted in :attr:`LoadedDataset.skipped`, not trained on.
Any problem is one ``ValueError`` naming the file or item and what was expected.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isseg.data.coco import load_coco_json, validate_coco
from isseg.data.masks import mask_to_rle, rle_area, rle_to_bbox, segmentation_to_rle

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# user-facing name -> Datumaro importer name (None: read natively here)
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
# Datumaro detections that carry instance regions, best first (a VOC folder matches five VOC importers)
_DETECT_PREFERENCE = ("cvat", "datumaro", "label_me", "voc_instance_segmentation", "coco_instances", "coco")


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


# --------------------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------------------


def _yolo_yaml(path: Path) -> Path | None:
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        return path
    if path.is_dir():
        for name in ("data.yaml", "data.yml", "dataset.yaml"):
            if (path / name).is_file():
                return path / name
    return None


def detect_format(path: PathLike) -> str:
    """The format of ``path``: a COCO JSON file, an Ultralytics folder / yaml, else what Datumaro detects."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if _yolo_yaml(path) is not None:
        return "yolo-seg"
    env = _datumaro_env(path, "auto")
    found = env.detect_dataset(str(path))
    for name in _DETECT_PREFERENCE:
        if name in found:
            return ALIASES.get(name, "coco-datumaro" if name.startswith("coco") else name)
    if len(found) == 1:
        return found[0]
    supported = ", ".join(FORMATS)
    detail = f"it matches {found}" if found else "no known layout matches"
    raise ValueError(f"{path}: cannot tell the dataset format ({detail}); pass --format, one of {supported}")


# --------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------


def load_dataset(
    path: PathLike,
    format: str | None = None,
    images: PathLike | None = None,
    subset: str | None = None,
    classes: Sequence[str] | None = None,
) -> LoadedDataset:
    """Read ``path`` (any supported format, auto-detected when ``format`` is None) into a validated COCO dict.

    ``images``: the image folder of a COCO JSON (default: the JSON's folder). ``subset``: only that split
    (``train``, ``val``...) of a multi-split dataset; default all. ``classes``: the class order to use (each
    name must be one of the dataset's labels, except for LabelMe, which lists none; the others are dropped with
    their annotations).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    fmt = normalize_format(format) or detect_format(path)
    if fmt == "coco":
        if path.is_dir():
            fmt = "coco-datumaro"
        else:
            if subset is not None:
                raise ValueError(f"{path}: a COCO JSON file has no subsets; drop --subset {subset}")
            data = load_coco_json(path)
            loaded = LoadedDataset(data, Path(images) if images is not None else path.parent, "coco", path)
            return _reorder(loaded, classes) if classes else loaded
    if fmt == "yolo-seg":
        loaded = _load_yolo_seg(path, subset)
    else:
        importer = "coco_instances" if fmt == "coco-datumaro" else FORMATS.get(fmt, fmt)
        loaded = _load_datumaro(path, str(importer), fmt, subset)
    loaded.coco = validate_coco(loaded.coco, str(path))
    return _reorder(loaded, classes) if classes else loaded


def _reorder(loaded: LoadedDataset, classes: Sequence[str]) -> LoadedDataset:
    """Renumber categories 1..K in the order of ``classes``; annotations of other categories are dropped."""
    by_name = {c["name"]: c["id"] for c in loaded.coco["categories"]}
    missing = [n for n in classes if n not in by_name]
    if missing and loaded.format != "labelme":  # LabelMe lists no labels: a class without instances is unseen
        raise ValueError(f"{loaded.source}: classes {missing} are not among its labels {list(by_name)}")
    new_id = {by_name[n]: i + 1 for i, n in enumerate(classes) if n in by_name}
    anns = []
    for a in loaded.coco["annotations"]:
        if a["category_id"] in new_id:
            anns.append({**a, "category_id": new_id[a["category_id"]]})
        else:
            loaded.skipped["class not in --classes"] += 1
    loaded.coco = {**loaded.coco, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)],
                   "annotations": anns}
    return loaded


class _Builder:
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


def _image_size(path: Path, source: Path, item: str) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"{source}: item '{item}': image file not found: {path}")
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            w, h = im.size if orientation in (1, 2, 3, 4) else im.size[::-1]  # 5..8: rotated by 90 degrees
            return h, w
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{source}: item '{item}': cannot read image {path}: {exc}") from None


# -- YOLO-seg (Ultralytics) --------------------------------------------------------------------------------


def _yolo_names(yaml_path: Path, data: dict[str, Any]) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ValueError(f"{yaml_path}: field 'names': expected integer class ids as keys") from None
        if keys != list(range(len(keys))):
            raise ValueError(f"{yaml_path}: field 'names': expected class ids 0..{len(keys) - 1}, got {keys}")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise ValueError(f"{yaml_path}: field 'names': expected a list of class names or {{id: name}}")


def _yolo_images(yaml_path: Path, root: Path, spec: Any, split: str) -> list[Path]:
    """Image files of one split: a folder, a .txt list of images, or a list of those."""
    entries = spec if isinstance(spec, list) else [spec]
    out: list[Path] = []
    for entry in entries:
        p = Path(str(entry))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    q = Path(line.strip())
                    out.append(q if q.is_absolute() else root / q)
        else:
            raise ValueError(f"{yaml_path}: field '{split}': image folder or list not found: {p}")
    return out


def _yolo_label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _load_yolo_seg(path: Path, subset: str | None) -> LoadedDataset:
    import yaml

    yaml_path = _yolo_yaml(path)
    if yaml_path is None:
        raise ValueError(f"{path}: not a YOLO-seg dataset: expected data.yaml with 'names' and image folders")
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{yaml_path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ValueError(f"{yaml_path}: expected a mapping with 'names' and 'train' / 'val'")
    names = _yolo_names(yaml_path, data)
    root = Path(str(data.get("path") or yaml_path.parent))
    root = root if root.is_absolute() else yaml_path.parent / root
    splits = [s for s in ("train", "val", "test") if data.get(s)]
    if subset is not None:
        if subset not in splits:
            raise ValueError(f"{yaml_path}: no split '{subset}'; it has {splits}")
        splits = [subset]
    if not splits:
        raise ValueError(f"{yaml_path}: expected at least one of 'train', 'val', 'test' (image folders)")
    builder = _Builder(names, path, "yolo-seg")
    seen: set[Path] = set()
    for split in splits:
        for image in _yolo_images(yaml_path, root, data[split], split):
            if image in seen:
                continue
            seen.add(image)
            h, w = _image_size(image, yaml_path, str(image))
            iid = builder.add_image(image, h, w)
            label_file = _yolo_label_path(image)
            if not label_file.is_file():
                continue  # Ultralytics: an image without a label file has no objects
            for number, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
                _yolo_line(builder, iid, line, label_file, number, len(names), h, w)
    return builder.build()


def _yolo_line(builder: _Builder, iid: int, line: str, file: Path, number: int, k: int, h: int, w: int) -> None:
    fields = line.split()
    if not fields:
        return
    where = f"{file}: line {number}"
    try:
        cls = int(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise ValueError(f"{where}: expected 'class x1 y1 x2 y2 ...' (integer class, numbers), got "
                         f"{line[:60]!r}") from None
    if not 0 <= cls < k:
        raise ValueError(f"{where}: class {cls} is outside the {k} names of data.yaml (0..{k - 1})")
    if len(values) == 4:
        builder.skipped["box only"] += 1
        return
    if len(values) % 2 or len(values) < 6 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: expected a polygon of >= 3 normalized (x, y) points, got {len(values)} numbers")
    if min(values) < -0.01 or max(values) > 1.01:
        raise ValueError(f"{where}: expected coordinates normalized to 0..1, got {min(values)}..{max(values)}")
    poly = [v * (w if j % 2 == 0 else h) for j, v in enumerate(values)]
    builder.add_annotation(iid, cls, [poly])


# -- Datumaro ------------------------------------------------------------------------------------------


def _datumaro_env(path: Path, fmt: str) -> Any:
    try:
        from datumaro.components.environment import Environment
    except ImportError:
        raise ValueError(
            f"{path}: reading {fmt} datasets needs Datumaro: pip install 'isseg[data]'"
        ) from None
    return Environment()


def _datumaro_error(exc: BaseException, path: Path) -> ValueError:
    item = getattr(exc, "item_id", None)
    cause = exc.__cause__ or exc.__context__
    text = str(cause) if cause is not None and str(cause) else str(exc)
    text = " ".join(text.split())
    where = f"item '{item[0]}'" + (f" (subset '{item[1]}')" if item[1] else "") + ": " if item else ""
    return ValueError(f"{path}: {where}{text}")


def _load_datumaro(path: Path, importer: str, fmt: str, subset: str | None) -> LoadedDataset:
    env = _datumaro_env(path, fmt)
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset
    from datumaro.components.errors import DatumaroError

    if importer not in env.importers:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)} or a Datumaro "
                         "importer name (datum format --list-import)")
    try:
        dataset = Dataset.import_from(str(path), importer, env=env)
        items = list(dataset)
        categories = dataset.categories()
    except DatumaroError as exc:
        raise _datumaro_error(exc, path) from None
    except (AssertionError, KeyError, TypeError) as exc:  # malformed files surface as these in some importers
        raise ValueError(f"{path}: cannot read it as {fmt}: {type(exc).__name__}: {exc}") from None
    labels = [c.name for c in categories.get(AnnotationType.label, [])]
    drop_background = fmt == "voc" and labels[:1] == ["background"]
    names = labels[1:] if drop_background else labels
    offset = 1 if drop_background else 0
    builder = _Builder(names, path, fmt)
    subsets = sorted({it.subset for it in items})
    if subset is not None:
        if subset not in subsets:
            raise ValueError(f"{path}: no subset '{subset}'; it has {subsets}")
        items = [it for it in items if it.subset == subset]
    for item in items:
        _datumaro_item(builder, item, path, offset)
    return builder.build()


def _datumaro_item(builder: _Builder, item: Any, source: Path, offset: int) -> None:
    from datumaro.components.annotation import AnnotationType

    name = f"item '{item.id}'" + (f" (subset '{item.subset}')" if item.subset else "")
    media = item.media
    if media is None or not getattr(media, "path", None):
        raise ValueError(f"{source}: {name}: expected an image file, the item has none")
    image_path = Path(os.path.abspath(media.path))
    size = media.size if getattr(media, "size", None) else _image_size(image_path, source, item.id)
    h, w = (int(v) for v in size)
    if not image_path.is_file():
        raise ValueError(f"{source}: {name}: image file not found: {image_path}")
    iid = builder.add_image(image_path, h, w)
    groups: dict[tuple[int, int], list[Any]] = {}
    order: list[tuple[int, int]] = []
    other: list[Any] = []
    for k, ann in enumerate(item.annotations):
        if ann.type not in (AnnotationType.polygon, AnnotationType.mask, AnnotationType.ellipse):
            if ann.type in (AnnotationType.bbox, AnnotationType.points, AnnotationType.polyline):
                other.append(ann)
            continue
        if ann.label is None:
            declared = builder.names
            raise ValueError(f"{source}: {name}: {ann.type.name} annotation {ann.id}: its label is not one of the "
                             f"declared labels {declared}")
        label = int(ann.label) - offset
        if not 0 <= label < len(builder.names):
            builder.skipped["background label"] += 1
            continue
        key = (label, int(ann.group)) if ann.group else (label, -1 - k)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(ann)
    region_groups = {g for _, g in order if g >= 0}
    for ann in other:  # a box that only accompanies a region of its group (COCO-style imports) is no loss
        if not (ann.group and ann.group in region_groups):
            builder.skipped[f"{ann.type.name} without a region"] += 1
    for key in order:
        _datumaro_instance(builder, iid, key[0], groups[key], h, w, source, name)


def _from_float32(points: Sequence[float]) -> list[float]:
    """Datumaro keeps coordinates as float32 (201.36 becomes 201.36000061...), which moves pixels when the polygon
    is rasterized; the shortest decimal that float32 value stands for is the number the file had (exactly, for
    files written with up to 7 significant digits, as CVAT, LabelMe and COCO write them)."""
    return [float(str(v)) for v in np.asarray(points, dtype=np.float32)]


def _datumaro_instance(builder: _Builder, iid: int, label: int, anns: list[Any], h: int, w: int,
                       source: Path, name: str) -> None:
    from datumaro.components.annotation import AnnotationType

    crowd = any(bool(a.attributes.get("is_crowd", False)) for a in anns)
    polygons = []
    masks = []
    for a in anns:
        if a.type == AnnotationType.polygon:
            polygons.append(_from_float32(a.points))
        elif a.type == AnnotationType.ellipse:
            polygons.append(_from_float32(a.as_polygon()))
        else:
            m = np.asarray(a.image)
            if m.shape != (h, w):
                raise ValueError(f"{source}: {name}: mask of annotation {a.id} is {m.shape[0]}x{m.shape[1]}, "
                                 f"expected the image's {h}x{w}")
            masks.append(m.astype(bool))
    if masks:
        union = np.logical_or.reduce(masks)
        if polygons:
            from isseg.data.masks import polygons_to_mask

            union |= polygons_to_mask(polygons, h, w).astype(bool)
        if not union.any():
            builder.skipped["empty mask"] += 1
            return
        builder.add_annotation(iid, label, mask_to_rle(union), crowd)
    else:
        builder.add_annotation(iid, label, polygons, crowd)


def prepare_coco(data: PathLike, images: PathLike | None, format: str | None, subset: str | None,
                 out_dir: PathLike, name: str, verbose: bool = True) -> tuple[Path, Path]:
    """``(COCO json, image folder)`` for a command that takes COCO: a COCO file passes through unchanged;
    any other dataset is converted once to ``out_dir/<name>.json`` (its images stay where they are)."""
    data = Path(data)
    fmt = normalize_format(format)
    if fmt in (None, "coco") and data.suffix.lower() == ".json" and subset is None:
        if images is None:
            raise ValueError(f"{data}: a COCO annotation file needs its image folder (--images / --val-images)")
        return data, Path(images)
    loaded = load_dataset(data, format, images=images, subset=subset)
    target = loaded.write(Path(out_dir) / f"{name}.json")
    if verbose:
        names = loaded.class_names
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        left = "".join(f"; left out {n} x {why}" for why, n in loaded.skipped.items())
        print(f"isseg: {data} ({loaded.format}{f', subset {subset}' if subset else ''}): "
              f"{len(loaded.coco['images'])} images, {len(loaded.coco['annotations'])} instances, "
              f"{len(names)} classes ({shown}){left} -> {target}", flush=True)
    return target, loaded.image_dir


# --------------------------------------------------------------------------------------------------------
# writing other formats (isseg data convert --to ...)
# --------------------------------------------------------------------------------------------------------


def to_datumaro(loaded: LoadedDataset, subset: str = "default", masks_only: bool = False) -> Any:
    """A Datumaro ``Dataset`` of a loaded dataset: polygons as ``Polygon`` (one ``group`` per object), RLE as
    ``RleMask``, ``iscrowd`` as the ``is_crowd`` attribute, labels in category-id order. ``masks_only``: each
    object as one ``RleMask``, its polygons rasterized as the COCO evaluator does (for mask-only formats)."""
    _datumaro_env(loaded.source, "other")
    from datumaro.components.annotation import Polygon, RleMask
    from datumaro.components.dataset import Dataset
    from datumaro.components.dataset_base import DatasetItem
    from datumaro.components.media import Image

    cats = sorted(loaded.coco["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in loaded.coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    items = []
    for img in loaded.coco["images"]:
        anns = []
        for a in by_image.get(img["id"], []):
            attrs = {"is_crowd": True} if a.get("iscrowd", 0) else {}
            segm, label, aid = a["segmentation"], label_of[a["category_id"]], int(a["id"])
            if isinstance(segm, list) and not masks_only:
                anns.extend(Polygon(list(map(float, p)), label=label, id=aid, group=aid, attributes=dict(attrs))
                            for p in segm if len(p) >= 6)
            else:
                rle = segmentation_to_rle(segm, img["height"], img["width"])
                anns.append(RleMask(rle=rle, label=label, id=aid, group=aid, attributes=attrs))
        item_id = str(Path(img["file_name"]).with_suffix("").as_posix())
        media = Image.from_file(path=str(loaded.image_dir / img["file_name"]), size=(img["height"], img["width"]))
        items.append(DatasetItem(id=item_id, subset=subset, media=media, annotations=anns))
    return Dataset.from_iterable(items, categories=[c["name"] for c in cats])


def write_yolo_seg(loaded: LoadedDataset, out: PathLike, split: str = "train") -> Path:
    """Write an Ultralytics segmentation dataset (``data.yaml``, ``images/<split>``, ``labels/<split>``); call
    once per split into the same folder to add splits.

    YOLO-seg stores one polygon per object, so an object of several polygons keeps its largest, and an RLE
    mask is traced to its largest outer contour (holes are lost); both are counted in ``loaded.skipped``.
    """
    import cv2
    import yaml

    from isseg.data.masks import rle_to_mask

    out = Path(out)
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    cats = sorted(loaded.coco["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in loaded.coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    basenames = [Path(img["file_name"]).name for img in loaded.coco["images"]]
    flatten = len(set(basenames)) != len(basenames)  # one folder per split: sub-folders become name prefixes
    for img in loaded.coco["images"]:
        h, w = img["height"], img["width"]
        stem = Path(img["file_name"]).as_posix().replace("/", "__") if flatten else Path(img["file_name"]).name
        target = out / "images" / split / stem
        shutil.copyfile(loaded.image_dir / img["file_name"], target)
        lines = []
        for a in by_image.get(img["id"], []):
            segm = a["segmentation"]
            if a.get("iscrowd", 0):
                loaded.skipped["crowd region (not in YOLO-seg)"] += 1
                continue
            if isinstance(segm, list):
                polys = [p for p in segm if len(p) >= 6]
                if len(polys) > 1:
                    loaded.skipped["polygons beyond the first part"] += len(polys) - 1
                poly = max(polys, key=len) if polys else []
            else:
                mask = np.ascontiguousarray(rle_to_mask(segm))
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                contours = [c for c in contours if len(c) >= 3]
                loaded.skipped["mask traced to a polygon (approximate)"] += 1
                poly = max(contours, key=cv2.contourArea).reshape(-1).astype(float).tolist() if contours else []
            if len(poly) < 6:
                loaded.skipped["no polygon"] += 1
                continue
            coords = [v / (w if j % 2 == 0 else h) for j, v in enumerate(poly)]
            lines.append(" ".join([str(label_of[a["category_id"]])] + [repr(v) for v in coords]))
        (out / "labels" / split / Path(stem).with_suffix(".txt")).write_text("\n".join(lines) + "\n")
    meta: dict[str, Any] = {"path": "."}
    if (out / "data.yaml").is_file():  # another split written before: keep it (same classes)
        meta.update(yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8")) or {})
    meta.update({split: f"images/{split}", "names": {i: c["name"] for i, c in enumerate(cats)}})
    (out / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return out


EXPORTERS: dict[str, str] = {"cvat": "cvat", "voc": "voc_instance_segmentation", "labelme": "label_me",
                             "datumaro": "datumaro", "coco-datumaro": "coco_instances"}


def export_dataset(loaded: LoadedDataset, out: PathLike, format: str, subset: str = "train") -> Path:
    """Write ``loaded`` in ``format``: ``coco`` (one JSON; images stay where they are), ``yolo-seg``
    (native), or a Datumaro exporter (``cvat``, ``voc``, ``labelme``, ``datumaro``; images copied)."""
    fmt = normalize_format(format)
    out = Path(out)
    if fmt == "coco":
        return loaded.write(out if out.suffix == ".json" else out / "annotations.json")
    if fmt == "yolo-seg":
        return write_yolo_seg(loaded, out, subset)
    exporter = EXPORTERS.get(str(fmt), fmt)
    dataset = to_datumaro(loaded, subset, masks_only=fmt == "voc")  # VOC stores masks only
    from datumaro.components.errors import DatumaroError

    try:
        dataset.export(str(out), str(exporter), save_media=True)
    except DatumaroError as exc:
        raise _datumaro_error(exc, out) from None
    return out


def dataset_stats(loaded: LoadedDataset) -> dict[str, Any]:
    """Counts a user checks before training: images, instances per class, polygons / RLE / crowd, empty
    images, COCO size buckets (small < 32², medium < 96², large), and what the conversion left out."""
    coco = loaded.coco
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    per_class = Counter(a["category_id"] for a in coco["annotations"])
    areas = [float(a.get("area", 0.0)) for a in coco["annotations"]]
    with_ann = {a["image_id"] for a in coco["annotations"]}
    return {
        "format": loaded.format, "source": str(loaded.source), "image_dir": str(loaded.image_dir),
        "images": len(coco["images"]), "images_without_annotations": len(coco["images"]) - len(with_ann),
        "annotations": len(coco["annotations"]),
        "classes": [{"id": c["id"], "name": c["name"], "instances": per_class.get(c["id"], 0)} for c in cats],
        "polygons": sum(isinstance(a["segmentation"], list) for a in coco["annotations"]),
        "rle": sum(isinstance(a["segmentation"], dict) for a in coco["annotations"]),
        "crowd": sum(int(a.get("iscrowd", 0)) for a in coco["annotations"]),
        "small": sum(a < 32**2 for a in areas), "medium": sum(32**2 <= a < 96**2 for a in areas),
        "large": sum(a >= 96**2 for a in areas),
        "skipped": dict(loaded.skipped),
    }  # fmt: skip
