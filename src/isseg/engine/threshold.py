"""The confidence threshold to deploy: the score above which a model's detections best balance precision and
recall (the maximum F1) on a validation set, overall and per class.

The sweep is the one OpenVINO Training Extensions uses to choose a model's ``confidence_threshold``:
thresholds 0.025, 0.050, ..., 0.975, a detection counting as correct at box IoU >= 0.5. The matching is
COCOeval's: per image and class, detections best score first each take the unmatched ground truth with the
highest IoU >= 0.5 (a true positive), else a crowd region they cover (ignored), else they are false positives.
Because each detection's outcome depends only on the better-scoring ones, one matching of all detections
serves every threshold: the detections kept at threshold ``t`` are a prefix of the score order.

Overall F1 pools the true positives, false positives and misses of all classes (micro average); the best
threshold is the lowest one reaching the maximum F1. The result is what ``isseg evaluate`` and validation
during training report, what a training checkpoint stores (``confidence_threshold``) and what
``isseg export`` writes into the model as Model API's ``confidence_threshold``
(:func:`checkpoint_threshold` reads it back).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLDS = tuple(round(0.025 * i, 3) for i in range(1, 40))  # 0.025 .. 0.975
IOU = 0.5


def match_detections(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], image_ids: Sequence[int],
                     iou_threshold: float = IOU) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray],
                                                          dict[int, int]]:
    """Per category id: the detections' scores float64 [D], their outcome int8 [D] (1 true positive,
    0 false positive, -1 ignored: it covers a crowd region) and the number of non-crowd ground-truth
    instances, over ``image_ids``. Boxes are COCO ``[x, y, w, h]``."""
    from pycocotools import mask as mask_utils

    ids = {int(i) for i in image_ids}
    gts: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    instances: dict[int, int] = {}
    for a in gt["annotations"]:
        if int(a["image_id"]) in ids:
            gts.setdefault((int(a["image_id"]), int(a["category_id"])), []).append(a)
            if not a.get("iscrowd", 0):
                instances[int(a["category_id"])] = instances.get(int(a["category_id"]), 0) + 1
    dts: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for r in results:
        if int(r["image_id"]) in ids:
            dts.setdefault((int(r["image_id"]), int(r["category_id"])), []).append(r)
    scores: dict[int, list[np.ndarray]] = {}
    outcome: dict[int, list[np.ndarray]] = {}
    for (image_id, cat), found in dts.items():
        found = sorted(found, key=lambda r: -float(r["score"]))
        truth = gts.get((image_id, cat), [])
        result = np.zeros(len(found), np.int8)
        if truth:
            crowd = np.array([bool(a.get("iscrowd", 0)) for a in truth])
            ious = np.asarray(mask_utils.iou([list(map(float, r["bbox"])) for r in found],
                                             [list(map(float, a["bbox"])) for a in truth], crowd.astype(np.uint8)))
            taken = np.zeros(len(truth), bool)
            for d in range(len(found)):
                free = np.where(~crowd & ~taken & (ious[d] >= iou_threshold), ious[d], -1.0)
                if free.max() >= 0:
                    taken[int(free.argmax())] = True
                    result[d] = 1
                elif (crowd & (ious[d] >= iou_threshold)).any():
                    result[d] = -1
        scores.setdefault(cat, []).append(np.array([float(r["score"]) for r in found]))
        outcome.setdefault(cat, []).append(result)
    cats = set(scores) | set(instances)
    return ({c: np.concatenate(scores.get(c, [np.zeros(0)])) for c in cats},
            {c: np.concatenate(outcome.get(c, [np.zeros(0, np.int8)])) for c in cats},
            {c: instances.get(c, 0) for c in cats})


def _counts(scores: np.ndarray, outcome: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives [T] among the detections scoring >= each threshold."""
    kept = scores[None, :] >= thresholds[:, None]  # [T, D]
    return (kept & (outcome == 1)).sum(1), (kept & (outcome == 0)).sum(1)


