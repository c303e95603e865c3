"""Datasets through Datumaro (the ``data`` extra): CVAT, Pascal VOC, LabelMe, Datumaro and any other Datumaro
importer read into COCO (:func:`load_datumaro`), and a loaded dataset written through a Datumaro exporter
(:func:`export_datumaro`).

Polygons stay polygons (the parts of one object, Datumaro's shared ``group``, stay one annotation), masks become
COCO RLE, ``is_crowd`` becomes ``iscrowd``; boxes, points and lines without a region are counted as skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isseg.data.loaded import FORMATS, DatasetBuilder, LoadedDataset, image_size
from isseg.data.masks import mask_to_rle, segmentation_to_rle

EXPORTERS: dict[str, str] = {"cvat": "cvat", "voc": "voc_instance_segmentation", "labelme": "label_me",
                             "datumaro": "datumaro", "coco-datumaro": "coco_instances"}


def datumaro_env(path: Path, fmt: str) -> Any:
    """A Datumaro ``Environment``; one error naming ``path`` and the extra to install when Datumaro is missing."""
    try:
        from datumaro.components.environment import Environment
    except ImportError:
        raise ValueError(
            f"{path}: reading {fmt} datasets needs Datumaro: pip install 'isseg[data]'"
        ) from None
    return Environment()


def datumaro_error(exc: BaseException, path: Path) -> ValueError:
    """One line for a Datumaro error: ``path``, the item it names if any, and the underlying cause."""
    item = getattr(exc, "item_id", None)
    cause = exc.__cause__ or exc.__context__
    text = str(cause) if cause is not None and str(cause) else str(exc)
    text = " ".join(text.split())
    where = f"item '{item[0]}'" + (f" (subset '{item[1]}')" if item[1] else "") + ": " if item else ""
    return ValueError(f"{path}: {where}{text}")


def load_datumaro(path: Path, importer: str, fmt: str, subset: str | None) -> LoadedDataset:
    env = datumaro_env(path, fmt)
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
        raise datumaro_error(exc, path) from None
    except (AssertionError, KeyError, TypeError) as exc:  # malformed files surface as these in some importers
        raise ValueError(f"{path}: cannot read it as {fmt}: {type(exc).__name__}: {exc}") from None
    labels = [c.name for c in categories.get(AnnotationType.label, [])]
    drop_background = fmt == "voc" and labels[:1] == ["background"]
    names = labels[1:] if drop_background else labels
    offset = 1 if drop_background else 0
    builder = DatasetBuilder(names, path, fmt)
    subsets = sorted({it.subset for it in items})
    if subset is not None:
        if subset not in subsets:
            raise ValueError(f"{path}: no subset '{subset}'; it has {subsets}")
        items = [it for it in items if it.subset == subset]
    for item in items:
        _datumaro_item(builder, item, path, offset)
    return builder.build()


def _datumaro_item(builder: DatasetBuilder, item: Any, source: Path, offset: int) -> None:
    from datumaro.components.annotation import AnnotationType

    name = f"item '{item.id}'" + (f" (subset '{item.subset}')" if item.subset else "")
    media = item.media
    if media is None or not getattr(media, "path", None):
        raise ValueError(f"{source}: {name}: expected an image file, the item has none")
    image_path = Path(os.path.abspath(media.path))
    size = media.size if getattr(media, "size", None) else image_size(image_path, source, item.id)
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


def _datumaro_instance(builder: DatasetBuilder, iid: int, label: int, anns: list[Any], h: int, w: int,
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



def to_datumaro(loaded: LoadedDataset, subset: str = "default", masks_only: bool = False) -> Any:
    """A Datumaro ``Dataset`` of a loaded dataset: polygons as ``Polygon`` (one ``group`` per object), RLE as
    ``RleMask``, ``iscrowd`` as the ``is_crowd`` attribute, labels in category-id order. ``masks_only``: each
    object as one ``RleMask``, its polygons rasterized as the COCO evaluator does (for mask-only formats)."""
    datumaro_env(loaded.source, "other")
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



def export_datumaro(loaded: LoadedDataset, out: Path, fmt: str, subset: str) -> Path:
    """Write ``loaded`` with the Datumaro exporter of ``fmt`` (``cvat``, ``voc``, ``labelme``, ``datumaro``,
    or an exporter name) into the folder ``out``; images are copied."""
    exporter = EXPORTERS.get(fmt, fmt)
    dataset = to_datumaro(loaded, subset, masks_only=fmt == "voc")  # VOC stores masks only
    from datumaro.components.errors import DatumaroError

    try:
        dataset.export(str(out), str(exporter), save_media=True)
    except DatumaroError as exc:
        raise datumaro_error(exc, out) from None
    return out
