"""Detector-like output from ground truth, for measuring trackers on the same, realistic detections.

:func:`simulate_detections` turns one frame of :class:`isseg.data.synth_video.FrameTruth` into
:class:`~isseg.model.detections.Detections` the way a real instance segmentation model errs: boxes and masks
jitter, objects that are mostly hidden are missed or found with a low score, and a few false positives
appear (mostly with low scores). Every draw comes from the ``rng`` given, so a seed fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isseg.model.detections import Detections


@dataclass(frozen=True)
class DetectionNoise:
    """How far simulated detections are from the truth."""

    box_jitter: float = 0.04
    """Standard deviation of each box side's error, as a fraction of the box's width (x) or height (y)."""
    mask_shift: float = 0.02
    """Standard deviation of the shift of each mask, as a fraction of its box size."""
    mask_morph: float = 0.3
    """Probability that a mask is eroded, and (separately) that it is dilated, by 1 pixel."""
    miss_rate: float = 0.03
    """Probability of missing an object that is fully visible."""
    hidden_miss: tuple[float, float] = (0.15, 0.45)
    """Visible fraction below which an object is always missed, and above which only ``miss_rate`` applies
    (in between, the chance of a detection grows linearly)."""
    low_score_rate: float = 0.1
    """Probability that a well-visible detection still gets a low score (0.15-0.5)."""
    false_positives: float = 0.6
    """Mean number of false positives per frame (Poisson); 20 % of them with a high score (0.5-0.75)."""
    min_area: int = 30
    """Objects with fewer visible pixels are never detected."""
    class_flip: float = 0.0
    """Probability that an object's detection gets another class, at random (a detector's class flips from
    frame to frame); at 0 nothing is drawn for it, so the other noise is what it was without the field."""
    exact: bool = False
    """The detections are the truth: every object with at least ``min_area`` visible pixels, with its visible
    mask, box and class, score 0.9, and nothing else (the fields above but ``min_area`` are not used)."""


def _jitter_mask(mask: np.ndarray, rng: np.random.Generator, noise: DetectionNoise, box: np.ndarray) -> np.ndarray:
    """A copy of bool [H, W] ``mask`` shifted and eroded or dilated a little (only around its box)."""
    import cv2

    h, w = mask.shape
    bw, bh = box[2] - box[0], box[3] - box[1]
    dx, dy = np.rint(rng.normal(0, noise.mask_shift, 2) * (bw, bh)).astype(int)
    pad = 3 + abs(int(dx)) + abs(int(dy))
    x0, y0 = max(int(box[0]) - pad, 0), max(int(box[1]) - pad, 0)
    x1, y1 = min(int(box[2]) + pad, w), min(int(box[3]) + pad, h)
    local = mask[y0:y1, x0:x1].astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    if rng.uniform() < noise.mask_morph:
        eroded = cv2.erode(local, kernel)
        local = eroded if eroded.any() else local
    if rng.uniform() < noise.mask_morph:
        local = cv2.dilate(local, kernel)
    moved = np.zeros((y1 - y0, x1 - x0), np.uint8)
    sy0, sy1 = max(0, -dy), min(y1 - y0, y1 - y0 - dy)
    sx0, sx1 = max(0, -dx), min(x1 - x0, x1 - x0 - dx)
    if sy1 > sy0 and sx1 > sx0:
        moved[sy0 + dy:sy1 + dy, sx0 + dx:sx1 + dx] = local[sy0:sy1, sx0:sx1]
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = moved.astype(bool)
    return out


def _false_positive(rng: np.random.Generator, h: int, w: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    mask = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    axes = (int(rng.uniform(6, 25)), int(rng.uniform(6, 25)))
    cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    ys, xs = np.nonzero(mask)
    return mask.astype(bool), np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def simulate_detections(truth, rng: np.random.Generator, class_names: tuple[str, ...],
                        noise: DetectionNoise | None = None) -> Detections:
    """Detections of one frame's ground truth (a :class:`~isseg.data.synth_video.FrameTruth`), with
    ``noise``; sorted by descending score. Returns masks bool [N, H, W] and no track IDs."""
    noise = noise or DetectionNoise()
    h, w = truth.masks.shape[1:]
    if noise.exact:
        keep = truth.masks.reshape(len(truth.ids), h * w).sum(1) >= noise.min_area
        return Detections(truth.boxes[keep].astype(np.float32), np.full(int(keep.sum()), 0.9, np.float32),
                          truth.labels[keep].astype(np.int64), truth.masks[keep], tuple(class_names), (h, w))
    boxes, scores, labels, masks = [], [], [], []
    lo, hi = noise.hidden_miss
    for k in range(len(truth.ids)):
        vis = float(truth.visibility[k])
        p_detect = float(np.clip((vis - lo) / (hi - lo), 0, 1)) * (1 - noise.miss_rate)
        if rng.uniform() >= p_detect or truth.masks[k].sum() < noise.min_area:
            continue
        if vis >= 0.6 and rng.uniform() >= noise.low_score_rate:
            score = rng.uniform(0.6, 0.98)
        else:
            score = rng.uniform(0.15, 0.5) if vis >= 0.6 else rng.uniform(0.15, 0.6)
        box = truth.boxes[k]
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
        masks.append(_jitter_mask(truth.masks[k], rng, noise, box))
        boxes.append(box + rng.normal(0, noise.box_jitter, 4).astype(np.float32) * size)
        scores.append(score)
        label = int(truth.labels[k])
        if noise.class_flip > 0 and len(class_names) > 1 and rng.uniform() < noise.class_flip:
            label = (label + int(rng.integers(1, len(class_names)))) % len(class_names)
        labels.append(label)
    for _ in range(int(rng.poisson(noise.false_positives))):
        mask, box = _false_positive(rng, h, w, len(class_names))
        masks.append(mask)
        boxes.append(box)
        scores.append(rng.uniform(0.5, 0.75) if rng.uniform() < 0.2 else rng.uniform(0.1, 0.45))
        labels.append(int(rng.integers(len(class_names))))
    order = np.argsort(-np.array(scores, np.float32), kind="stable")
    return Detections(np.array(boxes, np.float32).reshape(-1, 4)[order], np.array(scores, np.float32)[order],
                      np.array(labels, np.int64)[order],
                      np.stack(masks)[order] if masks else np.zeros((0, h, w), bool),
                      tuple(class_names), (h, w))
