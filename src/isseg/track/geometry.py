"""Anchor points of tracked objects, where they touch the frame's border, and the per-zone state machine.

See :mod:`isseg.track.analytics` for what they count; this module holds how. Coordinates are pixels with
pixel (x, y) covering [x, x+1) x [y, y+1), so the centre of pixel (x, y) is (x + 0.5, y + 0.5).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from isseg.model.detections import Detections
from isseg.track.events import Event
from isseg.track.matching import crop_masks
from isseg.track.zones import Zone

ANCHOR_MARGIN = 0.15  # anchor_points looks for the mask this share of its box's size around the box


def anchor_points(det: Detections, mode: str = "foot") -> np.ndarray:
    """float64 [N, 2] anchor (x, y) of each detection.

    "foot": the centre of the mask's lowest pixels (those within 1 px of its lowest row); "centre": the mask's
    centroid. The mask is looked at within its box widened by ``BORDER_REACH`` px plus ``ANCHOR_MARGIN`` of
    the box's size on each side: a box and a mask that disagree by a few pixels (a box cutting off a
    triangle's lowest corner moves its foot by many) still give the mask's foot. Without a mask (or with an
    empty one there): the box's bottom-centre, or its centre.
    """
    boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
    out = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2,
                    boxes[:, 3] if mode == "foot" else (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    if det.masks is None:
        return out
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1)
    wide = boxes + np.array([-1, -1, 1, 1]) * (BORDER_REACH + ANCHOR_MARGIN * size)
    for i, c in enumerate(crop_masks(det.masks, wide)):
        if c.area == 0:
            continue
        if mode == "foot":
            rows = np.flatnonzero(c.mask.any(1))
            low = rows[-1]
            ys, xs = np.nonzero(c.mask[max(low - 1, 0):low + 1])
            out[i] = (c.x0 + xs.mean() + 0.5, c.y0 + low + 0.5)
        else:
            ys, xs = np.nonzero(c.mask)
            out[i] = (c.x0 + xs.mean() + 0.5, c.y0 + ys.mean() + 0.5)
    return out


BORDER_REACH = 3  # a box within this many pixels of a frame border touches it
FOOT_GAP = 0.15  # hidden_feet: a foot anchor this share of its box's height above the box's bottom is not a foot


def hidden_feet(boxes: np.ndarray, points: np.ndarray, gap: float = FOOT_GAP) -> np.ndarray:
    """bool [N]: which foot anchors (float [N, 2], from :func:`anchor_points`) lie more than ``gap`` of their
    box's height (boxes float [N, 4]) above the box's bottom. The mask's lowest pixels are then not the
    object's foot: its lower part is hidden behind something in front of it, or lost from the mask, while the
    box still reaches down (a thin strip of it left visible under an occluder, which the mask does not keep:
    the anchor jumps up and sideways by a quarter of the object)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return b[:, 3] - np.asarray(points, np.float64).reshape(-1, 2)[:, 1] > gap * (b[:, 3] - b[:, 1])


FOOT_JUMP = 0.25  # FootJumps: a foot anchor this share of its box's width off the track's usual place jumped


