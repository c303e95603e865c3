"""Similarity between tracks and detections, and the optimal one-to-one assignment.

Masks are compared as box crops: each mask is kept as the part of it inside its box (a :class:`MaskCrop`),
and the overlap of two masks is counted only on the intersection of their two rectangles, so the cost of a
pair is the size of that intersection, never of the frame. Only pairs whose boxes overlap are compared at
all; a pair of different classes is worth ``class_weight`` times as much as the same pair of one class
(a detector's class of an object may flip from frame to frame). :func:`duplicates` finds the detections that
are another detection of an object already accounted for (often of another class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

_count = np.count_nonzero


@dataclass
class MaskCrop:
    """A mask cut to a rectangle: ``mask`` bool [h, w] whose pixel (0, 0) is frame pixel (x0, y0); ``area`` is
    its number of True pixels."""

    mask: np.ndarray
    x0: int
    y0: int
    area: int

    def moved(self, dx: int, dy: int) -> MaskCrop:
        """The same mask shifted by (dx, dy) pixels (no copy)."""
        return MaskCrop(self.mask, self.x0 + dx, self.y0 + dy, self.area)


def crop_mask(mask: np.ndarray, box: np.ndarray) -> MaskCrop:
    """The part of a full-frame mask (bool [H, W]) inside ``box`` (x1, y1, x2, y2), widened to whole pixels and
    clipped to the frame; a view, not a copy."""
    h, w = mask.shape
    bx0, by0, bx1, by1 = (float(v) for v in box)
    x0 = min(max(math.floor(bx0), 0), w)
    y0 = min(max(math.floor(by0), 0), h)
    x1 = min(max(math.ceil(bx1), x0), w)
    y1 = min(max(math.ceil(by1), y0), h)
    crop = mask[y0:y1, x0:x1]
    return MaskCrop(crop, x0, y0, int(_count(crop)))


def crop_masks(masks: np.ndarray, boxes: np.ndarray) -> list[MaskCrop]:
    """:func:`crop_mask` of each of ``masks`` (bool [N, H, W]: an array or an ``InstanceMasks``) at ``boxes``
    (float [N, 4]), rectangles computed for all at once."""
    n, h, w = masks.shape
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(b[:, 0]), 0, w).astype(int)
    y0 = np.clip(np.floor(b[:, 1]), 0, h).astype(int)
    x1 = np.clip(np.ceil(b[:, 2]), x0, w).astype(int).tolist()
    y1 = np.clip(np.ceil(b[:, 3]), y0, h).astype(int).tolist()
    out = []
    for i, (xa, ya, xb, yb) in enumerate(zip(x0.tolist(), y0.tolist(), x1, y1)):
        crop = masks[i, ya:yb, xa:xb]
        out.append(MaskCrop(crop, xa, ya, int(_count(crop))))
    return out


def crop_iou(a: MaskCrop, b: MaskCrop) -> float:
    """IoU of two cropped masks, counting the overlap on the intersection of their rectangles only."""
    if a.area == 0 or b.area == 0:
        return 0.0
    ax, ay, bx, by = a.x0, a.y0, b.x0, b.y0
    (ah, aw), (bh, bw) = a.mask.shape, b.mask.shape
    x0, y0 = (ax if ax > bx else bx), (ay if ay > by else by)
    x1 = min(ax + aw, bx + bw)
    y1 = min(ay + ah, by + bh)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    inter = int(_count(a.mask[y0 - ay:y1 - ay, x0 - ax:x1 - ax] & b.mask[y0 - by:y1 - by, x0 - bx:x1 - bx]))
    return inter / (a.area + b.area - inter)


def crop_overlap(a: MaskCrop, b: MaskCrop) -> float:
    """The part of the smaller of two cropped masks that the other covers (intersection over the smaller)."""
    if a.area == 0 or b.area == 0:
        return 0.0
    ax, ay, bx, by = a.x0, a.y0, b.x0, b.y0
    (ah, aw), (bh, bw) = a.mask.shape, b.mask.shape
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + aw, bx + bw), min(ay + ah, by + bh)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    inter = int(_count(a.mask[y0 - ay:y1 - ay, x0 - ax:x1 - ax] & b.mask[y0 - by:y1 - by, x0 - bx:x1 - bx]))
    return inter / min(a.area, b.area)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 [A, B] IoU of boxes a [A, 4] and b [B, 4] (x1, y1, x2, y2)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def similarity(pred_boxes: np.ndarray, track_labels: np.ndarray, track_crops: list[MaskCrop | None],
               det_boxes: np.ndarray, det_labels: np.ndarray, det_crops: list[MaskCrop | None],
               mask_weight: float, class_weight: float = 0.0, at_least: float = 0.0) -> np.ndarray:
    """float32 [T, D] similarity in [0, 1] of T tracks to D detections; -1 where they cannot match.

    Box IoU of each track's predicted box with each detection's box; where both sides have a non-empty mask
    crop, ``(1 - mask_weight) * box IoU + mask_weight * mask IoU`` instead (the track's crop already moved
    to its predicted place). Pairs of different classes get ``class_weight`` times that, or -1 where
    ``class_weight`` is 0. Mask IoU is computed only for pairs that can match and whose boxes overlap, and
    not for pairs that could not reach ``at_least`` even with a mask IoU of 1 (they get -1).
    """
    sim = box_iou(pred_boxes, det_boxes)
    same = track_labels[:, None] == det_labels[None, :]
    best = np.where(same, 1.0, class_weight) * ((1 - mask_weight) * sim + mask_weight)
    sim[(best < at_least) | (~same if class_weight <= 0 else False)] = -1.0
    if mask_weight > 0:
        for t, d in zip(*np.nonzero(sim > 0)):
            tc, dc = track_crops[t], det_crops[d]
            if tc is not None and dc is not None and tc.area > 0 and dc.area > 0:
                sim[t, d] = (1 - mask_weight) * sim[t, d] + mask_weight * crop_iou(tc, dc)
    if class_weight > 0:
        sim[~same & (sim > 0)] *= class_weight  # -1 (cannot match) stays -1
    return sim


def duplicates(boxes: np.ndarray, crops: list[MaskCrop | None], kept: list[int], candidates: list[int],
               threshold: float) -> list[int]:
    """The ``candidates`` (indices into ``boxes`` float [N, 4] and ``crops``, best first) that duplicate a
    detection of ``kept`` or a better candidate that is not itself a duplicate, whatever the classes: the
    other's mask covers at least ``threshold`` of the smaller mask (:func:`crop_overlap`; so a detection of
    a part of an object is one too), or, where either has no mask, box IoU is at least ``threshold``. Two
    objects, one half hidden behind the other, are not: their visible masks hardly overlap. Greedy, like
    non-maximum suppression."""
    if not candidates or threshold > 1:
        return []
    order = list(kept) + list(candidates)
    iou = box_iou(boxes[order], boxes[order])
    keep = list(range(len(kept)))
    dup = []
    for k in range(len(kept), len(order)):
        hit = False
        for j in keep:
            if iou[k, j] <= 0:
                continue
            a, b = crops[order[k]], crops[order[j]]
            both = a is not None and b is not None and a.area > 0 and b.area > 0
            if (crop_overlap(a, b) if both else iou[k, j]) >= threshold:  # type: ignore[arg-type]
                hit = True
                break
        if hit:
            dup.append(order[k])
        else:
            keep.append(k)
    return dup


def assign(sim: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one matching of rows to columns with the largest total similarity among pairs with
    ``sim >= threshold``; returns (rows int64 [M], cols int64 [M])."""
    valid = sim >= threshold
    rows_any, cols_any = valid.any(1), valid.any(0)
    if not rows_any.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ri, ci = np.nonzero(rows_any)[0], np.nonzero(cols_any)[0]
    sub = sim[np.ix_(ri, ci)]
    n, m = len(ri), len(ci)
    # one dummy column per row, at the cost of leaving it unmatched: the total cost is then the number of rows
    # less the matched similarity, so two weak pairs never beat one strong pair (without them, every row that
    # can be matched is, and a swap of two tracks could win over the right match of one)
    cost = np.full((n, m + n), 1e6)
    cost[:, :m] = np.where(sub >= threshold, 1.0 - sub, 1e6)
    cost[np.arange(n), m + np.arange(n)] = 1.0
    r, c = linear_sum_assignment(cost)
    ok = (c < m) & (cost[r, c] < 1e6)
    return ri[r[ok]].astype(np.int64), ci[c[ok]].astype(np.int64)
