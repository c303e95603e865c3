"""COCO box and mask AP: the 12 standard numbers, computed by faster-coco-eval (pycocotools as fallback).

Both libraries implement the same protocol; faster-coco-eval does the matching in C++ and is several
times faster, which matters when evaluating often during training. ``tests/test_coco_eval.py`` checks that
the two give the same numbers on real COCO data.

Result records are validated and normalized here rather than by the libraries' ``loadRes``, because
``loadRes`` asserts without saying which record is wrong and cannot take an empty result list. The
normalization is the one ``loadRes`` does (ids from 1, ``iscrowd=0``, ``area`` of the box for ``bbox``,
``area`` and ``bbox`` of the mask for ``segm``). For ``segm`` the record's box is not used, as detectron2
does: with a box present ``loadRes`` would take the box's area for the small/medium/large split of
*mask* AP, which is not what the COCO protocol means.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isseg.data.coco_json import (
    RecordChecker,
    is_int,
    is_number,
    load_coco_json,
    read_json,
    validate_coco,
    validate_segmentation,
)
from isseg.data.masks import masks_to_rles, rle_area, rle_to_bbox, segmentation_to_rle
from isseg.model.masks import InstanceMasks

STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip

_STAT_LABELS: tuple[str, ...] = (
    "@[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "@[IoU=0.50      | area=   all | maxDets=100]",
    "@[IoU=0.75      | area=   all | maxDets=100]",
    "@[IoU=0.50:0.95 | area= small | maxDets=100]",
    "@[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "@[IoU=0.50:0.95 | area= large | maxDets=100]",
    "@[IoU=0.50:0.95 | area=   all | maxDets=  1]",
    "@[IoU=0.50:0.95 | area=   all | maxDets= 10]",
    "@[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "@[IoU=0.50:0.95 | area= small | maxDets=100]",
    "@[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "@[IoU=0.50:0.95 | area= large | maxDets=100]",
)

IOU_TYPES = ("bbox", "segm")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def detections_to_coco(detections: Any, image_id: int, category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO result records of one image.

    ``detections``: anything with ``boxes`` ``[N, 4]`` (x1, y1, x2, y2) pixels, ``scores`` ``[N]``,
    ``labels`` ``[N]`` contiguous 0-based, ``masks`` bool ``[N, H, W]`` or None (torch or numpy), e.g.
    ``isseg.Detections``. ``category_ids[label]`` is the COCO category id of a label. Records get ``bbox``
    as ``[x, y, w, h]`` and, with masks, ``segmentation`` as compressed RLE with ``counts`` a str.
    """
    boxes = _to_numpy(detections.boxes).astype(np.float64).reshape(-1, 4)
    scores = _to_numpy(detections.scores).astype(np.float64).reshape(-1)
    labels = _to_numpy(detections.labels).astype(np.int64).reshape(-1)
    masks = getattr(detections, "masks", None)
    n = len(boxes)
    if len(scores) != n or len(labels) != n:
        counts = f"{n} boxes, {len(scores)} scores, {len(labels)} labels"
        raise ValueError(f"detections of image {image_id}: {counts}")
    bad = labels[(labels < 0) | (labels >= len(category_ids))]
    if len(bad):
        raise ValueError(
            f"detections of image {image_id}: label {int(bad[0])} is outside the "
            f"{len(category_ids)} mapped classes"
        )
    rles: list[dict[str, Any]] | None = None
    if isinstance(masks, InstanceMasks):  # encoded from its crops
        if len(masks) != n:
            raise ValueError(f"detections of image {image_id}: masks {masks.shape} for {n} boxes")
        rles = masks_to_rles(masks)
    elif masks is not None:
        masks = _to_numpy(masks)
        if masks.ndim != 3 or masks.shape[0] != n:
            raise ValueError(f"detections of image {image_id}: masks {masks.shape} for {n} boxes")
        rles = masks_to_rles(masks)  # non-zero is the object, as in the records
    out: list[dict[str, Any]] = []
    for k in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[k])
        record: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(labels[k])]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(scores[k]),
        }
        if rles is not None:
            record["segmentation"] = rles[k]
        out.append(record)
    return out