def _best(tp: np.ndarray, fp: np.ndarray, n_gt: int, thresholds: np.ndarray) -> dict[str, Any]:
    """The curve and its best point (the lowest threshold of maximum F1; None without ground truth)."""
    denom = 2 * tp + fp + (n_gt - tp)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = tp / n_gt if n_gt else np.zeros_like(f1)
    curve = {"thresholds": thresholds.tolist(), "f1": f1.tolist(), "precision": precision.tolist(),
             "recall": recall.tolist()}
    if n_gt == 0:
        return {"threshold": None, "f1": None, "precision": None, "recall": None, "curve": curve}
    i = int(np.argmax(f1))  # the first maximum: the lowest threshold
    return {"threshold": float(thresholds[i]), "f1": float(f1[i]), "precision": float(precision[i]),
            "recall": float(recall[i]), "curve": curve}


def best_f1_threshold(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], image_ids: Sequence[int],
                      thresholds: Sequence[float] = THRESHOLDS, iou_threshold: float = IOU) -> dict[str, Any]:
    """The best-F1 confidence threshold of COCO ``results`` against ``gt`` over ``image_ids``.

    Returns ``{"threshold", "f1", "precision", "recall"}`` at the best overall point (None values when the
    images hold no ground truth), ``"curve"`` (those four at every threshold), ``"iou"``, ``"iou_type": "bbox"``
    and ``"per_class"``: one row per category with ground truth or detections, ``{"class", "category_id",
    "instances", "threshold", "f1", "precision", "recall"}`` (its own best point).
    """
    t = np.asarray(thresholds, np.float64)
    if t.ndim != 1 or t.size == 0 or (t <= 0).any() or (t > 1).any():
        raise ValueError(f"thresholds must be a non-empty list of numbers in (0, 1], got {list(thresholds)}")
    scores, outcome, instances = match_detections(gt, results, image_ids, iou_threshold)
    names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
    tp_all, fp_all = np.zeros(t.size, np.int64), np.zeros(t.size, np.int64)
    rows = []
    for cat in sorted(scores):
        tp, fp = _counts(scores[cat], outcome[cat], t)
        tp_all += tp
        fp_all += fp
        best = _best(tp, fp, instances[cat], t)
        rows.append({"class": names.get(cat, str(cat)), "category_id": cat, "instances": instances[cat],
                     **{k: best[k] for k in ("threshold", "f1", "precision", "recall")}})
    overall = _best(tp_all, fp_all, sum(instances.values()), t)
    return {**overall, "iou": iou_threshold, "iou_type": "bbox", "per_class": rows}


def format_threshold(report: Mapping[str, Any]) -> str:
    """A few lines for a terminal: the best threshold overall and per class."""
    if report.get("threshold") is None:
        return "best-F1 confidence threshold: n/a (no ground truth)"
    lines = [f"best-F1 confidence threshold (box IoU >= {report['iou']:g}): {report['threshold']:.3f} "
             f"(F1 {report['f1']:.3f}, precision {report['precision']:.3f}, recall {report['recall']:.3f})"]
    for row in report.get("per_class", []):
        if row["threshold"] is not None:
            lines.append(f"  {row['class']}: {row['threshold']:.3f} (F1 {row['f1']:.3f}, {row['instances']} "
                         "instances)")
    return "\n".join(lines)


def checkpoint_threshold(path: str | os.PathLike) -> float | None:
    """The ``confidence_threshold`` an isseg training checkpoint stores (its best-F1 threshold on the validation
    set), or None: not a checkpoint file, no such entry, unreadable. Only that entry is read (``mmap``), so a
    large checkpoint costs little."""
    from isseg.weights.checkpoint import stored_entry

    value = stored_entry(Path(path), "confidence_threshold")
    if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
        return float(value)
    return None
