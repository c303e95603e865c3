"""Post-processing: the network's detections, in network-input pixels, become ``Detections`` of the original image.

The one owner of this step for every path (``MaskRCNN.predict``, each ``Predictor`` backend, ``isseg predict``,
``isseg evaluate``, tiled inference), in two steps that :func:`to_detections` runs one after the other:

1. :func:`raw_detections`: boxes are mapped back to the original image by the per-axis ratio of the original
   to the resized image (and clipped to it there, when the preset's ``roi.final_clip`` is "before_paste");
   the 28x28 mask probabilities are kept as they are (:class:`RawDetections`, a few KB per detection);
2. :func:`paste_detections`: the masks are pasted at full resolution with the preset's ``roi.mask_paste``
   method and ``roi.mask_threshold`` (each inside its window: a tile of tiled inference, the whole image
   otherwise), then boxes are clipped when ``roi.final_clip`` is "after_paste".

Tiled inference (:mod:`isseg.tiling`) runs step 1 per tile, merges the raw detections of all tiles, and pastes
only the survivors; :func:`paste_masks` with ``groups`` stitches the masks of merged detections into one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from isseg.config import RoIConfig
from isseg.model.box_coder import clip_boxes
from isseg.model.detections import Detections
from isseg.model.masks import InstanceMasks, Region


@dataclass
class RawDetections:
    """Detections of one image before their masks are pasted, in original-image pixels.

    boxes: float32 [D, 4] (x1, y1, x2, y2), where each mask's M x M grid lies (with the "after_paste" clip
    it may reach past the image until :func:`paste_detections`); scores: float32 [D]; labels: int64 [D];
    mask_probs: float32 [D, M, M] or None; windows: int64 [D, 4] (x0, y0, x1, y1), the part of the image each
    mask may cover (the tile it was found in), or None for the whole image.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    mask_probs: Tensor | None
    windows: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def boxes_to_original(boxes: Tensor, resized: tuple[int, int], original: tuple[int, int]) -> Tensor:
    """[N, 4] boxes from resized-image pixels back to original-image pixels (per-axis float32 ratios)."""
    ratio_h = torch.tensor(original[0], dtype=torch.float32) / torch.tensor(resized[0], dtype=torch.float32)
    ratio_w = torch.tensor(original[1], dtype=torch.float32) / torch.tensor(resized[1], dtype=torch.float32)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def raw_detections(boxes: Tensor, scores: Tensor, labels: Tensor, mask_probs: Tensor | None,
                   content_size: tuple[int, int], original_size: tuple[int, int], cfg: RoIConfig) -> RawDetections:
    """Step 1: one image's detections in network-input pixels (``boxes`` [D, 4], ``scores`` [D], ``labels``
    [D], ``mask_probs`` [D, M, M]) -> ``RawDetections`` in original-image pixels (same order)."""
    boxes = boxes_to_original(boxes.float().cpu(), content_size, original_size)
    scores, labels = scores.float().cpu(), labels.cpu().to(torch.int64)
    probs = mask_probs.float().cpu() if mask_probs is not None else None
    if cfg.final_clip == "before_paste":  # detectron2's detector_postprocess
        boxes, keep = _clip_nonempty(boxes, *original_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        probs = probs[keep] if probs is not None else None
    return RawDetections(boxes, scores, labels, probs)


def paste_detections(raw: RawDetections, image_size: tuple[int, int], cfg: RoIConfig,
                     class_names: tuple[str, ...], with_masks: bool = True) -> Detections:
    """Step 2: paste the masks of ``raw`` into [D, H, W] boolean masks of the ``image_size`` (H, W) image and
    clip the boxes as the preset says -> ``Detections``."""
    masks = None
    if with_masks and raw.mask_probs is not None:
        masks = paste_masks(raw.mask_probs, raw.boxes, image_size, cfg.mask_paste, cfg.mask_threshold, raw.windows)
    return finish_detections(raw.boxes, raw.scores, raw.labels, masks, image_size, cfg, class_names)


def finish_detections(boxes: Tensor, scores: Tensor, labels: Tensor, masks: InstanceMasks | None,
                      image_size: tuple[int, int], cfg: RoIConfig, class_names: tuple[str, ...]) -> Detections:
    """Pasted detections (``masks`` of D instances or None) -> ``Detections``, with the "after_paste" clip."""
    h, w = image_size
    if cfg.final_clip == "after_paste":  # letterboxed canvas: boxes may reach into the padding
        boxes, keep = _clip_nonempty(boxes, h, w)
        if not bool(keep.all()):
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            masks = masks[keep.numpy()] if masks is not None else None
    return Detections(boxes.numpy().astype(np.float32), scores.numpy(), labels.numpy(), masks,
                      tuple(class_names), (int(h), int(w)))


def to_detections(boxes: Tensor, scores: Tensor, labels: Tensor, mask_probs: Tensor | None,
                  content_size: tuple[int, int], original_size: tuple[int, int], cfg: RoIConfig,
                  class_names: tuple[str, ...], with_masks: bool = True) -> Detections:
    """One image's detections in network-input pixels (``boxes`` [D, 4], ``scores`` [D], ``labels`` [D],
    ``mask_probs`` [D, M, M]) -> ``Detections`` of the original image, sorted by descending score: the two
    steps :func:`raw_detections` and :func:`paste_detections`."""
    raw = raw_detections(boxes, scores, labels, mask_probs, content_size, original_size, cfg)
    return paste_detections(raw, original_size, cfg, class_names, with_masks)


def _clip_nonempty(boxes: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    boxes = clip_boxes(boxes, h, w)
    return boxes, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


Window = tuple[int, int, int, int]  # (x0, y0, x1, y1): the pixels a mask may cover


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], method: str, threshold: float,
                windows: Tensor | None = None, groups: Sequence[Sequence[int]] | None = None) -> InstanceMasks:
    """Paste [N, M, M] mask probabilities at ``boxes`` [N, 4] into N boolean masks of the ``image_size`` (H, W)
    image, each held as the crop of the region it was pasted into (:class:`InstanceMasks`: no [N, H, W] array).

    ``windows`` [N, 4] (x0, y0, x1, y1): each mask covers only its window (default: the whole image).
    ``groups``: output mask k joins the masks ``groups[k]`` (default: one per mask). Joined masks are stitched
    (:func:`_stitch`): each pixel takes the value of the member whose window sees it farthest from that
    window's inner edges.
    """
    h, w = image_size
    masks, boxes = masks.float().cpu(), boxes.float().cpu()
    wins = [(0, 0, w, h)] * masks.shape[0] if windows is None else [
        _clamp_window(win, h, w) for win in windows.cpu().to(torch.int64).tolist()]
    rows = [[i] for i in range(masks.shape[0])] if groups is None else groups
    out: list[Region | None] = []
    boxes_np = boxes.numpy()
    for members in rows:
        regions = []
        for i in members:
            if method == "torchvision":
                regions.append(_paste_torchvision(masks[i], boxes[i], wins[i], threshold))
            else:
                regions.append(_paste_grid_sample(masks[i], boxes_np[i], wins[i], threshold))
        out.append(regions[0] if len(members) == 1 else _stitch((h, w), [wins[i] for i in members], regions))
    return InstanceMasks.from_regions(out, (h, w))


