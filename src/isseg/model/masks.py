"""Instance masks held compactly: each instance's bool mask as the crop of the rectangle it may cover.

``Detections.masks`` of every isseg backend is an :class:`InstanceMasks`. It stands for a bool [N, H, W] array
and behaves as one where that costs nothing extra (``len``, ``shape``, ``masks[i]`` a bool [H, W] array,
``masks[i, y0:y1, x0:x1]`` a window, ``masks[keep]`` a subset, iteration, ``np.asarray(masks)`` the dense
array), but it stores only N crops. A 4K frame with 100 people holds their pixels, not 100 x 8 MB; the dense
array is built only when asked for, one instance (``masks[i]``) or all of them (``np.asarray``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

Region = tuple[int, int, int, int, np.ndarray]  # (y0, y1, x0, x1, bool [y1 - y0, x1 - x0])


class InstanceMasks:
    """N bool masks of an (H, W) image, instance i being ``crops[i]`` (bool [h_i, w_i]) placed at
    ``origins[i]`` = (y0, x0) and False everywhere else. Crops lie inside the image."""

    __slots__ = ("_crops", "_origins", "_size")
    dtype = np.dtype(bool)
    ndim = 3

    def __init__(self, crops: Sequence[np.ndarray], origins: Sequence[tuple[int, int]], image_size: tuple[int, int]):
        if len(crops) != len(origins):
            raise ValueError(f"InstanceMasks: {len(crops)} crops but {len(origins)} origins")
        h, w = (int(v) for v in image_size)
        self._size = (h, w)
        self._crops = [np.asarray(c, dtype=bool) for c in crops]
        self._origins = [(int(y), int(x)) for y, x in origins]
        for c, (y, x) in zip(self._crops, self._origins):
            if c.ndim != 2 or y < 0 or x < 0 or y + c.shape[0] > h or x + c.shape[1] > w:
                raise ValueError(f"InstanceMasks: a crop of shape {c.shape} at (y={y}, x={x}) does not lie in "
                                 f"the {h}x{w} image")

    @staticmethod
    def from_regions(regions: Sequence[Region | None], image_size: tuple[int, int]) -> InstanceMasks:
        """One mask per region (``None``: an empty mask), as :mod:`isseg.model.postprocess` pastes them."""
        empty = np.zeros((0, 0), bool)
        crops = [empty if r is None else r[4] for r in regions]
        origins = [(0, 0) if r is None else (r[0], r[2]) for r in regions]
        return InstanceMasks(crops, origins, image_size)

    @staticmethod
    def from_dense(masks: np.ndarray) -> InstanceMasks:
        """bool (or 0/1) [N, H, W] -> each mask cut to the rectangle of its True pixels."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError(f"InstanceMasks.from_dense: masks must have shape [N, H, W], got {masks.shape}")
        tight = [tight_crop(m) for m in masks.astype(bool, copy=False)]
        return InstanceMasks([c for _, _, c in tight], [(y, x) for y, x, _ in tight], masks.shape[1:])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self._crops), *self._size)

    @property
    def image_size(self) -> tuple[int, int]:
        return self._size

    def __len__(self) -> int:
        return len(self._crops)

    def region(self, i: int) -> tuple[int, int, np.ndarray]:
        """(y0, x0, crop): mask ``i`` is ``crop`` (bool [h, w], not a copy) at row y0, column x0."""
        y, x = self._origins[i]
        return y, x, self._crops[i]

    def areas(self) -> np.ndarray:
        """int64 [N]: True pixels of each mask."""
        return np.array([int(np.count_nonzero(c)) for c in self._crops], np.int64)

    def window(self, i: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """bool [y1 - y0, x1 - x0]: mask ``i`` over rows y0..y1-1, columns x0..x1-1 of the image (clipped to it);
        a view of the crop when the window lies inside it, else a new array."""
        h, w = self._size
        y0, y1, x0, x1 = max(y0, 0), min(max(y1, 0), h), max(x0, 0), min(max(x1, 0), w)
        y1, x1 = max(y1, y0), max(x1, x0)
        cy, cx = self._origins[i]
        crop = self._crops[i]
        ch, cw = crop.shape
        if cy <= y0 and cx <= x0 and y1 <= cy + ch and x1 <= cx + cw:
            return crop[y0 - cy:y1 - cy, x0 - cx:x1 - cx]
        out = np.zeros((y1 - y0, x1 - x0), bool)
        ya, yb, xa, xb = max(y0, cy), min(y1, cy + ch), max(x0, cx), min(x1, cx + cw)
        if yb > ya and xb > xa:
            out[ya - y0:yb - y0, xa - x0:xb - x0] = crop[ya - cy:yb - cy, xa - cx:xb - cx]
        return out

    def dense(self, i: int) -> np.ndarray:
        """bool [H, W]: mask ``i`` at image size (a new array)."""
        return self.window(int(i), 0, self._size[0], 0, self._size[1]).copy()

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.dense(i) for i in range(len(self)))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.zeros(self.shape, bool)
        for k, ((y, x), c) in enumerate(zip(self._origins, self._crops)):
            out[k, y:y + c.shape[0], x:x + c.shape[1]] = c
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        """``masks[i]``: bool [H, W]; ``masks[i, y0:y1, x0:x1]``: :meth:`window`; ``masks[keep]`` (a slice, bool
        or index array): the subset, an ``InstanceMasks``."""
        if isinstance(key, tuple):
            i, *rest = key
            if (_is_int(i) and len(rest) == 2 and all(isinstance(s, slice) and s.step in (None, 1) for s in rest)
                    and all(v is None or v >= 0 for s in rest for v in (s.start, s.stop))):
                rows, cols = rest
                h, w = self._size
                return self.window(int(i), rows.start or 0, h if rows.stop is None else rows.stop,
                                   cols.start or 0, w if cols.stop is None else cols.stop)
            return self.dense(self._index(i))[tuple(rest)] if _is_int(i) else np.asarray(self)[key]
        if _is_int(key):
            return self.dense(self._index(key))
        picks = np.arange(len(self))[key]
        return InstanceMasks([self._crops[k] for k in picks], [self._origins[k] for k in picks], self._size)

    def __setitem__(self, key: Any, value: InstanceMasks) -> None:
        """``masks[idx] = other[idx2]``: replace masks ``idx`` by those of another ``InstanceMasks`` of the
        same image (how a tracker reorders rows in place)."""
        if not isinstance(value, InstanceMasks) or value._size != self._size:
            raise TypeError("InstanceMasks: only masks of an InstanceMasks of the same image size can be assigned")
        picks = np.arange(len(self))[key].reshape(-1)
        if len(picks) != len(value):
            raise ValueError(f"InstanceMasks: {len(value)} masks assigned to {len(picks)} rows")
        for k, c, o in zip(picks.tolist(), list(value._crops), list(value._origins)):
            self._crops[k], self._origins[k] = c, o

    def _index(self, i: Any) -> int:
        k = int(i)
        if not -len(self) <= k < len(self):
            raise IndexError(f"InstanceMasks: index {k} is out of range for {len(self)} masks")
        return k % len(self)

    def rle_counts(self, i: int) -> list[int]:
        """COCO's uncompressed RLE of mask ``i``: run lengths of the column-major flattened [H, W] mask,
        starting with a run of False; computed from the crop, never at image size."""
        h, w = self._size
        y0, x0, crop = self.region(i)
        if not crop.any():
            return [h * w]
        padded = np.zeros((crop.shape[0] + 2, crop.shape[1]), np.int8)
        padded[1:-1] = crop
        flat = padded.T.reshape(-1)  # column-major
        change = np.flatnonzero(np.diff(flat)) + 1  # positions where a run starts, in padded column-major
        col, row = np.divmod(change, padded.shape[0])
        edges = (x0 + col) * h + (y0 + row - 1)  # the same positions in the image's column-major order
        starts, ends = edges[0::2], edges[1::2]
        joined = np.flatnonzero(starts[1:] == ends[:-1])  # a run that goes on from one column to the next
        starts, ends = np.delete(starts, joined + 1), np.delete(ends, joined)
        bounds = np.empty(2 * len(starts) + 2, np.int64)
        bounds[0], bounds[-1] = 0, h * w
        bounds[1:-1:2], bounds[2:-1:2] = starts, ends
        counts = np.diff(bounds)
        return (counts[:-1] if counts[-1] == 0 else counts).tolist()  # no last run of False when it is empty

    def __eq__(self, other: object) -> bool:
        raise TypeError("InstanceMasks: compare np.asarray(masks) (the bool [N, H, W] array), or masks[i] one by one")

    __ne__ = __eq__
    __hash__ = None  # type: ignore[assignment]  # as a numpy array: not hashable

    def __repr__(self) -> str:
        return f"InstanceMasks({len(self)} masks of a {self._size[0]}x{self._size[1]} image)"


def tight_crop(mask: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(y0, x0, a copy of bool ``mask`` [h, w] cut to the rectangle of its True pixels); (0, 0, bool [0, 0])
    when it has none."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return 0, 0, np.zeros((0, 0), bool)
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[y0:y1].any(0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return y0, x0, mask[y0:y1, x0:x1].copy()


def _is_int(key: Any) -> bool:
    return isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_))
