"""Merging the detections of a frame's tiles: class-wise NMS (OpenVINO Model API's tiler) or greedy non-maximum
merging (SAHI's), on raw detections (boxes in frame pixels, 28x28 mask probabilities): no mask is pasted here.

The result says, for each surviving detection, which raw detections it is made of (``groups``); the masks are
pasted afterwards for the survivors only (:func:`isseg.model.postprocess.paste_masks` with ``groups``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from isseg.model.postprocess import RawDetections
from isseg.tiling.options import TilingOptions


@dataclass
class Merged:
    """A frame's detections after the merge, by descending score: ``boxes`` float32 [K, 4] in frame pixels,
    ``scores`` float32 [K], ``labels`` int64 [K]; ``groups[k]``: indices of the raw detections detection k
    is made of (its first one scored highest)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    groups: list[list[int]]


def matching_boxes(raw: RawDetections) -> np.ndarray:
    """float32 [D, 4]: each raw box clipped to its window (the part of the frame its tile saw)."""
    boxes = raw.boxes.numpy().astype(np.float32, copy=True)
    if raw.windows is not None:
        win = raw.windows.numpy().astype(np.float32)
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], win[:, [0]], win[:, [2]])
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], win[:, [1]], win[:, [3]])
    return boxes


def overlap(box: np.ndarray, boxes: np.ndarray, metric: str) -> np.ndarray:
    """float64 [N]: overlap of ``box`` [4] with each of ``boxes`` [N, 4]: "iou" (intersection over union) or
    "ios" (intersection over the smaller area); 0 where the denominator is 0."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw.astype(np.float64) * ih
    area = float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None).astype(np.float64) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    denom = area + areas - inter if metric == "iou" else np.minimum(area, areas)
    return np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, metric: str, threshold: float) -> list[int]:
    """Class-wise greedy NMS: indices kept, by descending score; a box is dropped when it overlaps a kept box
    of its class by more than ``threshold``."""
    order = np.argsort(-scores, kind="stable")
    alive = np.ones(len(scores), dtype=bool)
    keep: list[int] = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(int(i))
        alive[i] = False
        rest = np.nonzero(alive & (labels == labels[i]))[0]
        if len(rest):
            alive[rest[overlap(boxes[i], boxes[rest], metric) > threshold]] = False
    return keep


def nmm(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, tiles: np.ndarray, windows: np.ndarray | None,
        metric: str, threshold: float) -> list[list[int]]:
    """Greedy non-maximum merging: groups of indices, by descending best score.

    The best remaining detection starts a group. A detection of its class from a tile not in the group yet
    joins when it overlaps the group's box (the union of its finest members' boxes: :func:`finest`) by more
    than ``threshold``, or overlaps a coarser member (a whole-frame view of the object) by more than
    ``threshold`` while touching the group's box (a fragment across a seam). Per tile the most similar one
    (highest IoU with the group's box) joins, at most one per tile (a tile's detections are distinct objects:
    the network already suppressed its duplicates); the group grows until none joins.
    """
    order = np.argsort(-scores, kind="stable")
    free = np.ones(len(scores), dtype=bool)
    groups: list[list[int]] = []
    for i in order:
        if not free[i]:
            continue
        free[i] = False
        group, seen = [int(i)], {int(tiles[i])}
        while True:
            cand = np.nonzero(free & (labels == labels[i]) & ~np.isin(tiles, list(seen)))[0]
            if not len(cand):
                break
            fine = finest(group, windows)
            box = np.concatenate([boxes[fine, :2].min(0), boxes[fine, 2:].max(0)])
            direct, iou = overlap(box, boxes[cand], metric), overlap(box, boxes[cand], "iou")
            coarse = [overlap(boxes[c], boxes[cand], metric) for c in group if c not in fine]
            via = (np.max(coarse, axis=0) > threshold) & (iou > 0) if coarse else False
            ok = (direct > threshold) | via
            if not ok.any():
                break
            picks: dict[int, int] = {}
            # per tile the most similar one (IoU: with IOS a small object inside the box would tie the object)
            for j in cand[ok][np.lexsort((-scores[cand[ok]], -iou[ok]))]:
                picks.setdefault(int(tiles[j]), int(j))
            for tile, j in picks.items():
                group.append(j)
                seen.add(tile)
                free[j] = False
        groups.append(group)
    return groups


def finest(group: list[int], windows: np.ndarray | None) -> list[int]:
    """The members of a group seen at the finest scale: those whose window (tile) contains no other member's
    (a whole-frame detection, downscaled, is coarser than the tiles' detections of the same object)."""
    if windows is None:
        return group
    w = windows[group]
    inside = (w[:, None, :2] <= w[None, :, :2]).all(-1) & (w[:, None, 2:] >= w[None, :, 2:]).all(-1)
    contains = inside & ~(w[:, None] == w[None, :]).all(-1)
    return [m for m, c in zip(group, contains.any(1)) if not c]


def uncut(members: list[int], boxes: np.ndarray, windows: np.ndarray | None, frame_size: tuple[int, int],
          margin: float = 2.0) -> list[int]:
    """The ``members`` that see their object whole: their box keeps ``margin`` pixels from every edge of their
    window that is not an edge of the frame (a whole-frame view always does)."""
    if windows is None:
        return list(members)
    h, w = frame_size
    out = []
    for m in members:
        x0, y0, x1, y1 = windows[m]
        bx0, by0, bx1, by1 = boxes[m]
        if (x0 <= 0 or bx0 - x0 >= margin) and (y0 <= 0 or by0 - y0 >= margin) and \
                (x1 >= w or x1 - bx1 >= margin) and (y1 >= h or y1 - by1 >= margin):
            out.append(m)
    return out


def best_view(group: list[int], boxes: np.ndarray, scores: np.ndarray, windows: np.ndarray | None,
              frame_size: tuple[int, int]) -> int | None:
    """The member of a merged group that shows the whole object best: the best-scoring one that saw it whole
    in a tile, else the best-scoring whole coarser view (the whole frame, downscaled); None when every view
    cut it (its fragments are then stitched)."""
    fine = finest(group, windows)
    for members in (fine, [m for m in group if m not in fine]):
        whole = uncut(members, boxes, windows, frame_size)
        if whole:
            return max(whole, key=lambda m: (scores[m], -m))
    return None


def merge(raw: RawDetections, tiles: np.ndarray, options: TilingOptions, frame_size: tuple[int, int]) -> Merged:
    """Merge the raw detections of all tiles of a ``frame_size`` (H, W) frame (``tiles`` int [D]: the tile each
    one comes from) as ``options`` say, keeping the ``options.max_detections`` best.

    A detection kept alone keeps its own box (clipped later as the preset says). A merged group ("nmm") with a
    member that saw the object whole (:func:`best_view`) takes that member's box and mask, with the group's
    best score; otherwise every view cut the object, and the group's box is the union of its finest members'
    boxes (each clipped to its tile) and their masks are stitched when pasted.
    """
    match = matching_boxes(raw)
    scores, labels = raw.scores.numpy(), raw.labels.numpy()
    windows = None if raw.windows is None else raw.windows.numpy()
    if options.merge == "nms":
        groups = [[i] for i in nms(match, scores, labels, options.match_metric, options.match_threshold)]
    else:
        groups = nmm(match, scores, labels, tiles, windows, options.match_metric, options.match_threshold)
    groups = groups[: options.max_detections]
    boxes = np.zeros((len(groups), 4), np.float32)
    best = [g[0] for g in groups]
    for k, group in enumerate(groups):
        view = best_view(group, match, scores, windows, frame_size) if len(group) > 1 else None
        if view is not None:
            groups[k] = group = [view]
        if len(group) == 1:
            boxes[k] = raw.boxes[group[0]].numpy()
        else:
            fine = finest(group, windows)
            boxes[k, :2], boxes[k, 2:] = match[fine, :2].min(0), match[fine, 2:].max(0)
    return Merged(torch.from_numpy(boxes), raw.scores[best], raw.labels[best], groups)
