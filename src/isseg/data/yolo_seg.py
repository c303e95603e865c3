"""Ultralytics YOLO segmentation datasets (``data.yaml`` + ``images/`` + ``labels/`` of normalized polygons):
reading into COCO (:func:`load_yolo_seg`) and writing (:func:`write_yolo_seg`). Read natively: Datumaro's YOLO
importers read boxes only.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from isseg.data.loaded import DatasetBuilder, LoadedDataset, PathLike, image_size
from isseg.sources.decode import IMAGE_SUFFIXES


def yolo_yaml(path: Path) -> Path | None:
    """The dataset's yaml: ``path`` itself or the ``data.yaml`` in the folder ``path``; None if there is none."""
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        return path
    if path.is_dir():
        for name in ("data.yaml", "data.yml", "dataset.yaml"):
            if (path / name).is_file():
                return path / name
    return None



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
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES))
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


def load_yolo_seg(path: Path, subset: str | None) -> LoadedDataset:
    import yaml

    yaml_path = yolo_yaml(path)
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
    builder = DatasetBuilder(names, path, "yolo-seg")
    seen: set[Path] = set()
    for split in splits:
        for image in _yolo_images(yaml_path, root, data[split], split):
            if image in seen:
                continue
            seen.add(image)
            h, w = image_size(image, yaml_path, str(image))
            iid = builder.add_image(image, h, w)
            label_file = _yolo_label_path(image)
            if not label_file.is_file():
                continue  # Ultralytics: an image without a label file has no objects
            for number, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
                _yolo_line(builder, iid, line, label_file, number, len(names), h, w)
    return builder.build()


def _yolo_line(builder: DatasetBuilder, iid: int, line: str, file: Path, number: int, k: int, h: int, w: int) -> None:
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

