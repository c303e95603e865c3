""""Same detections", measured: the equality check of every path test (backends, CLI, reference libraries).

Two ``Detections`` of one image are the same when, matched in score order, every pair has the same label,
boxes within ``box_tol`` px, scores within ``score_tol`` and mask IoU >= ``mask_iou``, or, for a small mask,
at most 2 differing pixels or differing pixels only on the mask's border (where the pasted probability crosses
the threshold, so float rounding may flip them; counted as ``border_only``). Float rounding of two
implementations can reorder detections whose scores tie within ``score_tol``, and can move a detection across
a cut (the score threshold, the 100 kept): an unmatched detection is accepted only when its score is within
``score_tol`` of the other list's last score or of ``score_thresh``, and the report says how many there were.
torchvision's mask paste (``mask_paste="torchvision"``) truncates the grown box to integers and resizes the mask to
that size, so two boxes within rounding of each other on either side of an integer give masks resized one pixel
apart: such a pair (its integer boxes differ, or a grown coordinate lies within the pair's box difference, plus a
record's rounding, of an integer) is accepted whatever its mask IoU, and counted as ``at_boundary``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Equality:
    count_a: int
    count_b: int
    matched: int = 0
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    min_mask_iou: float = 1.0  # over the pairs compared by IoU
    border_only: int = 0  # masks below ``mask_iou`` whose differing pixels all lie on the mask border
    at_cut: int = 0  # unmatched detections whose score sits at a cut (accepted)
    at_boundary: int = 0  # torchvision paste: the integer-truncated boxes differ (masks not compared)
    # an unmatched pair of the same label with overlapping boxes (IoU >= 0.5): a discrete choice upstream (an RPN
    # NMS decision at the 0.7 IoU threshold, the 1000th proposal, a RoI's pyramid level) that float rounding
    # tipped, so another proposal became this detection; allowed only up to ``discontinuities``
    jumps: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (f"{self.count_a} vs {self.count_b} detections, {self.matched} matched: boxes within "
                f"{self.max_box_diff:.2e} px, scores within {self.max_score_diff:.2e}, mask IoU >= "
                f"{self.min_mask_iou:.4f} ({self.border_only} small masks differing on their border only, "
                f"{self.at_boundary} boxes at an integer boundary), {self.at_cut} at a cut, "
                f"{self.jumps} score jump(s)")
        return head + ("" if self.ok else "; PROBLEMS: " + "; ".join(self.problems[:5]))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    inter = int(np.logical_and(a, b).sum())
    union = int(np.logical_or(a, b).sum())
    return (inter / union if union else 1.0), union - inter


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - w * h
    return w * h / union if union > 0 else 1.0


def _on_border(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the pixels where masks ``a`` and ``b`` differ are all on the border of ``a`` (inside within one pixel
    of its outside, or outside within one pixel of its inside) and are at most a third of that border: a few flips
    at the threshold, not a systematically grown or shrunk mask."""
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    u8 = a.astype(np.uint8)
    band = cv2.dilate(u8, kernel).astype(bool) & ~cv2.erode(u8, kernel).astype(bool)
    diff = a != b
    return bool(np.all(band[diff])) and int(diff.sum()) * 3 <= int(band.sum())


RECORD_ROUNDING = 1e-3
"""px: how far a box read back from a record (rounded to 3 decimals) may be from the one its mask was pasted into."""


def _grown_box(box: np.ndarray, m: int = 28) -> np.ndarray:
    """float32 [4]: the box torchvision pastes an ``m`` x ``m`` mask into (grown by one cell), before truncation."""
    x0, y0, x1, y1 = (np.float32(v) for v in box)
    s = np.float32((m + 2) / m)
    hw, hh = (x1 - x0) * np.float32(0.5) * s, (y1 - y0) * np.float32(0.5) * s
    cx, cy = (x1 + x0) * np.float32(0.5), (y1 + y0) * np.float32(0.5)
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)


