"""Training on tiles (``isseg train --tile SIZE``): each sample is a crop of the tile size out of a training image,
so the network learns objects at the scale tiled inference (:mod:`isseg.tiling`) shows them.

Most samples are placed around an annotation: one of the image's objects is drawn at random and the tile is put
at a random position that contains its box (or, for an object larger than the tile, a random part of it). A
fraction ``empty_fraction`` are background tiles: random positions, redrawn up to ``tries`` times until one
holds no object, so the network also sees the empty parts of large frames it will be run on.

The annotations are cut to the crop: boxes clipped to it, polygons shifted and rasterized at the crop's size,
RLE masks cropped; an object whose box lies less than ``min_visible`` inside the tile is dropped (a sliver of an
object is no example of it), unless its part fills that much of the tile (an object larger than the tile).

Randomness comes from torch's generator, which :class:`isseg.engine.sampler.SeededDataset` seeds per sample, so
runs and resumes draw the same tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from isseg.data.coco_json import usable_polygons
from isseg.data.masks import rle_to_mask, segmentation_to_mask
from isseg.tiling.plan import Tile


def visible_boxes(anns: Sequence[dict[str, Any]], tile: Tile, min_visible: float) -> list[tuple[int, np.ndarray]]:
    """``(index, box)`` of the annotations that stay in ``tile``: box (x1, y1, x2, y2) float64 clipped to the tile
    in tile coordinates; kept when the clipped box is at least 1 px wide and high and holds at least
    ``min_visible`` of the annotation's box area, or of the tile's (an object larger than the tile that fills
    it: tiled inference sees such parts too)."""
    kept = []
    tile_area = float(tile.size[0] * tile.size[1])
    for k, a in enumerate(anns):
        x, y, w, h = (float(v) for v in a["bbox"])
        x1, y1 = max(x, tile.x0), max(y, tile.y0)
        x2, y2 = min(x + w, tile.x1), min(y + h, tile.y1)
        if x2 - x1 < 1 or y2 - y1 < 1 or w * h <= 0:
            continue
        inside = (x2 - x1) * (y2 - y1)
        if inside / (w * h) >= min_visible or inside / tile_area >= min_visible:
            kept.append((k, np.array([x1 - tile.x0, y1 - tile.y0, x2 - tile.x0, y2 - tile.y0])))
    return kept


def crop_mask(segmentation: Any, tile: Tile) -> np.ndarray:
    """The part of a COCO ``segmentation`` inside ``tile``: ``uint8 [h, w]`` 0/1 at the tile's size. Polygons
    are shifted and rasterized at the tile size (no full-frame mask); RLE (full-frame by nature) is decoded and
    cropped."""
    h, w = tile.size
    if isinstance(segmentation, dict):
        full = rle_to_mask(segmentation)
        return np.ascontiguousarray(full[tile.y0:tile.y1, tile.x0:tile.x1])
    shifted = [[v - (tile.x0 if j % 2 == 0 else tile.y0) for j, v in enumerate(p)]
               for p in usable_polygons(segmentation)]
    return segmentation_to_mask(shifted, h, w)


def crop_target(img: dict[str, Any], anns: Sequence[dict[str, Any]], label_of: dict[int, int], tile: Tile,
                min_visible: float) -> dict[str, Any]:
    """The training target of ``tile`` of image ``img`` (its ``images`` record) from its annotations, as
    :func:`isseg.data.targets.coco_target` builds it for a whole image: ``boxes`` float32 ``[N, 4]`` in tile
    pixels, ``labels`` int64 ``[N]``, ``masks`` uint8 ``[N, h, w]``, ``iscrowd`` int64 ``[N]`` (zeros),
    ``image_id``, ``orig_size`` (the tile's (h, w)), and ``tile`` (x0, y0, x1, y1) in frame pixels."""
    h, w = tile.size
    kept = visible_boxes(anns, tile, min_visible)
    masks = np.zeros((len(kept), h, w), np.uint8)
    for n, (k, _) in enumerate(kept):
        masks[n] = crop_mask(anns[k]["segmentation"], tile)
    boxes = np.stack([b for _, b in kept]) if kept else np.zeros((0, 4))
    return {
        "boxes": torch.from_numpy(boxes.astype(np.float32)),
        "labels": torch.tensor([label_of[anns[k]["category_id"]] for k, _ in kept], dtype=torch.int64),
        "masks": torch.from_numpy(masks),
        "iscrowd": torch.zeros(len(kept), dtype=torch.int64),
        "image_id": int(img["id"]),
        "orig_size": (h, w),
        "tile": tuple(tile),
    }


def _uniform(lo: float, hi: float) -> int:
    """A random integer in [lo, hi] (torch's generator); ``lo`` when the range is empty."""
    lo, hi = int(np.ceil(lo)), int(np.floor(hi))
    return lo if hi <= lo else lo + int(torch.randint(0, hi - lo + 1, ()).item())


def tile_around(box: Sequence[float], frame_hw: tuple[int, int], tile_hw: tuple[int, int]) -> Tile:
    """A random tile of ``tile_hw`` (at most the frame) inside the frame that contains ``box`` (x, y, w, h)
    whole, or for a box larger than the tile, lies inside it."""
    (fh, fw), (th, tw) = frame_hw, (min(tile_hw[0], frame_hw[0]), min(tile_hw[1], frame_hw[1]))
    x, y, w, h = (float(v) for v in box)
    starts = []
    for lo_edge, size, tile, frame in ((x, w, tw, fw), (y, h, th, fh)):
        a, b = lo_edge + size - tile, lo_edge  # the tile starts in [a, b] to contain the box
        a, b = (a, b) if a <= b else (b, a)  # a box larger than the tile: the tile starts inside it
        start = _uniform(max(0.0, a), min(float(frame - tile), b))
        starts.append(min(max(start, 0), frame - tile))  # a box reaching out of the frame: the nearest fit
    return Tile(starts[0], starts[1], starts[0] + tw, starts[1] + th)


def random_tile(frame_hw: tuple[int, int], tile_hw: tuple[int, int]) -> Tile:
    """A tile of ``tile_hw`` (at most the frame) at a uniformly random position inside the frame."""
    th, tw = min(tile_hw[0], frame_hw[0]), min(tile_hw[1], frame_hw[1])
    x0, y0 = _uniform(0, frame_hw[1] - tw), _uniform(0, frame_hw[0] - th)
    return Tile(x0, y0, x0 + tw, y0 + th)


class TileDataset(torch.utils.data.Dataset):
    """Tiles of a training :class:`isseg.data.coco.CocoDataset` (see the module docstring): ``dataset[i]`` is
    ``(image uint8 [h, w, 3] BGR, target)``, a tile of image ``i`` (at most ``tile`` x ``tile``) and its target
    (:func:`crop_target`), after the base dataset's ``transform``. One sample per image per epoch, each epoch
    another tile."""

    def __init__(self, base: Any, tile: int, empty_fraction: float = 0.15, min_visible: float = 0.5,
                 tries: int = 10) -> None:
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 32:
            raise ValueError(f"tile size must be an int >= 32, got {tile!r}")
        if not 0.0 <= empty_fraction <= 1.0:
            raise ValueError(f"empty tile fraction must be in [0, 1], got {empty_fraction}")
        if not 0.0 < min_visible <= 1.0:
            raise ValueError(f"min_visible must be in (0, 1], got {min_visible}")
        self.base, self.tile, self.empty_fraction = base, tile, float(empty_fraction)
        self.min_visible, self.tries = float(min_visible), int(tries)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def annotation_file(self) -> Any:
        return self.base.annotation_file

    def choose_tile(self, i: int) -> tuple[Tile, str]:
        """Where the tile of item ``i`` lies, and what it is: "object" (around an annotation), "empty" (a
        background tile holding no object) or "random" (no empty position found in ``tries`` draws)."""
        img, anns = self.base.image_info(i), self.base.train_annotations(i)
        frame, size = (int(img["height"]), int(img["width"])), (self.tile, self.tile)
        if anns and torch.rand(()).item() >= self.empty_fraction:
            k = int(torch.randint(0, len(anns), ()).item())
            return tile_around(anns[k]["bbox"], frame, size), "object"
        tile = random_tile(frame, size)
        for _ in range(self.tries):
            if not visible_boxes(anns, tile, self.min_visible):
                return tile, "empty"
            tile = random_tile(frame, size)
        return tile, "random"

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        tile, _ = self.choose_tile(i)
        image = np.ascontiguousarray(self.base.load_image(i)[tile.y0:tile.y1, tile.x0:tile.x1])
        img = self.base.image_info(i)
        label_of = {cid: self.base.category_id_to_label(cid) for cid in self.base.category_ids}
        target = crop_target(img, self.base.train_annotations(i), label_of, tile, self.min_visible)
        if self.base.transform is not None:
            image, target = self.base.transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"TileDataset({self.base!r}, tile={self.tile}, empty_fraction={self.empty_fraction:g})"
