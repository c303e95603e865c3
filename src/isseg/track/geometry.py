"""Anchor points of tracked objects, and the per-line and per-zone state machines of the analytics.

See :mod:`isseg.track.analytics` for what they count; this module holds how. Coordinates are pixels with
pixel (x, y) covering [x, x+1) x [y, y+1), so the centre of pixel (x, y) is (x + 0.5, y + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isseg.model.detections import Detections
from isseg.track.events import Event
from isseg.track.matching import crop_mask
from isseg.track.zones import Line, Zone

FORGET_S = 10.0  # the state of a track missing for longer than this is forgotten


def anchor_points(det: Detections, mode: str = "foot") -> np.ndarray:
    """float64 [N, 2] anchor (x, y) of each detection.

    "foot": the centre of the mask's lowest pixels (those within 1 px of its lowest row), looked for inside
    the box only; "centre": the mask's centroid. Without a mask (or with an empty one): the box's
    bottom-centre, or its centre.
    """
    n = len(det)
    boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
    out = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2,
                    boxes[:, 3] if mode == "foot" else (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    if det.masks is None:
        return out
    for i in range(n):
        c = crop_mask(det.masks[i], boxes[i])
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


def edge_contacts(det: Detections, size: tuple[int, int], reach: int = 3) -> list[list[tuple[float, float]]]:
    """For each detection, where it touches the frame's borders: for each border its box comes within
    ``reach`` pixels of, the centre of its mask pixels in the ``reach`` rows or columns along that border
    (the middle of that box side without a mask), as an (x, y) point on the border. Detection jitter of a
    pixel or two does not hide a contact."""
    h, w = size
    out: list[list[tuple[float, float]]] = []
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(det.boxes, np.float64).reshape(-1, 4)):
        pts: list[tuple[float, float]] = []
        ys = (int(max(np.floor(y0) - reach, 0)), int(min(np.ceil(y1) + reach, h)))
        xs = (int(max(np.floor(x0) - reach, 0)), int(min(np.ceil(x1) + reach, w)))
        sides = ((x0 <= reach, 0, slice(0, reach), ys, True), (x1 >= w - reach, w, slice(w - reach, w), ys, True),
                 (y0 <= reach, 0, slice(0, reach), xs, False), (y1 >= h - reach, h, slice(h - reach, h), xs, False))
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


class LineCounter:
    """Crossings of one :class:`~isseg.track.zones.Line` (in pixels) in a frame of ``size`` (H, W).

    ``counts``: ``{class: {"in": n, "out": n}}``. A track that left through the frame edge counts once it
    has been missing for ``retention_s``. ``previous`` carries the state of a counter of the same line over
    when the frame size changes.
    """

    def __init__(self, line: Line, size: tuple[int, int], retention_s: float = 1.5,
                 previous: LineCounter | None = None) -> None:
        self.line = line
        self.retention_s = retention_s
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
        self.counts: dict[str, dict[str, int]] = old.counts if old else {}
        self.side: dict[int, int] = old.side if old else {}
        self._edge_side: dict[int, int] = old._edge_side if old else {}
        self._last: dict[int, tuple[float, tuple[float, float], str]] = old._last if old else {}
        self._entry: dict[int, tuple[int, float]] = old._entry if old else {}
        self._start: float | None = old._start if old else None  # timestamp of the first update
        self._present: set[int] = old._present if old else set()  # tracks seen in the last update

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

    def _cross(self, tid: int, new: int, cls: str, point, timestamp: float, frame: int, source: str) -> Event:
        direction = "in" if new > 0 else "out"
        self.counts.setdefault(cls, {"in": 0, "out": 0})[direction] += 1
        self.side[tid] = new
        return Event("cross", self.line.name, tid, cls, timestamp, frame, direction=direction,
                     point=(float(point[0]), float(point[1])), source=source)

    def _step(self, tid: int, cls: str, d: float, inside: bool, edge: int, point, timestamp: float, frame: int,
              source: str) -> Event | None:
        """One track's observation: ``d`` its signed distance, ``inside`` whether it is between the ends."""
        first = tid not in self._last
        self._last[tid] = (timestamp, (float(point[0]), float(point[1])), cls)
        self._edge_side[tid] = edge
        if first and edge and timestamp - self._start > self.retention_s:
            self._entry[tid] = (edge, d)  # it came in through the frame edge (and was not there at the start)
        old = self.side.get(tid, 0)
        if not inside:
            self.side[tid] = 0  # beyond the ends: walking around the line is no crossing
            self._entry.pop(tid, None)
            return None
        new = 1 if d > self.band[0] else -1 if d < -self.band[1] else 0
        if edge and old == edge and new == -edge:
            return None  # cut by the frame edge beyond the line, its visible foot is not its foot: wait
        if new and old and new != old:
            return self._cross(tid, new, cls, point, timestamp, frame, source)
        if new and old == 0 and tid in self._entry:
            side, d0 = self._entry[tid]
            if new != side:
                if (d0 - d) * side < self.line.band:
                    return None  # not yet walked in from the edge far enough to tell
                del self._entry[tid]
                return self._cross(tid, new, cls, point, timestamp, frame, source)
            del self._entry[tid]
        if new:
            self.side[tid] = new
        return None

    def update(self, ids: list[int], names: list[str], points: np.ndarray,
               contacts: list[list[tuple[float, float]]], timestamp: float, frame: int, source: str = ""
               ) -> list[Event]:
        """Crossings in one frame of the tracks ``ids`` (classes ``names``, anchors ``points`` [N, 2], frame
        border contacts from :func:`edge_contacts`)."""
        events: list[Event] = []
        if self._start is None:
            self._start = timestamp
        wanted = [k for k, n in enumerate(names) if not self.line.classes or n in self.line.classes]
        tol = max(self.line.band, 1.0) / self._len
        if wanted:
            d = self._dist(points[wanted])
            t = self._along(points[wanted])
        for j, k in enumerate(wanted):
            e = self._step(ids[k], names[k], float(d[j]), bool(-tol <= t[j] <= 1 + tol),
                           self._contact_side(contacts[k]), points[k], timestamp, frame, source)
            if e is not None:
                events.append(e)
        present = {ids[k] for k in wanted}
        self._present = present
        return events + self._gone(present, timestamp, frame, source, self.retention_s)

    def _gone(self, present: set[int], timestamp: float, frame: int, source: str, after: float) -> list[Event]:
        """Tracks missing for longer than ``after`` whose mask touched the frame edge beyond the line when last
        seen have left through it: count them. Forget tracks missing for long."""
        events = []
        for tid in [t for t in self._last if t not in present]:
            last_ts, point, cls = self._last[tid]
            edge, old = self._edge_side.get(tid, 0), self.side.get(tid, 0)
            if edge and old and edge != old and timestamp - last_ts > after:
                events.append(self._cross(tid, edge, cls, point, timestamp, frame, source))
            if timestamp - last_ts > FORGET_S:
                for table in (self._last, self.side, self._edge_side, self._entry):
                    table.pop(tid, None)
        return events

    def finish(self, timestamp: float, frame: int, source: str = "") -> list[Event]:
        """At the end of the stream: the tracks missing now that left through the frame edge count at once."""
        return self._gone(self._present, timestamp, frame, source, -1.0)


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
               source: str = "") -> list[Event]:
        import cv2

        events: list[Event] = []
        seen = set()
        band, limit = self.zone.band, self.zone.max_dwell_s
        for k, (tid, cls) in enumerate(zip(ids, names)):
            if self.zone.classes and cls not in self.zone.classes:
                continue
            seen.add(tid)
            pt = (float(points[k][0]), float(points[k][1]))
            dist = cv2.pointPolygonTest(self._contour, pt, True)
            v = self.inside.get(tid)
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
