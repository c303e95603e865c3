"""Per-detection explanation by masking (D-RISE: Petsiuk et al., CVPR 2021), for any detector as a black box.

The image is shown to the model many times, each time with a random smooth part of it hidden (a coarse random
grid of kept / hidden cells, upsampled bilinearly and shifted by a random fraction of a cell; hidden pixels
take a fill colour, by default the image's mean colour). For each explained detection, every masked run is
weighed by how well the detection survived it: the best IoU x score of a detection of the same class in that
run (D-RISE weighs by IoU x the cosine of the class-probability vectors; a detector's API gives one class and its
score, which this uses instead). The saliency of a pixel is the covariance, over the runs, of "the pixel was
shown" and that weight (D-RISE's weighted sum of masks, less what the mean weight alone would give), clipped at
0: positive where showing the pixel helped the detection.

It needs only ``predict(image) -> Detections``, so it explains an exported model as well as a PyTorch one, at
the cost of ``num_masks`` inferences per image (the explained detections share them).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from isseg.model.detections import Detections


def random_masks(count: int, size: tuple[int, int], cells: int = 16, keep: float = 0.5, seed: int = 0
                 ) -> np.ndarray:
    """float32 [count, H, W] smooth masks in [0, 1] (1: the pixel is shown), ``cells`` x ``cells`` random cells,
    each kept with probability ``keep``, upsampled and shifted by up to one cell."""
    if count < 1 or cells < 1 or not 0.0 < keep < 1.0:
        raise ValueError(f"masks: expected count >= 1, cells >= 1 and keep in (0, 1), got {count}, {cells}, {keep}")
    h, w = size
    rng = np.random.default_rng(seed)
    cell_h, cell_w = int(np.ceil(h / cells)), int(np.ceil(w / cells))
    out = np.empty((count, h, w), np.float32)
    for i in range(count):
        grid = (rng.random((cells + 1, cells + 1)) < keep).astype(np.float32)
        big = cv2.resize(grid, ((cells + 1) * cell_w, (cells + 1) * cell_h), interpolation=cv2.INTER_LINEAR)
        dy, dx = int(rng.integers(0, cell_h)), int(rng.integers(0, cell_w))
        out[i] = big[dy : dy + h, dx : dx + w]
    return out


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [A, B] of boxes [A, 4] and [B, 4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def survival(targets: Detections, found: Detections) -> np.ndarray:
    """float64 [D]: for each target, the best IoU x score among the same-class detections of a masked run."""
    if len(targets) == 0 or len(found) == 0:
        return np.zeros(len(targets))
    iou = _box_iou(targets.boxes.astype(np.float64), found.boxes.astype(np.float64))
    same = targets.labels[:, None] == found.labels[None, :]
    return (iou * same * found.scores[None, :].astype(np.float64)).max(1)


def drise_maps(predict: Callable[[np.ndarray], Detections], image: np.ndarray, targets: Detections,
               num_masks: int = 500, cells: int = 16, keep: float = 0.5, fill: tuple[float, float, float] | None = None,
               seed: int = 0) -> np.ndarray:
    """float32 [D, H, W] saliency of each target detection of BGR ``image`` [H, W, 3] (see the module
    docstring); values relative, >= 0 where showing a pixel helped. ``fill``: BGR of hidden pixels (default
    the image's mean colour)."""
    h, w = image.shape[:2]
    colour = np.asarray(fill if fill is not None else image.reshape(-1, 3).mean(0), np.float32)
    total = np.zeros((len(targets), h, w), np.float64)
    weights = np.zeros(len(targets), np.float64)
    coverage = np.zeros((h, w), np.float64)
    if len(targets) == 0:
        return total.astype(np.float32)
    masks = random_masks(num_masks, (h, w), cells, keep, seed)
    base = image.astype(np.float32)
    for m in masks:
        shown = m[:, :, None]
        masked = np.clip(base * shown + colour * (1 - shown) + 0.5, 0, 255).astype(np.uint8)
        score = survival(targets, predict(masked))
        total += score[:, None, None] * m[None]
        weights += score
        coverage += m
    # weighted mean of the masks showing each pixel, minus what an uninformative weighting would give
    mean_mask = coverage / num_masks
    saliency = total / num_masks - (weights / num_masks)[:, None, None] * mean_mask[None]
    return np.clip(saliency, 0, None).astype(np.float32)
