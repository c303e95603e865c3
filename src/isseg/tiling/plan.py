"""Tile planning: where the tiles of a frame lie."""

from __future__ import annotations

import math
from typing import NamedTuple


class Tile(NamedTuple):
    """A tile of a frame, in frame pixels: columns x0..x1, rows y0..y1 (end exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.y1 - self.y0, self.x1 - self.x0


def axis_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels along an axis of ``length`` pixels: the fewest tiles whose
    neighbours overlap by at least ``overlap * tile`` pixels, spread evenly from 0 to ``length - tile``
    (so they cover the axis exactly); one tile at 0 when ``length <= tile``."""
    if length <= tile:
        return [0]
    stride = max(1.0, tile * (1.0 - overlap))
    n = math.ceil((length - tile) / stride) + 1
    return [round(k * (length - tile) / (n - 1)) for k in range(n)]


def plan_tiles(frame_size: tuple[int, int], tile_size: tuple[int, int], overlap: float,
               full_frame: bool) -> list[Tile]:
    """Tiles of a ``frame_size`` (H, W) frame, row by row: each ``tile_size`` (H, W), clipped to the frame where
    the frame is smaller, together covering every pixel; with ``full_frame`` the whole frame comes first as
    one more tile, unless one tile already covers it."""
    h, w = int(frame_size[0]), int(frame_size[1])
    if h < 1 or w < 1:
        raise ValueError(f"tiling: empty frame of size {h}x{w}")
    th, tw = min(int(tile_size[0]), h), min(int(tile_size[1]), w)
    tiles = [Tile(x, y, x + tw, y + th) for y in axis_starts(h, th, overlap) for x in axis_starts(w, tw, overlap)]
    if full_frame and len(tiles) > 1:
        tiles.insert(0, Tile(0, 0, w, h))
    return tiles