class FootJumps:
    """Which foot anchors jumped sideways within their box: an object with two low points (a star's legs, a
    person's feet) shows the one that is lowest in this frame's mask, and a mask a pixel taller on the other
    side moves the anchor by half the object. Each track's anchor is kept as a share of its box's width from
    the box's left (sightings cut by a frame border left out); one more than ``jump`` off the median of the
    last ``keep`` (three at least) jumped. Jumped sightings enter the median too, so a lasting change is
    accepted after a few frames; tracks not seen for ``forget`` updates are forgotten."""

    def __init__(self, jump: float = FOOT_JUMP, keep: int = 5, forget: int = 300) -> None:
        self.jump, self.keep, self.forget = jump, keep, forget
        self._seen: dict[int, deque] = {}
        self._last: dict[int, int] = {}
        self._updates = 0

    def update(self, ids: Sequence[int], boxes: np.ndarray, points: np.ndarray, cut: np.ndarray) -> np.ndarray:
        """bool [N]: which of this frame's anchors (float [N, 2]; boxes float [N, 4]; ``cut`` bool [N]: cut by
        a frame border) jumped."""
        self._updates += 1
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        rel = (np.asarray(points, np.float64).reshape(-1, 2)[:, 0] - b[:, 0]) / np.maximum(b[:, 2] - b[:, 0], 1.0)
        out = np.zeros(len(ids), bool)
        for k, tid in enumerate(ids):
            self._last[tid] = self._updates
            if cut[k]:
                continue
            seen = self._seen.setdefault(tid, deque(maxlen=self.keep))
            out[k] = len(seen) >= 3 and abs(rel[k] - statistics.median(seen)) > self.jump
            seen.append(float(rel[k]))
        if self._updates % self.forget == 0:
            for tid in [t for t, u in self._last.items() if u <= self._updates - self.forget]:
                self._last.pop(tid)
                self._seen.pop(tid, None)
        return out


def _window(masks: np.ndarray, i: int, box: np.ndarray, reach: int) -> tuple[int, int, np.ndarray]:
    """(x0, y0, bool [h, w]): mask ``i`` of ``masks`` (bool [N, H, W], an array or an ``InstanceMasks``) within
    ``box`` (x1, y1, x2, y2) widened by ``reach`` pixels and clipped to the frame, and where that starts."""
    _, h, w = masks.shape
    x0, y0 = max(int(box[0]) - reach, 0), max(int(box[1]) - reach, 0)
    x1, y1 = min(int(math.ceil(box[2])) + reach, w), min(int(math.ceil(box[3])) + reach, h)
    return x0, y0, np.asarray(masks[i, y0:y1, x0:x1])


def row_shares(masks: np.ndarray, i: int, box: np.ndarray, reach: int = BORDER_REACH) -> np.ndarray | None:
    """float64 [h + 1]: the share of mask ``i``'s pixels (``masks`` bool [N, H, W], an array or an
    ``InstanceMasks``) in its top 0, 1, ..., h rows, h its height in rows; looked for within its ``box``
    (x1, y1, x2, y2) widened by ``reach`` pixels. None when it has no pixels there."""
    _, _, local = _window(masks, i, box, reach)
    per_row = local.sum(1, dtype=np.float64)
    rows = np.flatnonzero(per_row)
    if not len(rows):
        return None
    cum = np.cumsum(per_row[rows[0]:rows[-1] + 1])
    return np.concatenate([[0.0], cum / cum[-1]])


def top_rows(masks: np.ndarray, i: int, box: np.ndarray, rows: int, reach: int = BORDER_REACH
             ) -> tuple[float, float] | None:
    """(x, y) of mask ``i`` (``masks`` bool [N, H, W]): the mean column of its pixels in its top ``rows`` rows
    (pixel centres) and its top row's upper edge; looked for within its ``box`` widened by ``reach`` pixels. A
    rigid object cut only by the frame's bottom border keeps these where they were on it seen whole. None when
    it has no pixels there."""
    x0, y0, local = _window(masks, i, box, reach)
    filled = np.flatnonzero(local.any(1))
    if not len(filled):
        return None
    _, xs = np.nonzero(local[filled[0]:filled[0] + max(rows, 1)])
    return x0 + float(xs.mean()) + 0.5, float(y0 + filled[0])


def share_in_rows(low: float, h: float, height: int, shares: np.ndarray | None = None) -> float:
    """The share of an object ``h`` high whose bottom is at row ``low`` that is within the rows of a frame
    ``height`` high: of its mask's pixels, with its ``shares`` by row (:func:`row_shares`), else of its
    height."""
    if h <= 0:
        return 0.0
    top = low - h
    a, b = min(max(-top / h, 0.0), 1.0), min(max((height - top) / h, 0.0), 1.0)  # in its height
    if shares is None:
        return b - a
    rows = np.linspace(0.0, 1.0, len(shares))
    return float(np.interp(b, rows, shares) - np.interp(a, rows, shares))


