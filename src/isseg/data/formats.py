"""Datasets in other annotation formats, read into the one validated COCO dict that :class:`CocoDataset` uses.

Training and evaluation have a single data path (COCO instances JSON + an image folder); every other format
is converted here, once, into that dict (the readers: :mod:`isseg.data.yolo_seg`,
:mod:`isseg.data.datumaro_formats`; what they share: :mod:`isseg.data.loaded`). Formats:

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

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isseg.data.coco_json import load_coco_json, validate_coco
from isseg.data.datumaro_formats import EXPORTERS, datumaro_env, export_datumaro, load_datumaro, to_datumaro
from isseg.data.loaded import ALIASES, FORMATS, LoadedDataset, PathLike, normalize_format
from isseg.data.yolo_seg import load_yolo_seg, write_yolo_seg, yolo_yaml

__all__ = [
    "ALIASES",
    "EXPORTERS",
    "FORMATS",
    "LoadedDataset",
    "dataset_stats",
    "detect_format",
    "export_dataset",
    "load_dataset",
    "normalize_format",
    "prepare_coco",
    "to_datumaro",
    "write_yolo_seg",
]

# Datumaro detections that carry instance regions, best first (a VOC folder matches five VOC importers)
_DETECT_PREFERENCE = ("cvat", "datumaro", "label_me", "voc_instance_segmentation", "coco_instances", "coco")


def detect_format(path: PathLike) -> str:
    """The format of ``path``: a COCO JSON file, an Ultralytics folder / yaml, else what Datumaro detects."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if yolo_yaml(path) is not None:
        return "yolo-seg"
    env = datumaro_env(path, "auto")
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
        loaded = load_yolo_seg(path, subset)
    else:
        importer = "coco_instances" if fmt == "coco-datumaro" else FORMATS.get(fmt, fmt)
        loaded = load_datumaro(path, str(importer), fmt, subset)
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



def export_dataset(loaded: LoadedDataset, out: PathLike, format: str, subset: str = "train") -> Path:
    """Write ``loaded`` in ``format``: ``coco`` (one JSON; images stay where they are), ``yolo-seg``
    (native), or a Datumaro exporter (``cvat``, ``voc``, ``labelme``, ``datumaro``; images copied)."""
    fmt = normalize_format(format)
    out = Path(out)
    if fmt == "coco":
        return loaded.write(out if out.suffix == ".json" else out / "annotations.json")
    if fmt == "yolo-seg":
        return write_yolo_seg(loaded, out, subset)
    return export_datumaro(loaded, out, str(fmt), subset)


def dataset_stats(loaded: LoadedDataset, input_size: Sequence[int] | None = None,
                  object_fraction: float = 0.08) -> dict[str, Any]:
    """Counts a user checks before training: images, instances per class, polygons / RLE / crowd, empty
    images, COCO size buckets (small < 32², medium < 96², large), and what the conversion left out; the
    object-size percentiles (``object_sizes``) and the tiling they call for at a model input of ``input_size``
    (default: the security-0002 preset's) as ``tiling_suggestion`` (:mod:`isseg.tiling.suggest`; None without
    objects)."""
    from isseg.tiling.suggest import object_sizes, size_statistics, suggest_tiling

    coco = loaded.coco
    if input_size is None:
        from isseg.config import get_config

        input_size = get_config("security-0002").input.size
    sizes = object_sizes(coco)
    suggestion = suggest_tiling(sizes, input_size, object_fraction) if len(sizes["sqrt_area"]) else None
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
        "object_sizes": size_statistics(sizes),
        "tiling_suggestion": None if suggestion is None else suggestion.to_dict(),
    }  # fmt: skip