def _stitch(size: tuple[int, int], windows: list[Window], regions: list[Region | None]) -> Region | None:
    """Join the pasted masks of one object seen in several windows (tiles) of an image of ``size`` (H, W) into
    one region.

    Inside its window a member says "object" on its pasted mask and "not object" elsewhere. Each pixel takes
    the word of the member that sees it deepest inside its window (the distance to the window's edges that
    are not the image's edges: near a tile border the network saw little context), so the seams between
    tiles are cut in the middle of their overlap. A member whose window contains another member's (the
    whole frame, seen downscaled) speaks only where no finer window sees the pixel.
    """
    present = [r for r in regions if r is not None]
    if not present:
        return None
    h, w = size
    ya, yb = min(r[0] for r in present), max(r[1] for r in present)
    xa, xb = min(r[2] for r in present), max(r[3] for r in present)
    value = np.zeros((yb - ya, xb - xa), dtype=bool)
    depth = np.full(value.shape, -np.inf, dtype=np.float32)
    for win, region in zip(windows, regions):
        x0, y0, x1, y1 = max(win[0], xa), max(win[1], ya), min(win[2], xb), min(win[3], yb)
        if x1 <= x0 or y1 <= y0:
            continue
        if any(other != win and _contains(win, other) for other in windows):
            d = np.full((y1 - y0, x1 - x0), -1.0, dtype=np.float32)
        else:
            d = np.minimum(_edge_distance(y0, y1, win[1], win[3], h)[:, None],
                           _edge_distance(x0, x1, win[0], win[2], w)[None, :])
        v = np.zeros(d.shape, dtype=bool)
        if region is not None:
            ra, rb, rc, rd, m = region
            v[ra - y0 : rb - y0, rc - x0 : rd - x0] = m
        cur_depth, cur_value = depth[y0 - ya : y1 - ya, x0 - xa : x1 - xa], value[y0 - ya : y1 - ya, x0 - xa : x1 - xa]
        deeper = d > cur_depth
        cur_value[deeper] = v[deeper]
        cur_depth[deeper] = d[deeper]
    return ya, yb, xa, xb, value


