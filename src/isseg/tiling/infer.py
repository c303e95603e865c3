"""Tiled inference of a stream of frames with a model's runtime.

Every tile of every frame goes through the runtime's asynchronous ``stream`` (OpenVINO in throughput mode
keeps the tiles of a frame in flight together); the results come back in input order, so the tiles of a
frame arrive one after the other. Each tile's outputs become raw detections in frame pixels (step 1 of
:mod:`isseg.model.postprocess`, then shifted by the tile's offset); when a frame's last tile is in, they are
merged (:mod:`isseg.tiling.merge`) and only the survivors' masks are pasted at frame size.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from isseg.model.detections import Detections
from isseg.model.postprocess import RawDetections, finish_detections, paste_detections, paste_masks
from isseg.model.transform import PreparedImage
from isseg.sources.decode import read_image
from isseg.tiling.merge import merge
from isseg.tiling.options import TilingOptions
from isseg.tiling.plan import Tile, plan_tiles

if TYPE_CHECKING:
    from isseg.config import ModelConfig
    from isseg.deploy.runtime import Outputs, Runtime


class TiledModel(Protocol):
    """What tiled inference needs of a ``Predictor``."""

    runtime: Runtime
    config: ModelConfig
    class_names: tuple[str, ...]
    input_size: tuple[int, int]  # the model's canvas (H, W), or (short, long) sides

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, PreparedImage]: ...

    def raw(self, outputs: Outputs, prepared: PreparedImage, threshold: float | None) -> RawDetections: ...


@dataclass
class _TileItem:
    """One unit of work of the stream: tile ``index`` of ``count`` of frame ``frame_index`` (or the frame's
    error, as its only item)."""

    frame_index: int
    index: int
    count: int
    frame: np.ndarray | None = None
    tile: Tile | None = None
    error: BaseException | None = None


def _items(images: Iterable[Any], options: TilingOptions, input_size: tuple[int, int]) -> Iterator[_TileItem]:
    tile_hw = options.tile_hw(input_size)
    for f, image in enumerate(images):
        if isinstance(image, BaseException):
            yield _TileItem(f, 0, 1, error=image)
            continue
        try:
            frame = read_image(image)
        except (ValueError, OSError) as exc:
            yield _TileItem(f, 0, 1, error=exc)
            continue
        tiles = plan_tiles(frame.shape[:2], tile_hw, options.overlap, options.full_frame)
        for k, tile in enumerate(tiles):
            yield _TileItem(f, k, len(tiles), frame, tile)


def _tile_raw(model: TiledModel, outputs: Outputs, prepared: PreparedImage, tile: Tile,
              threshold: float | None) -> RawDetections:
    """A tile's outputs -> raw detections in frame pixels, each restricted to the tile (its window). A detection
    whose box lies outside the tile (in the letterbox padding of a tile narrower than the canvas) is dropped:
    the network saw nothing there."""
    raw = model.raw(outputs, prepared, threshold)
    offset = torch.tensor([tile.x0, tile.y0, tile.x0, tile.y0], dtype=torch.float32)
    boxes = raw.boxes + offset
    x1, y1 = boxes[:, 0].clamp(min=tile.x0), boxes[:, 1].clamp(min=tile.y0)
    x2, y2 = boxes[:, 2].clamp(max=tile.x1), boxes[:, 3].clamp(max=tile.y1)
    keep = (x2 > x1) & (y2 > y1)
    probs = raw.mask_probs
    if not bool(keep.all()):
        boxes, probs = boxes[keep], None if probs is None else probs[keep]
        raw = RawDetections(boxes, raw.scores[keep], raw.labels[keep], probs)
    windows = torch.tensor([list(tile)], dtype=torch.int64).expand(len(raw), 4)
    return RawDetections(boxes, raw.scores, raw.labels, probs, windows)


def _concat(parts: list[RawDetections]) -> RawDetections:
    probs = [p.mask_probs for p in parts]
    return RawDetections(torch.cat([p.boxes for p in parts]), torch.cat([p.scores for p in parts]),
                         torch.cat([p.labels for p in parts]),
                         None if any(p is None for p in probs) else torch.cat(probs),  # type: ignore[arg-type]
                         torch.cat([p.windows for p in parts]))  # type: ignore[misc]


def merge_frame(model: TiledModel, parts: list[RawDetections], frame_size: tuple[int, int],
                options: TilingOptions, masks: bool, timings: dict[str, float]) -> Detections:
    """The raw detections of each tile of a frame (in frame pixels) -> the frame's ``Detections``."""
    roi = model.config.roi
    if len(parts) == 1:  # one tile covers the frame: the untiled result
        raw = parts[0]
        keep = slice(0, options.max_detections)
        raw = RawDetections(raw.boxes[keep], raw.scores[keep], raw.labels[keep],
                            None if raw.mask_probs is None else raw.mask_probs[keep])
        t0 = time.perf_counter()
        det = paste_detections(raw, frame_size, roi, model.class_names, masks)
        timings["paste"] = timings.get("paste", 0.0) + time.perf_counter() - t0
        return det
    t0 = time.perf_counter()
    raw = _concat(parts)
    tiles = np.concatenate([np.full(len(p), k, np.int64) for k, p in enumerate(parts)])
    merged = merge(raw, tiles, options, frame_size)
    t1 = time.perf_counter()
    pasted = None
    if masks and raw.mask_probs is not None:
        pasted = paste_masks(raw.mask_probs, raw.boxes, frame_size, roi.mask_paste, roi.mask_threshold,
                             raw.windows, merged.groups)
    det = finish_detections(merged.boxes, merged.scores, merged.labels, pasted, frame_size, roi, model.class_names)
    timings["merge"] = timings.get("merge", 0.0) + t1 - t0
    timings["paste"] = timings.get("paste", 0.0) + time.perf_counter() - t1
    return det


def predict_tiled(model: TiledModel, images: Iterable[Any], options: TilingOptions, threshold: float | None,
                  masks: bool = True, timings: dict[str, float] | None = None) -> Iterator[Detections | Exception]:
    """``Detections`` of each frame of ``images`` (BGR arrays, image paths, or exceptions standing for inputs
    that could not be read), in order; a frame that fails (unreadable, or an inference error in one of its
    tiles) yields its exception in its place. ``timings`` (seconds) accumulates "infer" (tiles pre-processed
    and inferred), "merge" and "paste"."""
    timings = {} if timings is None else timings

    def prepare(item: _TileItem) -> tuple[np.ndarray, tuple[_TileItem, PreparedImage]]:
        if item.error is not None:
            raise item.error
        t = item.tile
        x, prepared = model.preprocess(item.frame[t.y0 : t.y1, t.x0 : t.x1])  # type: ignore[index,union-attr]
        return x, (item, prepared)

    parts: list[RawDetections] = []
    error: Exception | None = None
    start = time.perf_counter()
    for meta, outputs, err in model.runtime.stream(_items(images, options, model.input_size), prepare):
        item, prepared = (meta, None) if isinstance(meta, _TileItem) else meta
        if err is None:
            try:
                parts.append(_tile_raw(model, outputs, prepared, item.tile, threshold))  # type: ignore[arg-type]
            except (ValueError, OSError, RuntimeError) as exc:  # this frame's error, as an inference one
                err = exc
        error = error or err
        if item.index < item.count - 1:
            continue
        timings["infer"] = timings.get("infer", 0.0) + time.perf_counter() - start
        if error is not None:
            yield error
        else:
            yield merge_frame(model, parts, item.frame.shape[:2], options, masks, timings)  # type: ignore[union-attr]
        parts, error = [], None
        start = time.perf_counter()
