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


def nmm(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, tiles: np.ndarray, metric: str,
        threshold: float) -> list[list[int]]:
    """Greedy non-maximum merging: groups of indices, by descending best score.

    The best remaining detection starts a group; detections of its class that overlap the group's box (the
    union of its members' boxes, grown as members join) by more than ``threshold`` join it, the best one of
    each tile and at most one per tile (a tile's detections are distinct objects: the network already
    suppressed its duplicates), until none joins.
    """
    order = np.argsort(-scores, kind="stable")
    free = np.ones(len(scores), dtype=bool)
    groups: list[list[int]] = []
    for i in order:
        if not free[i]:
            continue
        free[i] = False
        group, seen, box = [int(i)], {int(tiles[i])}, boxes[i].copy()
        while True:
            cand = np.nonzero(free & (labels == labels[i]) & ~np.isin(tiles, list(seen)))[0]
            hits = cand[overlap(box, boxes[cand], metric) > threshold] if len(cand) else cand
            if not len(hits):
                break
            for j in hits[np.argsort(-scores[hits], kind="stable")]:
                if int(tiles[j]) not in seen:
                    group.append(int(j))
                    seen.add(int(tiles[j]))
                    free[j] = False
                    box = np.concatenate([np.minimum(box[:2], boxes[j, :2]), np.maximum(box[2:], boxes[j, 2:])])
        groups.append(group)
    return groups


def merge(raw: RawDetections, tiles: np.ndarray, options: TilingOptions) -> Merged:
    """Merge the raw detections of all tiles of a frame (``tiles`` int [D]: the tile each one comes from) as
    ``options`` say, keeping the ``options.max_detections`` best. A detection kept alone keeps its own box
    (clipped later as the preset says); a merged one gets the union of its members' boxes, each clipped to
    its tile."""
    match = matching_boxes(raw)
    scores, labels = raw.scores.numpy(), raw.labels.numpy()
    if options.merge == "nms":
        groups = [[i] for i in nms(match, scores, labels, options.match_metric, options.match_threshold)]
    else:
        groups = nmm(match, scores, labels, tiles, options.match_metric, options.match_threshold)
    groups = groups[: options.max_detections]
    boxes = np.zeros((len(groups), 4), np.float32)
    for k, group in enumerate(groups):
        if len(group) == 1:
            boxes[k] = raw.boxes[group[0]].numpy()
        else:
            boxes[k, :2], boxes[k, 2:] = match[group, :2].min(0), match[group, 2:].max(0)
    first = [g[0] for g in groups]
    return Merged(torch.from_numpy(boxes), raw.scores[first], raw.labels[first], groups)
