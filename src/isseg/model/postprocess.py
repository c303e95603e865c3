"""Post-processing: the network's detections, in network-input pixels, become ``Detections`` of the original image.

The one owner of this step for every path (``MaskRCNN.predict``, each ``Predictor`` backend, ``isseg predict``,
``isseg evaluate``): boxes are mapped back by the per-axis ratio of the original to the resized image, clipped
as the preset's ``roi.final_clip`` says, and the 28x28 mask probabilities are pasted at full resolution with
the preset's ``roi.mask_paste`` method and ``roi.mask_threshold``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from isseg.config import RoIConfig
from isseg.model.box_coder import clip_boxes
from isseg.model.detections import Detections


def boxes_to_original(boxes: Tensor, resized: tuple[int, int], original: tuple[int, int]) -> Tensor:
    """[N, 4] boxes from resized-image pixels back to original-image pixels (per-axis float32 ratios)."""
    ratio_h = torch.tensor(original[0], dtype=torch.float32) / torch.tensor(resized[0], dtype=torch.float32)
    ratio_w = torch.tensor(original[1], dtype=torch.float32) / torch.tensor(resized[1], dtype=torch.float32)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def to_detections(boxes: Tensor, scores: Tensor, labels: Tensor, mask_probs: Tensor | None,
                  content_size: tuple[int, int], original_size: tuple[int, int], cfg: RoIConfig,
                  class_names: tuple[str, ...], with_masks: bool = True) -> Detections:
    """One image's detections in network-input pixels (``boxes`` [D, 4], ``scores`` [D], ``labels`` [D],
    ``mask_probs`` [D, M, M]) -> ``Detections`` of the original image, sorted by descending score."""
    boxes = boxes_to_original(boxes.float().cpu(), content_size, original_size)
    scores, labels = scores.float().cpu(), labels.cpu().to(torch.int64)
    probs = mask_probs.float().cpu() if mask_probs is not None else None
    h, w = original_size
    if cfg.final_clip == "before_paste":  # detectron2's detector_postprocess
        boxes, keep = _clip_nonempty(boxes, h, w)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        probs = probs[keep] if probs is not None else None
    masks = None
    if with_masks and probs is not None:
        masks = paste_masks(probs, boxes, original_size, cfg.mask_paste, cfg.mask_threshold)
    if cfg.final_clip == "after_paste":  # letterboxed canvas: boxes may reach into the padding
        boxes, keep = _clip_nonempty(boxes, h, w)
        if not bool(keep.all()):  # (indexing would copy every full-image mask)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            masks = masks[keep] if masks is not None else None
    return Detections(boxes.numpy().astype(np.float32), scores.numpy(), labels.numpy(),
                      None if masks is None else masks.numpy(), tuple(class_names), (int(h), int(w)))


def _clip_nonempty(boxes: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    boxes = clip_boxes(boxes, h, w)
    return boxes, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], method: str,
                threshold: float) -> Tensor:
    """Paste [N, M, M] mask probabilities into [N, H, W] boolean full-image masks at ``boxes`` [N, 4]."""
    h, w = image_size
    masks, boxes = masks.float().cpu(), boxes.float().cpu()
    if method == "torchvision":
        out_t = torch.zeros((masks.shape[0], h, w), dtype=torch.bool)
        for i in range(masks.shape[0]):
            _paste_torchvision(masks[i], boxes[i], out_t[i], threshold)
        return out_t
    out = np.zeros((masks.shape[0], h, w), dtype=bool)
    boxes_np = boxes.numpy()
    for i in range(masks.shape[0]):
        _paste_grid_sample(masks[i], boxes_np[i], out[i], threshold)
    return torch.from_numpy(out)


def _paste_torchvision(mask: Tensor, box: Tensor, out: Tensor, threshold: float) -> None:
    """torchvision (and Open Model Zoo): pad the mask by one cell, grow the box to match, truncate it to
    integers, resize bilinearly to it, ``> threshold``."""
    m = mask.shape[-1]
    scale = (m + 2) / m
    padded = F.pad(mask[None, None], (1, 1, 1, 1))
    half_w = (box[2] - box[0]) * 0.5 * scale
    half_h = (box[3] - box[1]) * 0.5 * scale
    cx, cy = (box[2] + box[0]) * 0.5, (box[3] + box[1]) * 0.5
    x0, y0, x1, y1 = (int(v) for v in torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h]).to(
        torch.int64))
    bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    resized = F.interpolate(padded, size=(bh, bw), mode="bilinear", align_corners=False)[0, 0]
    im_h, im_w = out.shape
    xa, xb = max(x0, 0), min(x1 + 1, im_w)
    ya, yb = max(y0, 0), min(y1 + 1, im_h)
    if xb > xa and yb > ya:
        out[ya:yb, xa:xb] = resized[ya - y0 : yb - y0, xa - x0 : xb - x0] > threshold


def _paste_grid_sample(mask: Tensor, box: np.ndarray, out: np.ndarray, threshold: float) -> None:
    """detectron2 / mmdetection (``_do_paste_mask`` on the CPU): sample the mask bilinearly at each pixel centre
    of the box's integer neighbourhood, in float32 as they compute it, ``>= threshold``. The sampling grid is
    computed with numpy float32 operations in the same order as their torch ones (IEEE-rounded the same, so
    bit-identical, ``tests/test_conventions.py``) at a fraction of the per-call cost of tiny torch ops."""
    im_h, im_w = out.shape
    x0, y0, x1, y1 = (np.float32(v) for v in box)
    xa = max(int(math.floor(float(x0))) - 1, 0)
    ya = max(int(math.floor(float(y0))) - 1, 0)
    xb = min(int(math.ceil(float(x1))) + 1, im_w)
    yb = min(int(math.ceil(float(y1))) + 1, im_h)
    if xb <= xa or yb <= ya:
        return
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero-width box: inf / nan, as torch gives silently
        ys = (np.arange(ya, yb, dtype=np.float32) + np.float32(0.5) - y0) / (y1 - y0) * np.float32(2) - np.float32(1)
        xs = (np.arange(xa, xb, dtype=np.float32) + np.float32(0.5) - x0) / (x1 - x0) * np.float32(2) - np.float32(1)
    grid = np.empty((1, yb - ya, xb - xa, 2), dtype=np.float32)
    grid[0, :, :, 0] = xs[None, :]
    grid[0, :, :, 1] = ys[:, None]
    sampled = F.grid_sample(mask[None, None], torch.from_numpy(grid), align_corners=False)[0, 0]
    out[ya:yb, xa:xb] = sampled.numpy() >= threshold