def share_near(low: float, h: float, step: float, height: int, shares: np.ndarray | None = None) -> float:
    """:func:`share_in_rows` on the frame before or the one after the moment an object's bottom is at row
    ``low``, whichever is larger: the frames a crossing falls between, taken half a frame from that moment
    (where they are on average; it moves ``step`` rows a frame)."""
    return max(share_in_rows(low - step / 2, h, height, shares), share_in_rows(low + step / 2, h, height, shares))


def frame_interval(hist: Sequence[tuple[float, float, float]]) -> float:
    """Seconds between the sightings ``hist`` ((timestamp, x, y), ...): their median; 0 with fewer than two."""
    ts = [h[0] for h in hist]
    return float(np.median(np.diff(ts))) if len(ts) > 1 else 0.0


def median_velocity(hist: Sequence[tuple[float, float, float]]) -> tuple[float, float] | None:
    """(vx, vy) per second of points ``hist`` ((timestamp, x, y), ...): the median over every pair of them
    of the pair's velocity (Theil-Sen), so one point off by a detector's jitter does not set it. None
    without two distinct timestamps."""
    h = np.asarray(hist, np.float64).reshape(-1, 3)
    i, j = np.triu_indices(len(h), 1)
    dt = h[j, 0] - h[i, 0]
    ok = dt > 0
    if not ok.any():
        return None
    slopes = (h[j[ok], 1:] - h[i[ok], 1:]) / dt[ok, None]
    return float(np.median(slopes[:, 0])), float(np.median(slopes[:, 1]))