def _load_results(results: Sequence[Mapping[str, Any]] | str | os.PathLike) -> tuple[list[Any], str]:
    if isinstance(results, (str, os.PathLike)):
        data = read_json(results)
        source = str(results)
    else:
        data, source = results, "results"
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of result records, got {type(data).__name__}")
    return data, source


def _normalize_results(
    records: list[Any], gt: dict[str, Any], iou_types: Sequence[str], source: str
) -> list[dict[str, Any]]:
    """Validate result records against the ground truth; return copies with a float ``score``, a list
    ``bbox`` and a compressed-RLE ``segmentation`` (``counts`` str) for the requested IoU types."""
    check = RecordChecker(source)
    images = {img["id"]: img for img in gt["images"]}
    categories = {c["id"] for c in gt["categories"]}
    out: list[dict[str, Any]] = []
    for k, r in enumerate(records):
        rec = f"results[{k}]"
        if not isinstance(r, Mapping):
            check.fail(rec, "<record>", "an object", r)
        iid = check.require(r, rec, "image_id", "id of an image of the ground truth")
        if not is_int(iid) or iid not in images:
            check.fail(rec, "image_id", "the id of an image of the ground truth", iid)
        rec = f"results[{k}] (image_id={iid})"
        cid = check.require(r, rec, "category_id", "id of a category of the ground truth")
        if not is_int(cid) or cid not in categories:
            check.fail(rec, "category_id", f"one of the ground truth's categories {sorted(categories)}", cid)
        score = check.require(r, rec, "score", "a confidence number")
        if not is_number(score):
            check.fail(rec, "score", "a finite number", score)
        norm: dict[str, Any] = {"image_id": iid, "category_id": cid, "score": float(score)}
        if "bbox" in iou_types:
            bbox = check.require(r, rec, "bbox", "[x, y, width, height] for box AP")
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
                check.fail(rec, "bbox", "4 numbers [x, y, width, height]", bbox)
            if bbox[2] < 0 or bbox[3] < 0:
                check.fail(rec, "bbox", "width and height >= 0", bbox)
            norm["bbox"] = [float(v) for v in bbox]
        if "segm" in iou_types:
            segm = check.require(r, rec, "segmentation", "an RLE or polygons for mask AP")
            img = images[iid]
            if isinstance(segm, dict) and isinstance(segm.get("counts"), bytes):
                segm = {**segm, "counts": segm["counts"].decode("ascii")}
            validate_segmentation(segm, img["height"], img["width"], check, rec)
            rle = segmentation_to_rle(segm, img["height"], img["width"])
            norm["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        out.append(norm)
    return out


def _detection_records(results: list[dict[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """What ``loadRes`` makes of the results for one IoU type."""
    dts = []
    for k, r in enumerate(results):
        d = {"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"]}
        if iou_type == "bbox":
            x, y, w, h = r["bbox"]
            d.update(bbox=[x, y, w, h], area=w * h)
        else:
            segm = r["segmentation"]
            d.update(segmentation=dict(segm), area=float(rle_area(segm)), bbox=rle_to_bbox(segm))
        d.update(id=k + 1, iscrowd=0)
        dts.append(d)
    return dts


def _summarize(
    backend: str, gt_api: Any, dts: list[dict[str, Any]], iou_type: str, image_ids: list[int]
) -> Any:
    """Run COCOeval (evaluate, accumulate, summarize) and return the evaluator: ``.stats`` and ``.eval``."""
    gt = gt_api.dataset
    dt_data = {"images": gt["images"], "categories": copy.deepcopy(gt["categories"]), "annotations": dts}
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        dt_api = COCO()
        dt_api.dataset = dt_data
        dt_api.createIndex()
        evaluator = COCOeval_faster(gt_api, dt_api, iouType=iou_type, print_function=logging.debug)
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return evaluator
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the table
        dt_api = COCO()
        dt_api.dataset = dt_data
        dt_api.createIndex()
        evaluator = COCOeval(gt_api, dt_api, iouType=iou_type)
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _gt_api(backend: str, gt: dict[str, Any]) -> Any:
    if backend == "faster":
        from faster_coco_eval import COCO

        api = COCO(print_function=logging.debug)
    else:
        from pycocotools.coco import COCO

        api = COCO()
    api.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def pick_backend(backend: str) -> str:
    """The COCOeval implementation ``backend`` names: ``"faster"`` or ``"pycocotools"`` as given; ``"auto"`` is
    faster-coco-eval when it imports, else pycocotools. ValueError for any other name."""
    if backend not in ("auto", "faster", "pycocotools"):
        raise ValueError(f"backend must be 'auto', 'faster' or 'pycocotools', got {backend!r}")
    if backend != "auto":
        return backend
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return "pycocotools"
    return "faster"


def coco_eval(
    annotation_json_path: str | os.PathLike | dict[str, Any],
    results: Sequence[Mapping[str, Any]] | str | os.PathLike,
    iou_types: Iterable[str] = IOU_TYPES,
    image_ids: Iterable[int] | None = None,
    backend: str = "auto",
    evaluators: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """The 12 COCO numbers per IoU type: ``{"bbox": {"AP": .., "AP50": .., ..., "ARl": ..}, "segm": {...}}``.

    ``annotation_json_path``: the ground truth (a COCO instances file, or its already-parsed dict, which
    is not modified). ``results``: COCO result records (``image_id``, ``category_id``, ``score``, ``bbox``
    ``[x, y, w, h]`` for box AP, ``segmentation`` RLE for mask AP) or a JSON file of them; an empty list
    scores 0. ``image_ids``: evaluate only these images (default: all of the ground truth), e.g. when
    only part of the set was predicted. Values are fractions in 0..1; -1 where COCO defines none (no
    ground truth in that area range). A bad record raises ``ValueError`` naming it. ``evaluators``: a dict
    that receives the COCOeval object of each IoU type, whose ``eval["precision"]`` / ``eval["recall"]``
    arrays give per-class numbers consistent with these (``isseg.engine.analysis``).
    """
    iou_types = tuple(iou_types)
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}")
    if isinstance(annotation_json_path, dict):
        gt = validate_coco(copy.deepcopy(annotation_json_path), "ground truth")
    else:
        gt = load_coco_json(Path(annotation_json_path))
    records, source = _load_results(results)
    normalized = _normalize_results(records, gt, iou_types, source)
    all_ids = {img["id"] for img in gt["images"]}
    if image_ids is None:
        ids = sorted(all_ids)
    else:
        ids = sorted({int(i) for i in image_ids})
        extra = [i for i in ids if i not in all_ids]
        if extra:
            raise ValueError(f"image_ids not in the ground truth: {extra[:10]}")
    chosen = pick_backend(backend)
    gt_api = _gt_api(chosen, gt)
    out: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        evaluator = _summarize(chosen, gt_api, _detection_records(normalized, iou_type), iou_type, ids)
        if evaluators is not None:
            evaluators[iou_type] = evaluator
        out[iou_type] = {name: float(v) for name, v in zip(STAT_NAMES, list(evaluator.stats)[:12])}
    return out


def format_coco_table(stats: Mapping[str, Mapping[str, float]]) -> str:
    """The 12 COCO numbers as a text table, one column per IoU type (``box``, ``mask``); -1 prints n/a."""
    types = [t for t in IOU_TYPES if t in stats]
    header_names = {"bbox": "box", "segm": "mask"}
    width = max(len(s) for s in _STAT_LABELS)
    lines = [f"{'':<6}{'':<{width}}" + "".join(f"{header_names[t]:>8}" for t in types)]
    for name, label in zip(STAT_NAMES, _STAT_LABELS):
        cells = []
        for t in types:
            v = stats[t].get(name)
            cells.append(f"{'n/a':>8}" if v is None or v < 0 else f"{v:8.3f}")
        lines.append(f"{name:<6}{label:<{width}}" + "".join(cells))
    return "\n".join(lines)
