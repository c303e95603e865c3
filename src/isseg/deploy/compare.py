"""Agreement of two sets of detections of the same image (backends, precisions, export vs PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isseg.model.detections import Detections


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, 4] x [M, 4] -> [N, M] IoU."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter / union) if union else 1.0


@dataclass
class Agreement:
    """``matched``: detections of ``a`` with a same-label partner in ``b`` at box IoU >= ``iou``."""

    count_a: int
    count_b: int
    matched: int
    box_iou: float  # mean over the matches
    mask_iou: float  # mean over the matches (1.0 when there are no masks)
    score_diff: float  # max |score_a - score_b| over the matches

    @property
    def recall(self) -> float:
        """Share of ``a``'s detections found in ``b`` (1.0 when ``a`` has none)."""
        return self.matched / self.count_a if self.count_a else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.count_b if self.count_b else 1.0

    def __str__(self) -> str:
        return (f"{self.matched}/{self.count_a} matched ({self.count_b} in b), box IoU {self.box_iou:.3f}, "
                f"mask IoU {self.mask_iou:.3f}, max score diff {self.score_diff:.4f}")


def compare(a: Detections, b: Detections, iou: float = 0.5, min_score: float = 0.0) -> Agreement:
    """Greedy matching in ``a``'s score order: each detection takes the best unmatched same-label one of ``b``."""
    ka = np.nonzero(a.scores >= min_score)[0]
    kb = np.nonzero(b.scores >= min_score)[0]
    ious = box_iou(a.boxes[ka], b.boxes[kb])
    same = a.labels[ka][:, None] == b.labels[kb][None]
    ious = np.where(same, ious, 0.0)
    taken = np.zeros(len(kb), dtype=bool)
    box_ious, mask_ious, score_diffs = [], [], []
    for i in np.argsort(-a.scores[ka], kind="stable"):
        if not len(kb):
            break
        cand = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(cand))
        if cand[j] < iou:
            continue
        taken[j] = True
        box_ious.append(cand[j])
        score_diffs.append(abs(float(a.scores[ka[i]]) - float(b.scores[kb[j]])))
        if a.masks is not None and b.masks is not None:
            mask_ious.append(mask_iou(a.masks[ka[i]], b.masks[kb[j]]))
    return Agreement(len(ka), len(kb), len(box_ious), float(np.mean(box_ious)) if box_ious else 1.0,
                     float(np.mean(mask_ious)) if mask_ious else 1.0, max(score_diffs, default=0.0))
