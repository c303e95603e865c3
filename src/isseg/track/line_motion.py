"""Where a tracked object's foot is and where it goes, for :class:`~isseg.track.lines.LineCounter`: the line's
geometry (signed distances, how fast a motion changes them, the frame edges beside it) and, per track, its recent
anchors, boxes and whole-seen shape, from which a foot hidden by a frame border and a motion across the line out
of sight are estimated.

Coordinates are pixels, pixel (x, y) covering [x, x+1) x [y, y+1).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from isseg.track.geometry import frame_interval, median_velocity, share_in_rows, share_near, top_rows
from isseg.track.zones import Line

MIN_INSIDE = 0.3  # a crossing at a corner counts if this share of the object is within the frame's rows


class LineGeometry:
    """A line in a frame of ``size`` (H, W) and the motion of the tracks near it. ``band``: the hysteresis on the
    + and - sides (at most half the room there); ``edge``: whether the frame edge lies within two bands on that
    side. The per-track tables are filled by :class:`~isseg.track.lines.LineCounter`; ``previous`` carries them
    over when the frame size changes. ``feet``: whether the anchors are the objects' feet (not their centres)."""

    def __init__(self, line: Line, size: tuple[int, int], previous: LineGeometry | None = None,
                 feet: bool = True) -> None:
        self.line = line
        self.feet = feet  # the anchors are feet (Analytics' "foot"): the rules of tracks cut at the top or bottom hold
        (ax, ay), (bx, by) = line.a, line.b
        self._a = np.array([ax, ay])
        self._u = np.array([bx - ax, by - ay])
        self._len = float(np.hypot(*self._u))
        h, w = size
        corners = np.array([[0.5, 0.5], [w - 0.5, 0.5], [0.5, h - 0.5], [w - 0.5, h - 0.5]])
        d = self._dist(corners)
        reach = (max(float(d.max()), 0.0), max(float(-d.min()), 0.0))  # room on the + and - sides
        self.band = (min(line.band, reach[0] / 2), min(line.band, reach[1] / 2))
        self.edge = (reach[0] < 2 * line.band, reach[1] < 2 * line.band)
        old = previous
        self._hist: dict[int, deque] = old._hist if old else {}  # last anchors (timestamp, x, y) per track
        self._clear: dict[int, deque] = old._clear if old else {}  # the same, of sightings not cut by a border
        self._box: dict[int, tuple] = old._box if old else {}  # last (top, bottom, borders, x1, x2)
        self._whole: dict[int, deque] = old._whole if old else {}  # last 5 (foot - x1, x2 - foot, h) not cut
        self._height: dict[int, float] = old._height if old else {}  # last height not cut at the top or bottom
        self._shares: dict[int, np.ndarray | None] = old._shares if old else {}  # row shares, whole, near top/bottom
        self._below: dict[int, tuple] = old._below if old else {}  # foot - top rows (dx, dy, rows), whole, near bottom
        self._size = size

    def _dist(self, p: np.ndarray) -> np.ndarray:
        """Signed distance of points [K, 2] to the line, > 0 on its right (as seen on screen)."""
        r = p - self._a
        return (self._u[0] * r[:, 1] - self._u[1] * r[:, 0]) / self._len

    def _along(self, p: np.ndarray) -> np.ndarray:
        """Position of points [K, 2] along the segment: 0 at its first point, 1 at its second."""
        return ((p - self._a) @ self._u) / self._len**2

    def _contact_side(self, contacts: list[tuple[float, float]]) -> int:
        """+1 / -1 when the object touches the frame border on a side of the line that lies at the edge."""
        for c in contacts:
            p = np.array([c])
            if not 0 <= self._along(p)[0] <= 1:
                continue
            d = float(self._dist(p)[0])
            if d > 0 and self.edge[0]:
                return 1
            if d < 0 and self.edge[1]:
                return -1
        return 0

    def _velocity(self, tid: int) -> tuple[float, float] | None:
        """The track's anchor velocity over its last few observations (px per second, :func:`median_velocity`),
        if it has two: those not cut by the frame's border when there are two (a cut object's visible foot
        stays put at the border), else any."""
        hist = self._clear.get(tid)
        if not hist or len(hist) < 2:
            hist = self._hist.get(tid)
        return median_velocity(hist) if hist and len(hist) >= 2 else None

    def _rate(self, v: tuple[float, float]) -> float:
        """How fast the signed distance to the line changes for an anchor moving at ``v`` (px per second)."""
        return (self._u[0] * v[1] - self._u[1] * v[0]) / self._len

    def _via_line(self, p: tuple[float, float], v: tuple[float, float] | None, side: int, tid: int,
                  box: tuple | None = None, past: bool = False) -> bool:
        """Whether track ``tid``'s anchor at ``p`` moving along ``v`` reaches the line (towards ``side``) before
        it leaves the frame: an object cut by two borders (a corner) leaves through the one its motion meets
        first (borders the anchor is on are left out: a cut object's anchor is pinned there). Through the top
        or bottom, with its sighting's ``box`` (top, bottom, border bits, x1, x2) and its height seen whole: whether
        ``MIN_INSIDE`` of it (of its mask's pixels by row as last seen whole near the top or bottom, else of its
        height) is still within the frame's rows on the frame before or after its foot meets the line
        (:func:`~isseg.track.geometry.share_near`). True without a velocity, or when ``p`` is already on
        ``side`` (if ``past``, only if that share was in the frame's rows when its foot met the line, its motion
        run backwards)."""
        d = float(self._dist(np.array([p]))[0])
        if v is None or (d * side > 0 and not past):
            return True
        rate = self._rate(v)
        if rate * side <= 0:
            return d * side > 0  # moving away from the line
        t_line, h = -d / rate, self._height.get(tid)
        axes = ((p[0], v[0], self._size[1]), (p[1], v[1], self._size[0]))
        if box is not None and h:
            top, bottom, bits = box[:3]
            low = (top + h if bits & 8 else bottom) + v[1] * t_line  # its bottom then (cut at the bottom: hidden)
            step = v[1] * frame_interval(self._hist.get(tid, ()))  # rows a frame
            if share_near(low, h, step, self._size[0], self._shares.get(tid)) < MIN_INSIDE:
                return False
            axes = axes[:1]
        if t_line <= 0:
            return True
        t_frame = math.inf
        for pos, vel, size in axes:
            border = size if vel > 0 else 0
            if vel and abs(border - pos) > 1:  # an anchor on the border is clipped there: that one tells nothing
                t_frame = min(t_frame, (border - pos) / vel)
        return t_line <= t_frame

    def _crossed_in_rows(self, tid: int, old: int) -> bool:
        """Whether ``MIN_INSIDE`` of track ``tid`` (of its mask's pixels by row as last seen whole near the top or
        bottom, else of its height: the median of its last sightings seen whole) was within the frame's rows at
        one of the two sightings its foot crossed the line between, from side ``old``: its last one on that side
        and the next (their anchors, or their feet estimated below the frame). True when it was never seen
        whole."""
        seen, hist = self._whole.get(tid), list(self._hist.get(tid, ()))
        h = float(np.median([s[2] for s in seen])) if seen else self._height.get(tid)
        if not h or not hist:
            return True
        d = self._dist(np.array([p[1:] for p in hist], np.float64))
        on_old = np.flatnonzero(d * old > 0)
        pair = hist[on_old[-1]:on_old[-1] + 2] if len(on_old) else hist[:1]
        shares = self._shares.get(tid)
        return max(share_in_rows(y + 0.5, h, self._size[0], shares) for _, _, y in pair) >= MIN_INSIDE

    def _feet_below(self, ids: list[int], points: np.ndarray, boxes: np.ndarray, masks: np.ndarray,
                    bits: np.ndarray, rows: list[int]) -> np.ndarray:
        """``points`` (float64 [N, 2]) with the foot of each sighting in ``rows`` cut by the frame's bottom border
        only (``bits``) estimated: its mask's top rows (:func:`~isseg.track.geometry.top_rows`) moved as on the
        track's last sighting seen whole near the bottom (a rigid object's top rows are still in sight; its visible
        lowest pixels are not its foot). Records those sightings seen whole."""
        out = np.array(points, np.float64)
        for k in rows:
            tid, box = ids[k], boxes[k]
            h = float(box[3] - box[1])
            if bits[k] == 0 and self._size[0] - float(box[3]) < h / 3:
                n = max(int(h / 4), 1)
                if (top := top_rows(masks, k, box, n)) is not None:
                    self._below[tid] = (out[k, 0] - top[0], out[k, 1] - top[1], n)
            elif bits[k] == 8 and tid in self._below:
                dx, dy, n = self._below[tid]
                if (top := top_rows(masks, k, box, n)) is not None:
                    out[k] = (top[0] + dx, top[1] + dy)
        return out

    def _left_via_line(self, tid: int, side: int) -> bool:
        """Whether track ``tid``, gone at a corner, left through the line (towards ``side``): :meth:`_via_line`
        from its last sighting."""
        return self._via_line(self._hidden_foot(tid), self._velocity(tid), side, tid, self._box.get(tid), True)

    def _hidden_foot(self, tid: int) -> tuple[float, float]:
        """Track ``tid``'s foot at its last sighting. Cut by the frame's bottom border, or with its anchor on a
        side border, its anchor is pinned there and its foot is estimated: x from its box's uncut side and
        the foot's offset from it (the median of its last sightings seen whole), y its top plus its height
        seen whole (cut at the bottom)."""
        p, box, seen = tuple(self._hist[tid][-1][1:]), self._box.get(tid), self._whole.get(tid)
        if box is None or not seen:
            return p
        _, _, bits, x1, x2 = box
        left, right, h = np.median(np.array(seen), axis=0).tolist()
        pinned = bits & 8 or min(p[0], self._size[1] - p[0]) <= 1  # on the bottom or a side border
        x = p[0] if not pinned else x1 + left if bits & 5 == 4 else x2 - right if bits & 5 == 1 else p[0]
        return (x, box[0] + h if bits & 10 == 8 and h else p[1])