def _paste_ambiguous(a: np.ndarray, b: np.ndarray, diff: float, m: int = 28) -> bool:
    """Whether torchvision's truncation of the grown boxes of ``a`` and ``b`` (boxes ``diff`` px apart) may differ:
    their integer boxes differ, or a coordinate of ``a``'s grown box is within that difference (plus a record's
    rounding, grown as the box is) of an integer, where the other implementation's unrounded box may fall on the
    other side (seen on an AVX2-only AMD EPYC: torchvision's box grew to a y1 of exactly 192.0, and isseg's mask,
    pasted from its own box, had one row fewer)."""
    ga, gb = _grown_box(a, m), _grown_box(b, m)
    if tuple(int(v) for v in ga) != tuple(int(v) for v in gb):
        return True
    tol = (diff + RECORD_ROUNDING) * (m + 2) / m
    return bool(np.any(np.abs(ga - np.round(ga)) <= tol))


def same_detections(a, b, box_tol: float = 0.05, score_tol: float = 1e-4, mask_iou: float = 0.98,  # noqa: ANN001
                    score_thresh: float = 0.05, mask_paste: str = "grid_sample",
                    discontinuities: int = 0) -> Equality:
    """Compare ``a`` and ``b`` (``Detections``, or anything with boxes / scores / labels / masks arrays)."""
    sa, sb = np.asarray(a.scores, np.float64), np.asarray(b.scores, np.float64)
    eq = Equality(len(sa), len(sb))
    used = np.zeros(len(sb), bool)
    unmatched_a = []
    for i in np.argsort(-sa, kind="stable"):
        # candidates of b: same label, score within tolerance, not used; the closest box wins
        cand = np.nonzero(~used & (np.asarray(b.labels) == a.labels[i]) & (np.abs(sb - sa[i]) <= score_tol))[0]
        if len(cand) == 0:
            unmatched_a.append(i)
            continue
        diffs = np.abs(np.asarray(b.boxes)[cand] - np.asarray(a.boxes)[i]).max(1)
        j = cand[int(np.argmin(diffs))]
        used[j] = True
        eq.matched += 1
        eq.max_box_diff = max(eq.max_box_diff, float(diffs.min()))
        eq.max_score_diff = max(eq.max_score_diff, float(abs(sb[j] - sa[i])))
        if diffs.min() > box_tol:
            eq.problems.append(f"box of {a.labels[i]}@{sa[i]:.4f} differs by {diffs.min():.3f} px")
        if a.masks is not None and b.masks is not None:
            iou, differing = _mask_iou(a.masks[i], b.masks[j])
            if iou < mask_iou:
                if differing <= 2 or _on_border(a.masks[i], b.masks[j]):
                    eq.border_only += 1
                elif mask_paste == "torchvision" and _paste_ambiguous(a.boxes[i], b.boxes[j], float(diffs.min())):
                    eq.at_boundary += 1
                else:
                    eq.problems.append(f"mask of {a.labels[i]}@{sa[i]:.4f}: IoU {iou:.3f} ({differing} pixels)")
            else:
                eq.min_mask_iou = min(eq.min_mask_iou, iou)
    free_b = np.nonzero(~used)[0]
    for i in list(unmatched_a):
        near = [j for j in free_b if not used[j] and b.labels[j] == a.labels[i]
                and _box_iou(np.asarray(b.boxes[j]), np.asarray(a.boxes[i])) >= 0.5]
        if near and eq.jumps < discontinuities:
            used[near[0]] = True
            unmatched_a.remove(i)
            eq.jumps += 1
    cuts_a = [score_thresh] + ([float(sa.min())] if len(sa) else [])
    cuts_b = [score_thresh] + ([float(sb.min())] if len(sb) else [])
    for side, idx, scores, cuts in (("a", unmatched_a, sa, cuts_b), ("b", np.nonzero(~used)[0], sb, cuts_a)):
        for i in idx:
            if any(abs(scores[i] - c) <= score_tol for c in cuts):
                eq.at_cut += 1
            else:
                eq.problems.append(f"detection {i} of {side} (score {scores[i]:.5f}) has no partner")
    return eq
