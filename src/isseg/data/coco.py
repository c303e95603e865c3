"""COCO-format instance segmentation datasets: validated loading, category mapping, image decoding.

A COCO file is checked once, up front, so that a bad record fails with the file, the record, the field and
what was expected, instead of a ``KeyError`` deep inside a training step hours later.

EXIF orientation: images are decoded upright (EXIF orientation applied), as detectron2's ``read_image``
and ``cv2.imread`` do and as photo viewers and annotation tools show them. The JSON's ``width``/``height``
decide when that is ambiguous: if only the stored (un-rotated) pixel grid matches them, the annotations
were evidently drawn on the stored pixels and the image is used as stored (with a warning); if neither
matches, the image is rejected because its annotations cannot be placed.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from isseg.data.masks import segmentation_to_mask
from isseg.sources.decode import check_image_bytes, image_format

PathLike = str | os.PathLike

_GENERIC_PREFIX = "class_"


# --------------------------------------------------------------------------------------------------------
# JSON loading and validation
# --------------------------------------------------------------------------------------------------------


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _all_numbers(values: list[Any]) -> bool:
    """All finite ints / floats (not bools). Fast path for polygons: full COCO has ~40M coordinates."""
    return all(type(v) in (int, float) for v in values) and math.isfinite(sum(values))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _record_name(section: str, index: int, record: Any) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{section}[{index}]" + (f" (id={rid})" if rid is not None else "")


class _Checker:
    """Raises ``ValueError("<file>: <record>: field '<f>': expected <e>, got <v>")``."""

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
    segm: Any, height: int, width: int, check: _Checker, record: str, field: str = "segmentation"
) -> None:
    """Check a COCO ``segmentation`` value: a list of polygons (flat ``[x1, y1, x2, y2, ...]`` lists of
    numbers, even length) or an RLE dict ``{"size": [h, w], "counts": str | list[int]}``.

    Polygons with fewer than 3 points (an even count < 6) are tolerated here because the real COCO 2017
    files contain a few; they cover no area and :func:`usable_polygons` drops them.
    """
    if isinstance(segm, dict):
        size = check.require(segm, record, f"{field}.size", "RLE [height, width]", "size")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            check.fail(record, f"{field}.size", "RLE size [height, width] of 2 integers", size)
        if list(size) != [height, width]:
            check.fail(record, f"{field}.size", f"the image's [height, width] = [{height}, {width}]", size)
        counts = check.require(
            segm, record, f"{field}.counts", "RLE counts: str or list of run lengths", "counts"
        )
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts):
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


def validate_coco(data: Any, source: str) -> dict[str, Any]:
    """Check the structure of a COCO instances file; return it unchanged. ``source`` names it in errors."""
    check = _Checker(source)
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

    images: dict[int, dict[str, Any]] = {}
    for i, img in enumerate(data["images"]):
        rec = _record_name("images", i, img)
        if not isinstance(img, dict):
            check.fail(rec, "<record>", "an object", img)
        iid = check.require(img, rec, "id", "integer image id")
        if not _is_int(iid):
            check.fail(rec, "id", "an integer", iid)
        if iid in images:
            check.fail(rec, "id", "a unique image id (duplicate)", iid)
        name = check.require(img, rec, "file_name", "image file path relative to the image directory")
        if not isinstance(name, str) or not name:
            check.fail(rec, "file_name", "a non-empty string", name)
        for dim in ("width", "height"):
            v = check.require(img, rec, dim, "positive integer pixels")
            if not (_is_number(v) and v > 0 and float(v).is_integer()):
                check.fail(rec, dim, "a positive integer number of pixels", v)
            img[dim] = int(v)
        images[iid] = img

    categories: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        rec = _record_name("categories", i, cat)
        if not isinstance(cat, dict):
            check.fail(rec, "<record>", "an object", cat)
        cid = check.require(cat, rec, "id", "integer category id")
        if not _is_int(cid):
            check.fail(rec, "id", "an integer", cid)
        if cid in categories:
            check.fail(rec, "id", "a unique category id (duplicate)", cid)
        name = check.require(cat, rec, "name", "category name")
        if not isinstance(name, str) or not name:
            check.fail(rec, "name", "a non-empty string", name)
        categories.add(cid)

    ann_ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        rec = _record_name("annotations", i, ann)
        if not isinstance(ann, dict):
            check.fail(rec, "<record>", "an object", ann)
        aid = check.require(ann, rec, "id", "integer annotation id")
        if not _is_int(aid):
            check.fail(rec, "id", "an integer", aid)
        if aid in ann_ids:
            check.fail(rec, "id", "a unique annotation id (duplicate)", aid)
        ann_ids.add(aid)
        iid = check.require(ann, rec, "image_id", "id of an entry of 'images'")
        if not _is_int(iid) or iid not in images:
            check.fail(rec, "image_id", "the id of an entry of 'images'", iid)
        cid = check.require(ann, rec, "category_id", "id of an entry of 'categories'")
        if not _is_int(cid) or cid not in categories:
            check.fail(rec, "category_id", f"one of the category ids {sorted(categories)}", cid)
        bbox = check.require(ann, rec, "bbox", "[x, y, width, height]")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            check.fail(rec, "bbox", "4 numbers [x, y, width, height]", bbox)
        if bbox[2] < 0 or bbox[3] < 0:
            check.fail(rec, "bbox", "width and height >= 0", bbox)
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or not isinstance(crowd, (int, bool)):
            check.fail(rec, "iscrowd", "0 or 1", crowd)
        if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
            check.fail(rec, "area", "a number >= 0", ann["area"])
        segm = check.require(ann, rec, "segmentation", "polygons or RLE")
        img = images[iid]
        validate_segmentation(segm, img["height"], img["width"], check, rec)
    return data


def load_coco_json(path: PathLike) -> dict[str, Any]:
    """Read and validate a COCO instances file (see :func:`validate_coco`)."""
    return validate_coco(read_json(path), str(path))


# --------------------------------------------------------------------------------------------------------
# category mapping
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------


def _pil_to_bgr(image: Any) -> np.ndarray:
    """Any PIL mode -> ``uint8 [H, W, 3]`` BGR. Gray is replicated; alpha is dropped (not composited), as
    ``cv2.imread(IMREAD_COLOR)`` and detectron2's ``convert("RGB")`` do; 16-bit gray keeps its high byte."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image)
        if mode == "F":
            gray = np.clip(arr, 0, 255).astype(np.uint8)
        elif mode.startswith("I;16") or arr.max(initial=0) > 255:
            gray = (arr.astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
        else:
            gray = arr.clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def read_image_bgr(path: PathLike, expected_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, bool]:
    """Decode an image file to ``uint8 [H, W, 3]`` BGR, upright per its EXIF orientation.

    ``expected_hw``: the annotation's (height, width). When only the stored, un-rotated size matches it,
    the image is returned as stored and the second return value is True (EXIF ignored). Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` for an undecodable one or a size mismatch.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    data = _read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as raw:
            raw.load()
            stored_wh = raw.size
            try:
                orientation = raw.getexif().get(0x0112, 1)
                upright = raw if orientation == 1 else ImageOps.exif_transpose(raw)
            except Exception:  # malformed EXIF block: PIL raises assorted errors; use the pixels as stored
                upright = raw
            exif_ignored = False
            if expected_hw is not None and upright.size != (expected_hw[1], expected_hw[0]):
                if stored_wh == (expected_hw[1], expected_hw[0]):
                    upright, exif_ignored = raw, True
                else:
                    raise ValueError(
                        f"{path}: image is {upright.size[1]}x{upright.size[0]} (HxW, EXIF orientation "
                        f"applied; {stored_wh[1]}x{stored_wh[0]} as stored) but the annotation file says "
                        f"{expected_hw[0]}x{expected_hw[1]}"
                    )
            return _pil_to_bgr(upright), exif_ignored
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"cannot decode image file {path}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image file {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise assorted types on corrupt data
        raise ValueError(f"cannot decode image file {path}: {type(exc).__name__}: {exc}") from None


def _read_bytes(path: Path) -> bytes:
    """The file's bytes after the checks every reader shares (missing, unreadable, truncated: see
    :func:`isseg.sources.decode.check_image_bytes`)."""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read image file {path}: {exc.strerror or exc}") from None
    check_image_bytes(data, path)
    return data


def check_image_file(path: PathLike, expected_hw: tuple[int, int] | None = None) -> None:
    """The training pre-flight of one file: present, complete, decodable, and of the annotation's size.

    Faster than :func:`read_image_bgr`: JPEGs are decoded at 1/8 scale (libjpeg still reads every entropy-coded
    byte, so truncation and broken Huffman data are found), PNGs are checked chunk by chunk with their CRCs and
    decoded in full. Raises ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    from PIL import Image

    path = Path(path)
    data = _read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as im:
            stored = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - a malformed EXIF block is ignored by the loader too
                orientation = 1
            if image_format(data) == "jpeg":
                im.draft("RGB", (max(1, stored[0] // 8), max(1, stored[1] // 8)))
            im.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises assorted types on corrupt data
        reason = str(exc) if isinstance(exc, OSError | SyntaxError | ValueError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"cannot decode image file {path}: {reason}") from None
    if expected_hw is not None:
        want = (expected_hw[1], expected_hw[0])
        upright = stored[::-1] if orientation in (5, 6, 7, 8) else stored
        if want not in (stored, upright):
            raise ValueError(
                f"{path}: image is {upright[1]}x{upright[0]} (HxW, EXIF orientation applied; {stored[1]}x{stored[0]} "
                f"as stored) but the annotation file says {expected_hw[0]}x{expected_hw[1]}"
            )


# --------------------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------------------


class CocoDataset(torch.utils.data.Dataset):
    """A COCO-format instance segmentation dataset for training and prediction.

    ``dataset[i]`` -> ``(image, target)``: image ``uint8 [H, W, 3]`` BGR (EXIF orientation applied, see
    the module docstring); target dict:

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

        self._anns: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in data["images"]}
        self.num_without_mask = 0  # annotations whose polygons all have < 3 points (real COCO has a few)
        for ann in data["annotations"]:
            segm = ann["segmentation"]
            if isinstance(segm, list) and not usable_polygons(segm):
                self.num_without_mask += 1
                continue
            if ann["category_id"] in self._label_of:
                self._anns[ann["image_id"]].append(ann)
        if self.num_without_mask:
            warnings.warn(
                f"{self.annotation_file}: {self.num_without_mask} annotation(s) have no polygon with >= 3 "
                "points; they are left out of the targets",
                stacklevel=2,
            )
        images = data["images"]
        if skip_empty:
            images = [img for img in images if any(self._keep(a, img) for a in self._anns[img["id"]])]
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
        See :func:`check_image_file`; ``workers`` threads (the decoders release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        def check(i: int) -> str | None:
            info = self.images[i]
            try:
                check_image_file(self.image_path(i), (info["height"], info["width"]))
            except (FileNotFoundError, ValueError) as exc:
                return str(exc)
            return None

        bad: list[tuple[int, str]] = []
        with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(
            total=len(self), desc="checking images", unit="img", disable=not progress, dynamic_ncols=True
        ) as bar:
            for i, reason in enumerate(pool.map(check, range(len(self)))):
                if reason is not None:
                    bad.append((i, reason))
                bar.update(1)
        return bad

    def drop(self, indices: Sequence[int]) -> None:
        """Leave items out (e.g. the bad images :meth:`preflight` found)."""
        gone = set(indices)
        self.images = [img for i, img in enumerate(self.images) if i not in gone]

    # -- targets ---------------------------------------------------------------------------------------
    def _keep(self, ann: dict[str, Any], img: dict[str, Any]) -> bool:
        if not self.train:
            return True
        if ann.get("iscrowd", 0):
            return False
        x, y, w, h = ann["bbox"]
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, float(img["width"])), min(y + h, float(img["height"]))
        return x2 - x1 >= 1 and y2 - y1 >= 1

    def load_target(self, i: int) -> dict[str, Any]:
        """The target dict of item ``i`` (see the class docstring); no image decoding."""
        img = self.images[i]
        h, w = img["height"], img["width"]
        anns = [a for a in self._anns[img["id"]] if self._keep(a, img)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        if self.train:
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        masks = np.zeros((len(anns), h, w), dtype=np.uint8)
        for k, a in enumerate(anns):
            segm = a["segmentation"]
            masks[k] = segmentation_to_mask(usable_polygons(segm) if isinstance(segm, list) else segm, h, w)
        return {
            "boxes": boxes.to(torch.float32),
            "labels": torch.tensor([self._label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "image_id": int(img["id"]),
            "orig_size": (h, w),
        }

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
