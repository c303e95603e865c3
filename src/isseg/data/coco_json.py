"""COCO instances JSON: reading, validation, and mapping a model's class names to its categories.

A COCO file is checked once, up front, so that a bad record fails with the file, the record, the field and
what was expected, instead of a ``KeyError`` deep inside a training step hours later. The checker and the number
tests here are also what :mod:`isseg.engine.coco_eval` validates result files with.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any, NoReturn

PathLike = str | os.PathLike

_GENERIC_PREFIX = "class_"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool): what a COCO numeric field may hold."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _all_numbers(values: list[Any]) -> bool:
    """All finite ints / floats (not bools). Fast path for polygons: full COCO has ~40M coordinates."""
    return all(type(v) in (int, float) for v in values) and math.isfinite(sum(values))


def is_int(v: Any) -> bool:
    """An int (not a bool): what a COCO id field may hold."""
    return isinstance(v, int) and not isinstance(v, bool)


def _record_name(section: str, index: int, record: Any) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{section}[{index}]" + (f" (id={rid})" if rid is not None else "")


class RecordChecker:
    """The one error format of the COCO JSON checks (here and in :mod:`isseg.engine.coco_eval`): raises
    ``ValueError("<file>: <record>: field '<f>': expected <e>, got <v>")``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, record: str, field: str, expected: str, got: Any = ...) -> NoReturn:
        got_text = "" if got is ... else f", got {_short(got)}"
        raise ValueError(f"{self.source}: {record}: field '{field}': expected {expected}{got_text}")

    def require(self, obj: dict[str, Any], record: str, field: str, expected: str, key: str = "") -> Any:
        """``obj[key or field]``; ``field`` is how the error names it (e.g. ``segmentation.size``)."""
        key = key or field
        if key not in obj:
            raise ValueError(f"{self.source}: {record}: missing field '{field}' ({expected})")
        return obj[key]