def _edge_distance(a: int, b: int, lo: int, hi: int, size: int) -> np.ndarray:
    """float32 [b - a]: distance of pixel centres a..b-1 to the window edges lo / hi that are not image edges."""
    centres = np.arange(a, b, dtype=np.float32) + np.float32(0.5)
    d = np.full(b - a, np.inf, dtype=np.float32)
    if lo > 0:
        d = np.minimum(d, centres - lo)
    if hi < size:
        d = np.minimum(d, hi - centres)
    return d


def _contains(outer: Window, inner: Window) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def _clamp_window(window: Sequence[int], h: int, w: int) -> Window:
    x0, y0, x1, y1 = window
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def _paste_torchvision(mask: Tensor, box: Tensor, window: Window, threshold: float) -> Region | None:
    """torchvision (and Open Model Zoo): pad the mask by one cell, grow the box to match, truncate it to
    integers, resize bilinearly to it, ``> threshold``; -> the part inside ``window``."""
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
    xa, xb = max(x0, window[0]), min(x1 + 1, window[2])
    ya, yb = max(y0, window[1]), min(y1 + 1, window[3])
    if xb > xa and yb > ya:
        return ya, yb, xa, xb, (resized[ya - y0 : yb - y0, xa - x0 : xb - x0] > threshold).numpy()
    return None


def _paste_grid_sample(mask: Tensor, box: np.ndarray, window: Window, threshold: float) -> Region | None:
    """detectron2 / mmdetection (``_do_paste_mask`` on the CPU): sample the mask bilinearly at each pixel centre
    of the box's integer neighbourhood (inside ``window``), in float32 as they compute it, ``>= threshold``.
    The sampling grid is computed with numpy float32 operations in the same order as their torch ones
    (IEEE-rounded the same, so bit-identical, ``tests/test_conventions.py``) at a fraction of the per-call cost
    of tiny torch ops."""
    x0, y0, x1, y1 = (np.float32(v) for v in box)
    xa = max(int(math.floor(float(x0))) - 1, window[0])
    ya = max(int(math.floor(float(y0))) - 1, window[1])
    xb = min(int(math.ceil(float(x1))) + 1, window[2])
    yb = min(int(math.ceil(float(y1))) + 1, window[3])
    if xb <= xa or yb <= ya:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero-width box: inf / nan, as torch gives silently
        ys = (np.arange(ya, yb, dtype=np.float32) + np.float32(0.5) - y0) / (y1 - y0) * np.float32(2) - np.float32(1)
        xs = (np.arange(xa, xb, dtype=np.float32) + np.float32(0.5) - x0) / (x1 - x0) * np.float32(2) - np.float32(1)
    grid = np.empty((1, yb - ya, xb - xa, 2), dtype=np.float32)
    grid[0, :, :, 0] = xs[None, :]
    grid[0, :, :, 1] = ys[:, None]
    sampled = F.grid_sample(mask[None, None], torch.from_numpy(grid), align_corners=False)[0, 0]
    return ya, yb, xa, xb, sampled.numpy() >= threshold