def border_bits(boxes: np.ndarray, size: tuple[int, int], reach: float = BORDER_REACH) -> np.ndarray:
    """int64 [K]: for boxes [K, 4] (x1, y1, x2, y2), which borders of a frame of ``size`` (H, W) each comes
    within ``reach`` pixels of: 1 left, 2 top, 4 right, 8 bottom (0 for all when the size is not known)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = size
    if not h or not w:
        return np.zeros(len(b), np.int64)
    return ((b[:, 0] <= reach) * 1 + (b[:, 1] <= reach) * 2 + (b[:, 2] >= w - reach) * 4
            + (b[:, 3] >= h - reach) * 8).astype(np.int64)


def edge_contacts(det: Detections, size: tuple[int, int], reach: int = BORDER_REACH
                  ) -> list[list[tuple[float, float]]]:
    """For each detection, where it touches the frame's borders: for each border its box comes within
    ``reach`` pixels of, the centre of its mask pixels in the ``reach`` rows or columns along that border
    (the middle of that box side without a mask), as an (x, y) point on the border. Detection jitter of a
    pixel or two does not hide a contact."""
    h, w = size
    boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
    out: list[list[tuple[float, float]]] = []
    for i, ((x0, y0, x1, y1), bits) in enumerate(zip(boxes, border_bits(boxes, size, reach))):
        pts: list[tuple[float, float]] = []
        ys = (int(max(np.floor(y0) - reach, 0)), int(min(np.ceil(y1) + reach, h)))
        xs = (int(max(np.floor(x0) - reach, 0)), int(min(np.ceil(x1) + reach, w)))
        sides = ((bits & 1, 0, slice(0, reach), ys, True), (bits & 4, w, slice(w - reach, w), ys, True),
                 (bits & 2, 0, slice(0, reach), xs, False), (bits & 8, h, slice(h - reach, h), xs, False))
        for touches, at, band, (lo, hi), vertical in sides:
            if not touches or hi <= lo:
                continue
            mid = (lo + hi) / 2
            if det.masks is not None:
                strip = det.masks[i, lo:hi, band].any(1) if vertical else det.masks[i, band, lo:hi].any(0)
                hits = np.flatnonzero(strip)
                if hits.size == 0:
                    continue
                mid = lo + hits.mean() + 0.5
            pts.append((float(at), mid) if vertical else (mid, float(at)))
        out.append(pts)
    return out


@dataclass
class _Visit:
    enter_ts: float
    last_ts: float
    cls: str
    dwell_reported: bool = False


class ZoneMonitor:
    """Visits of one :class:`~isseg.track.zones.Zone` (in pixels): ``entries`` ``{class: n}``, ``dwells``
    (seconds of each visit that ended), and the tracks inside now."""

    def __init__(self, zone: Zone, retention_s: float, previous: ZoneMonitor | None = None) -> None:
        self.zone = zone
        self.retention_s = retention_s
        self._contour = np.array(zone.polygon, np.float32).reshape(-1, 1, 2)
        self.inside: dict[int, _Visit] = previous.inside if previous else {}
        self.entries: dict[str, int] = previous.entries if previous else {}
        self.dwells: list[float] = previous.dwells if previous else []

    def occupancy(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.inside.values():
            out[v.cls] = out.get(v.cls, 0) + 1
        return out

    def _exit(self, tid: int, ts: float, frame: int, reason: str, source: str, end_ts: float) -> Event:
        v = self.inside.pop(tid)
        self.dwells.append(end_ts - v.enter_ts)
        return Event("exit", self.zone.name, tid, v.cls, ts, frame, dwell_s=end_ts - v.enter_ts, reason=reason,
                     source=source)

    def update(self, ids: list[int], names: list[str], points: np.ndarray, timestamp: float, frame: int,
               source: str = "", hidden: np.ndarray | None = None) -> list[Event]:
        """Events of one frame of the tracks ``ids`` (classes ``names``, anchors ``points`` [N, 2]); an anchor
        marked in ``hidden`` (bool [N]: :func:`hidden_feet`, :class:`FootJumps`) keeps its track present and
        moves nothing."""
        import cv2

        events: list[Event] = []
        seen = set()
        band, limit = self.zone.band, self.zone.max_dwell_s
        for k, (tid, cls) in enumerate(zip(ids, names)):
            if self.zone.classes and cls not in self.zone.classes:
                continue
            seen.add(tid)
            v = self.inside.get(tid)
            if hidden is not None and hidden[k]:  # not a foot: tells nothing of where the object is
                if v is not None:
                    v.last_ts = timestamp
                continue
            pt = (float(points[k][0]), float(points[k][1]))
            dist = cv2.pointPolygonTest(self._contour, pt, True)
            if v is None:
                if dist > band:
                    self.inside[tid] = _Visit(timestamp, timestamp, cls)
                    self.entries[cls] = self.entries.get(cls, 0) + 1
                    events.append(Event("enter", self.zone.name, tid, cls, timestamp, frame, point=pt, source=source))
                continue
            v.last_ts = timestamp
            if dist < -band:
                events.append(self._exit(tid, timestamp, frame, "left", source, timestamp))
            elif limit is not None and not v.dwell_reported and timestamp - v.enter_ts >= limit - 1e-9:
                v.dwell_reported = True
                events.append(Event("dwell", self.zone.name, tid, cls, timestamp, frame,
                                    dwell_s=timestamp - v.enter_ts, point=pt, source=source))
        for tid in [t for t, v in self.inside.items() if t not in seen and timestamp - v.last_ts > self.retention_s]:
            events.append(self._exit(tid, timestamp, frame, "lost", source, self.inside[tid].last_ts))
        return events

    def close_all(self, timestamp: float, frame: int, source: str = "") -> list[Event]:
        return [self._exit(tid, timestamp, frame, "end", source, timestamp) for tid in list(self.inside)]