def read_json(path: PathLike) -> Any:
    """Parse a JSON file; a syntax error names the file and the line/column of the error."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None


def validate_segmentation(
    segm: Any, height: int, width: int, check: RecordChecker, record: str, field: str = "segmentation"
) -> None:
    """Check a COCO ``segmentation`` value: a list of polygons (flat ``[x1, y1, x2, y2, ...]`` lists of
    numbers, even length) or an RLE dict ``{"size": [h, w], "counts": str | list[int]}``.

    Polygons with fewer than 3 points (an even count < 6) are tolerated here because the real COCO 2017
    files contain a few; they cover no area and :func:`usable_polygons` drops them.
    """
    if isinstance(segm, dict):
        size = check.require(segm, record, f"{field}.size", "RLE [height, width]", "size")
        if not (isinstance(size, list) and len(size) == 2 and all(is_int(v) for v in size)):
            check.fail(record, f"{field}.size", "RLE size [height, width] of 2 integers", size)
        if list(size) != [height, width]:
            check.fail(record, f"{field}.size", f"the image's [height, width] = [{height}, {width}]", size)
        counts = check.require(
            segm, record, f"{field}.counts", "RLE counts: str or list of run lengths", "counts"
        )
        if isinstance(counts, list):
            if not all(is_int(c) and c >= 0 for c in counts):
                check.fail(record, f"{field}.counts", "uncompressed RLE counts: non-negative integers")
            if sum(counts) != height * width:
                expected = f"run lengths summing to height*width = {height * width}"
                check.fail(record, f"{field}.counts", expected, sum(counts))
        elif not isinstance(counts, str) or not counts:
            expected = "compressed RLE counts (non-empty str) or a list of run lengths"
            check.fail(record, f"{field}.counts", expected, counts)
        return
    if not isinstance(segm, list):
        check.fail(record, field, "a list of polygons or an RLE dict with 'size' and 'counts'", segm)
    for k, poly in enumerate(segm):
        if not isinstance(poly, list) or not _all_numbers(poly):
            check.fail(record, f"{field}[{k}]", "a polygon: flat list of numbers [x1, y1, x2, y2, ...]", poly)
        if len(poly) % 2:
            check.fail(record, f"{field}[{k}]", "a polygon with an even number of coordinates", len(poly))


def usable_polygons(segm: list[list[float]]) -> list[list[float]]:
    """Polygons with at least 3 points. (pycocotools would read a 4-number polygon as a box.)"""
    return [p for p in segm if len(p) >= 6]



def _record_id(
    check: RecordChecker, section: str, index: int, record: Any, seen: Container[int], what: str
) -> tuple[str, int]:
    """The error name of ``data[section][index]`` and its ``id``: an object with an integer ``id`` not in ``seen``."""
    rec = _record_name(section, index, record)
    if not isinstance(record, dict):
        check.fail(rec, "<record>", "an object", record)
    rid = check.require(record, rec, "id", f"integer {what} id")
    if not is_int(rid):
        check.fail(rec, "id", "an integer", rid)
    if rid in seen:
        check.fail(rec, "id", f"a unique {what} id (duplicate)", rid)
    return rec, rid


def _require_text(check: RecordChecker, record: dict[str, Any], rec: str, field: str, expected: str) -> None:
    value = check.require(record, rec, field, expected)
    if not isinstance(value, str) or not value:
        check.fail(rec, field, "a non-empty string", value)


def _validate_images(check: RecordChecker, records: list[Any]) -> dict[int, dict[str, Any]]:
    """``{id: record}``; ``width`` / ``height`` become ints (a JSON ``640.0`` is accepted)."""
    images: dict[int, dict[str, Any]] = {}
    for i, img in enumerate(records):
        rec, iid = _record_id(check, "images", i, img, images, "image")
        _require_text(check, img, rec, "file_name", "image file path relative to the image directory")
        for dim in ("width", "height"):
            v = check.require(img, rec, dim, "positive integer pixels")
            if not (is_number(v) and v > 0 and float(v).is_integer()):
                check.fail(rec, dim, "a positive integer number of pixels", v)
            img[dim] = int(v)
        images[iid] = img
    return images


def _validate_categories(check: RecordChecker, records: list[Any]) -> set[int]:
    categories: set[int] = set()
    for i, cat in enumerate(records):
        rec, cid = _record_id(check, "categories", i, cat, categories, "category")
        _require_text(check, cat, rec, "name", "category name")
        categories.add(cid)
    return categories


def _validate_annotations(
    check: RecordChecker, records: list[Any], images: dict[int, dict[str, Any]], categories: set[int]
) -> None:
    ann_ids: set[int] = set()
    for i, ann in enumerate(records):
        rec, aid = _record_id(check, "annotations", i, ann, ann_ids, "annotation")
        ann_ids.add(aid)
        iid = check.require(ann, rec, "image_id", "id of an entry of 'images'")
        if not is_int(iid) or iid not in images:
            check.fail(rec, "image_id", "the id of an entry of 'images'", iid)
        cid = check.require(ann, rec, "category_id", "id of an entry of 'categories'")
        if not is_int(cid) or cid not in categories:
            check.fail(rec, "category_id", f"one of the category ids {sorted(categories)}", cid)
        bbox = check.require(ann, rec, "bbox", "[x, y, width, height]")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            check.fail(rec, "bbox", "4 numbers [x, y, width, height]", bbox)
        if bbox[2] < 0 or bbox[3] < 0:
            check.fail(rec, "bbox", "width and height >= 0", bbox)
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or not isinstance(crowd, (int, bool)):
            check.fail(rec, "iscrowd", "0 or 1", crowd)
        if "area" in ann and not (is_number(ann["area"]) and ann["area"] >= 0):
            check.fail(rec, "area", "a number >= 0", ann["area"])
        segm = check.require(ann, rec, "segmentation", "polygons or RLE")
        img = images[iid]
        validate_segmentation(segm, img["height"], img["width"], check, rec)


def validate_coco(data: Any, source: str) -> dict[str, Any]:
    """Check the structure of a COCO instances file; return it unchanged. ``source`` names it in errors."""
    check = RecordChecker(source)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "categories"):
        if key not in data:
            raise ValueError(f"{source}: missing top-level field '{key}' (a list)")
    data.setdefault("annotations", [])
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            kind = type(data[key]).__name__
            raise ValueError(f"{source}: top-level field '{key}': expected a list, got {kind}")
    images = _validate_images(check, data["images"])
    categories = _validate_categories(check, data["categories"])
    _validate_annotations(check, data["annotations"], images, categories)
    return data


def load_coco_json(path: PathLike) -> dict[str, Any]:
    """Read and validate a COCO instances file (see :func:`validate_coco`)."""
    return validate_coco(read_json(path), str(path))



def _is_generic(names: Sequence[str]) -> bool:
    return all(n == f"{_GENERIC_PREFIX}{i}" for i, n in enumerate(names))


def match_class_names(
    class_names: Sequence[str], categories: Sequence[dict[str, Any]], source: str = "dataset"
) -> list[int]:
    """COCO category id for each of ``class_names`` (a model's classes), matched by name.

    A model built with only a class count has generic names ``class_0..class_{K-1}``; when ``K`` equals the
    number of categories those map by index in category-id order (the contiguous order every loader uses).
    Any other name missing from the categories is an error that lists the mismatches.
    """
    by_id = sorted(categories, key=lambda c: c["id"])
    names = [c["name"] for c in by_id]
    if _is_generic(class_names) and len(class_names) == len(by_id) and set(class_names) - set(names):
        return [c["id"] for c in by_id]
    index: dict[str, int] = {}
    duplicated = sorted({n for n in names if names.count(n) > 1})
    for c in by_id:
        index.setdefault(c["name"], c["id"])
    missing = [n for n in class_names if n not in index]
    if missing:
        raise ValueError(
            f"class names {missing} are not among the categories of {source}; its categories are {names}"
        )
    ambiguous = [n for n in class_names if n in duplicated]
    if ambiguous:
        raise ValueError(f"{source}: category names {ambiguous} appear more than once; cannot map by name")
    return [index[n] for n in class_names]
