"""Line crossings of tracked objects: :class:`LineCounter`, the state machine behind
:meth:`isseg.track.Analytics.line_counts` (see :mod:`isseg.track.analytics` for what it counts).

Coordinates are pixels, pixel (x, y) covering [x, x+1) x [y, y+1). A track's side of the line is +1 (to the
right of the line's first -> second point, as seen on screen), -1, or 0 (not known yet).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from isseg.track.events import Event
from isseg.track.geometry import border_bits, frame_interval, row_shares, share_in_rows, share_near, top_rows
from isseg.track.line_motion import MIN_INSIDE, LineGeometry
from isseg.track.zones import Line

FORGET_S = 10.0  # the state of a track missing for longer than this is forgotten
STARTUP_UPDATES = 3  # replays of a stream's first updates make no edge entry, nor a came-up test (_came_up)


def _top_x(masks: np.ndarray | None, k: int, box: np.ndarray, rows: int) -> float:
    """The x of detection ``k``'s top ``rows`` rows (:func:`~isseg.track.geometry.top_rows`), or of its box's
    centre without masks."""
    top = None if masks is None else top_rows(masks, k, box, rows)
    return float(box[0] + box[2]) / 2 if top is None else top[0]


def _crossings(path: tuple | None, d: float, low: float) -> tuple:
    """A track's foot path ``(d, low, {side: (low before, low after)})`` with one more sighting (signed distance
    ``d`` to the line, bottom row ``low``): the last one, and where the foot last crossed to each side."""
    last_d, last_low, flips = path if path is not None else (0.0, 0.0, {})
    if last_d * d < 0:
        flips = {**flips, 1 if d > 0 else -1: (last_low, low)}
    return d, low, flips


class LineCounter(LineGeometry):
    """Crossings of one :class:`~isseg.track.zones.Line` (in pixels) in a frame of ``size`` (H, W).

    ``counts``: ``{class: {"in": n, "out": n}}``. A track that left through the frame edge beyond the line (its mask
    touched that edge and no other border, or, cut at a corner, its motion meets the line before the other border; a
    foot the border hides estimated by :meth:`_hidden_foot`) counts once it has been missing for ``retention_s``;
    one that came in through it counts once it has walked in by the band and that edge no longer cuts it (cut at a
    corner: if its motion, run backwards, meets the line before the other border, judged once it is seen whole if
    the top or bottom cut it; from the stream's first frame on), unless it was first seen already past the line with
    a motion that, run backwards, meets the line before the stream's first frame (it was there before). "Before the
    top or bottom border", with the track's boxes: while at least ``MIN_INSIDE`` of it (seen whole) is within the
    frame's rows on the frame before or after its foot is on the line. A track gone through the top border (or the
    bottom, by its foot estimated below the frame) within the band before the line crossed it if its motion met the
    line that way. One first seen cut by the bottom border (at a corner too) crossed unseen if its foot then,
    estimated when it is first seen whole, is across the line; one first seen cut by the top or bottom just past a
    line at the frame edge came in through it if its motion, run backwards, meets the line first (:meth:`_came_up`).
    The share of it within the frame's rows is of its mask's pixels (as first seen whole in these two, as last seen
    whole near the top or bottom elsewhere), else of its height. A track cut by the top or bottom border moves over
    no line until it has been seen whole (then :meth:`_came_up` judges it, by its foot's path when the top cut it);
    after that, a crossing made while cut there counts only with ``MIN_INSIDE`` of it within the frame's rows around
    it (:meth:`_crossed_in_rows`), and while the bottom alone cuts it its foot is estimated from its mask's top rows
    (:meth:`_feet_below`). These rules hold for feet: with ``feet=False`` (the anchors are centres) they are off.
    ``previous`` carries the state of a counter of the same line over when the frame size changes.
    """

    def __init__(self, line: Line, size: tuple[int, int], retention_s: float = 1.5,
                 previous: LineCounter | None = None, feet: bool = True) -> None:
        super().__init__(line, size, previous, feet)
        self.retention_s = retention_s
        old = previous
        self.counts: dict[str, dict[str, int]] = old.counts if old else {}
        self.side: dict[int, int] = old.side if old else {}
        self._edge_side: dict[int, int] = old._edge_side if old else {}
        self._last: dict[int, tuple[float, tuple[float, float], str]] = old._last if old else {}
        self._entry: dict[int, tuple] = old._entry if old else {}  # (side, d, anchor, borders, box, time) of entry
        self._updates: int = old._updates if old else 0  # updates so far
        self._t0: float = old._t0 if old else math.inf  # the time of the first update
        self._present: set[int] = old._present if old else set()  # tracks seen in the last update
        self._foot: dict[int, tuple[float, float]] = old._foot if old else {}  # last anchor not cut at the bottom
        self._replayed: set[int] = old._replayed if old else set()  # tracks seen in replays only so far
        self._start: dict[int, int] = old._start if old else {}  # side of a first sighting within the band
        self._under: dict[int, tuple] = old._under if old else {}  # first seen cut at the top or bottom
        self._path: dict[int, tuple] = old._path if old else {}  # their foot's path till seen whole (_crossings)

    def _cross(self, tid: int, new: int, cls: str, point, timestamp: float, frame: int, source: str) -> Event:
        direction = "in" if new > 0 else "out"
        self.counts.setdefault(cls, {"in": 0, "out": 0})[direction] += 1
        self.side[tid] = new
        self._foot.pop(tid, None)  # from before the crossing: not the anchor to settle on
        self._under.pop(tid, None)
        self._path.pop(tid, None)
        return Event("cross", self.line.name, tid, cls, timestamp, frame, direction=direction,
                     point=(float(point[0]), float(point[1])), source=source)

    def _step(self, tid: int, cls: str, d: float, inside: bool, edge: int, point, timestamp: float, frame: int,
              source: str, replay: bool = False, borders: int = 0, cut: int = 0) -> Event | None:
        """One track's observation: ``d`` its signed distance, ``inside`` whether it is between the ends.
        A ``replay`` (an earlier sighting of a new track) may count a crossing; one cut by the frame edge
        beyond the line only tells where the object came in, and only when it is cut by that one border
        (``borders``; at a corner the way in is not known). ``cut``: the top (2) and bottom (8) border bits that
        cut it (0 when the anchors are not feet)."""
        p = (float(point[0]), float(point[1]))
        if replay and edge:
            if tid not in self._last and borders == 1 and self._updates > STARTUP_UPDATES:
                self._entry[tid] = (edge, d, p, borders, self._box.get(tid), timestamp)
                self._replayed.add(tid)
            return None
        seen = tid in self._last
        first = not seen or tid in self._replayed
        if replay:
            self._replayed.add(tid)
            first = False
        else:
            self._replayed.discard(tid)
        self._last[tid] = (timestamp, p, cls)
        self._hist.setdefault(tid, deque(maxlen=6)).append((timestamp, *p))
        if not borders:
            self._clear.setdefault(tid, deque(maxlen=6)).append((timestamp, *p))
        self._edge_side[tid] = edge * (2 if borders > 1 else 1)  # 2: cut at a corner
        if first and edge and tid not in self._entry:
            self._entry[tid] = (edge, d, p, borders, self._box.get(tid), timestamp)  # came in (not there before)
        old = self.side.get(tid, 0)
        if not inside:
            self.side[tid] = 0  # beyond the ends: walking around the line is no crossing
            for table in (self._entry, self._start):
                table.pop(tid, None)
            return None
        if cut and tid not in self._height and not edge:
            self._path[tid] = _crossings(self._path.get(tid), d, p[1] + 0.5)
            return None  # cut at the top or bottom, never seen whole: its side is judged when it is (_came_up)
        new = 1 if d > self.band[0] else -1 if d < -self.band[1] else 0
        if not seen and not edge and not new and d:
            self._start[tid] = 1 if d > 0 else -1  # first seen within the band: on this side of the line
        start = self._start.pop(tid, 0) if new else 0
        if edge and new == -edge and (old or self._entry.get(tid, (0,))[0]) == edge:
            return None  # cut by the frame edge beyond the line (its side, or where it came in): its visible foot
            # may not be its foot: wait
        if new and old and new != old:
            if cut and not self._crossed_in_rows(tid, old):
                self.side[tid] = new  # out of the frame's rows (but for its foot) as it crossed: no crossing
                return None
            return self._cross(tid, new, cls, point, timestamp, frame, source)
        if new and old == 0 and tid in self._entry:
            side, d0, p0, at, box0, t0 = self._entry[tid]
            if new != side:
                if (d0 - d) * side < self.line.band or (at > 1 and box0 and box0[2] & 10 and tid not in self._height):
                    return None  # not yet walked in from the edge far enough, or seen whole, to tell
                del self._entry[tid]
                v = self._velocity(tid)
                rate = None if v is None else self._rate(v)
                if d0 * side < 0 and rate is not None and rate * side < 0 and t0 - d0 / rate < self._t0:
                    self.side[tid] = new  # its motion, run backwards, meets the line before the stream began
                    return None
                back = None if v is None else (-v[0], -v[1])  # back in time
                if at == 1 or self._via_line(p0, back, side, tid, box0):
                    return self._cross(tid, new, cls, point, timestamp, frame, source)
                self.side[tid] = new
                return None
            del self._entry[tid]
        if new and old == 0 and start == -new and not edge:
            return self._cross(tid, new, cls, point, timestamp, frame, source)  # from its first sighting
        if new:
            self.side[tid] = new
        return None

    def _settle(self, tid: int, timestamp: float, frame: int, source: str, gone: bool = False) -> Event | None:
        """A track that ends (gone, or at the end of the stream) with its anchor across the line from its
        side, still within the band, and not cut by the frame edge on its old side: it crossed (it will not
        pass the band). One cut by the one frame edge beyond the line on its new side counts too (the cut only
        hides the part of it further out: its foot is at least as far). Its anchor is the last one not cut by
        the frame's bottom border, if any (an object going out through the bottom has its foot below the
        frame: its lowest visible pixels are not its foot). One ``gone`` through the top border still on its
        side within the band crossed if its motion met the line first (:meth:`_via_line`); one gone through the
        bottom border alone, by its foot estimated below the frame (:meth:`_hidden_foot`), if its motion meets
        the line while ``MIN_INSIDE`` of it is within the frame's rows (the share judged whichever side that
        estimate is on)."""
        old = self.side.get(tid, 0)  # 0 once it walked beyond the line's ends
        if not old or self._edge_side.get(tid, 0) not in (0, -old):
            return None
        _, point, cls = self._last[tid]
        point = self._foot.get(tid, point)
        d = float(self._dist(np.array([point]))[0])
        if d * old < 0:
            event = self._cross(tid, -old, cls, point, timestamp, frame, source)
            self._foot[tid] = point  # settled there: on its new side now
            return event
        box = self._box.get(tid)
        if gone and box is not None and box[2] & 10 in (2, 8):
            if box[2] & 8:  # its foot hidden below the frame: estimated (and its crossing judged both ways)
                point = self._hidden_foot(tid)
                d = float(self._dist(np.array([point]))[0])
            if abs(d) <= self.band[old < 0] and self._via_line(point, self._velocity(tid), -old, tid, box,
                                                               bool(box[2] & 8)):
                event = self._cross(tid, -old, cls, point, timestamp, frame, source)
                self.side[tid] = 0  # out of the frame: settled
                return event
        return None

    def update(self, ids: list[int], names: list[str], points: np.ndarray,
               contacts: list[list[tuple[float, float]]], timestamp: float, frame: int, source: str = "",
               boxes: np.ndarray | None = None, masks: np.ndarray | None = None,
               hidden: np.ndarray | None = None) -> list[Event]:
        """Crossings in one frame of the tracks ``ids`` (classes ``names``, anchors ``points`` [N, 2], frame
        border contacts from :func:`edge_contacts`, boxes [N, 4] (x1, y1, x2, y2) and masks bool [N, H, W] if
        known). A sighting marked in ``hidden`` (bool [N]: ``geometry.hidden_feet``, ``FootJumps``) that no border
        cuts, of a track seen before, keeps it present and moves nothing: its anchor is not its foot."""
        self._updates += 1
        self._t0 = min(self._t0, timestamp)
        events, wanted = self._steps(ids, names, points, contacts, timestamp, frame, source, False, boxes, masks,
                                     hidden)
        self._present = {ids[k] for k in wanted}
        return events + self._gone(self._present, timestamp, frame, source, self.retention_s)

    def replay(self, ids: list[int], names: list[str], points: np.ndarray,
               contacts: list[list[tuple[float, float]]], timestamp: float, frame: int, source: str = "",
               boxes: np.ndarray | None = None, masks: np.ndarray | None = None) -> list[Event]:
        """Observations of an earlier frame of the tracks ``ids`` only (new tracks' first moments, see
        :attr:`isseg.track.Tracker.earlier`); other tracks are not missing for that."""
        return self._steps(ids, names, points, contacts, timestamp, frame, source, True, boxes, masks)[0]

    def _steps(self, ids: list[int], names: list[str], points: np.ndarray,
               contacts: list[list[tuple[float, float]]], timestamp: float, frame: int, source: str,
               replay: bool = False, boxes: np.ndarray | None = None, masks: np.ndarray | None = None,
               hidden: np.ndarray | None = None) -> tuple[list[Event], list[int]]:
        """:meth:`_step` of each track of a class the line counts; (events, the rows it looked at)."""
        events: list[Event] = []
        wanted = [k for k, n in enumerate(names) if not self.line.classes or n in self.line.classes]
        tol = max(self.line.band, 1.0) / self._len
        bits = border_bits(boxes, self._size) if boxes is not None else None
        if wanted:
            t = self._along(points[wanted])  # of the visible anchors: a foot below the frame is off a line's end there
        if bits is not None and masks is not None and self.feet:
            points = self._feet_below(ids, points, boxes, masks, bits, wanted)  # type: ignore[arg-type]
        if wanted:
            d = self._dist(points[wanted])
        for j, k in enumerate(wanted):
            first = ids[k] not in self._last
            if hidden is not None and hidden[k] and not first and bits is not None and not bits[k]:
                self._last[ids[k]] = (timestamp, self._last[ids[k]][1], names[k])  # present; its foot is unknown
                continue
            if boxes is not None and bits is not None:
                x1, top, x2, bottom = boxes[k].tolist()
                self._box[ids[k]] = (top, bottom, int(bits[k]), x1, x2)
                if not bits[k]:
                    if (seen := self._whole.get(ids[k])) is None:
                        seen = self._whole[ids[k]] = deque(maxlen=5)
                    seen.append((float(points[k][0]) - x1, x2 - float(points[k][0]), bottom - top))
                if not bits[k] & 10:  # cut neither at the top nor at the bottom: its whole height
                    self._height[ids[k]] = bottom - top
                    if masks is not None and min(top, self._size[0] - bottom) < (bottom - top) / 3:  # near top / bottom
                        self._shares[ids[k]] = row_shares(masks, k, boxes[k])
            e = self._step(ids[k], names[k], float(d[j]), bool(-tol <= t[j] <= 1 + tol),
                           self._contact_side(contacts[k]), points[k], timestamp, frame, source, replay,
                           len(contacts[k]), 0 if bits is None or not self.feet else int(bits[k]) & 10)
            side = self.side.get(ids[k], 0)
            if not any(y >= self._size[0] for _, y in contacts[k]):  # its foot is in the frame
                self._foot[ids[k]] = (float(points[k][0]), float(points[k][1]))
            elif side and d[j] * side > self.band[0 if side > 0 else 1]:
                self._foot.pop(ids[k], None)  # even cut, it is clearly on its side now
            if e is None and boxes is not None and bits is not None:
                if first and bits[k] & 10:  # cut at the top or bottom: judged once seen whole (_came_up)
                    rows = max(int(bottom - top), 1)  # all in sight: its top rows
                    self._under[ids[k]] = (top, bottom, _top_x(masks, k, boxes[k], rows), int(bits[k]),
                                           self._updates > STARTUP_UPDATES, float(points[k][0]),
                                           float(points[k][1]), timestamp, rows)
                elif not first and not bits[k] & 10 and ids[k] in self._under:
                    cx = _top_x(masks, k, boxes[k], self._under[ids[k]][-1])
                    e = self._came_up(ids[k], names[k], boxes[k], points[k], cx, timestamp, frame, source,
                                      None if masks is None else row_shares(masks, k, boxes[k]))
            if e is not None:
                events.append(e)
        return events, wanted

    def _came_up(self, tid: int, cls: str, box: np.ndarray, point, cx: float, timestamp: float, frame: int,
                 source: str, shares: np.ndarray | None = None) -> Event | None:
        """A track first seen cut by the top or bottom border (at a corner too; that sighting is in
        ``_under``) may have crossed the line unseen; it is judged now, when it is first seen whole. Cut by the
        bottom, its foot was below the frame (its visible lowest pixels pinned to the border): its foot then is
        estimated from that sighting (its top plus the height seen whole; ``cx0``, the x of its mask's rows then,
        plus the foot's offset from ``cx``, the x of the same top rows now). If that is across the line from where
        the track is now, it crossed, if ``MIN_INSIDE`` of it (of its mask's pixels by row, ``shares``, else of
        its height) was within the frame's rows on the frame before or after its estimated foot (moving straight
        to the one now) met the line; cut by the top, its foot was in sight: on the two sightings its foot
        crossed the line between (``_path``). Judged once the track is on a side (past the band). If it is on the
        track's side, but within the object's width of a line at the frame edge (first seen after the stream's
        first frames), and its motion from then to now (foot to foot), run backwards, meets the line with
        ``MIN_INSIDE`` of it in the frame's rows (the same frames), it came in through the line."""
        side, h = self.side.get(tid, 0), float(box[3] - box[1])
        if not side:
            return None  # within the band (or beyond the line's ends): judged at a later sighting
        top0, bottom0, cx0, bits0, late, px0, py0, t0, _ = self._under.pop(tid)
        foot0 = (cx0 + float(point[0]) - cx, top0 + h) if bits0 & 8 else (px0, py0)
        d0, d1 = (float(x) for x in self._dist(np.array([foot0, point], np.float64)))
        if d1 * side <= 0:
            return None
        pair = _crossings(self._path.pop(tid, None), d1, float(point[1]) + 0.5)[2].get(side)
        if d0 * side < 0:  # across the line then
            if pair and not bits0 & 8:  # its foot in sight: its bottom on the sightings around the crossing
                inside = max(share_in_rows(low, h, self._size[0], shares) for low in pair)
            else:
                low0, low1 = (top0 + h, float(box[1]) + h) if bits0 & 8 else (py0, float(point[1]))  # its bottom
                low = low0 + d0 / (d0 - d1) * (low1 - low0)  # when the foot met the line
                rows_s = (low1 - low0) / (timestamp - t0) if timestamp > t0 else 0.0  # its bottom's speed
                inside = share_near(low, h, rows_s * frame_interval(self._hist.get(tid, ())), self._size[0], shares)
            if inside < MIN_INSIDE:
                return None
            return self._cross(tid, side, cls, point, timestamp, frame, source)
        # its motion: from the estimated foot then straight to the foot now (a cut object's anchors are pinned to
        # the border, so their motion misses the motion across it)
        dt = timestamp - t0
        v = ((float(point[0]) - foot0[0]) / dt, (float(point[1]) - foot0[1]) / dt) if dt > 0 else None
        if v is None or not late or not self.edge[0 if side < 0 else 1] or abs(d0) > float(box[2] - box[0]):
            return None
        rate = self._rate(v)
        if rate * side <= 0:
            return None
        back = d0 / rate  # seconds before its first sighting that its foot was on the line
        low = (top0 + h if bits0 & 8 else bottom0) - v[1] * back  # its bottom then
        if share_near(low, h, v[1] * frame_interval(self._hist.get(tid, ())), self._size[0], shares) < MIN_INSIDE:
            return None
        return self._cross(tid, side, cls, point, timestamp, frame, source)

    def _gone(self, present: set[int], timestamp: float, frame: int, source: str, after: float) -> list[Event]:
        """Tracks missing for longer than ``after`` whose mask touched the frame edge beyond the line when last
        seen have left through it: count them. Forget tracks missing for long."""
        events = []
        for tid in [t for t in self._last if t not in present]:
            last_ts, point, cls = self._last[tid]
            edge, old = self._edge_side.get(tid, 0), self.side.get(tid, 0)
            corner, edge = abs(edge) > 1, int(np.sign(edge))
            if edge and old and edge != old and timestamp - last_ts > after:
                if not corner or self._left_via_line(tid, edge):
                    events.append(self._cross(tid, edge, cls, point, timestamp, frame, source))
                else:
                    self._edge_side[tid] = 0  # it left through another border
            elif timestamp - last_ts > after and (e := self._settle(tid, timestamp, frame, source, True)) is not None:
                events.append(e)
            if timestamp - last_ts > FORGET_S:
                for table in (self._last, self.side, self._edge_side, self._entry, self._hist, self._clear,
                              self._foot, self._start, self._box, self._whole, self._height,
                              self._under, self._shares, self._below, self._path):
                    table.pop(tid, None)
                self._replayed.discard(tid)
        return events

    def finish(self, timestamp: float, frame: int, source: str = "") -> list[Event]:
        """At the end of the stream: the tracks missing now that left through the frame edge count at once, and
        every track that ends across the line within the band (:meth:`_settle`)."""
        events = self._gone(self._present, timestamp, frame, source, -1.0)
        settled = (self._settle(tid, timestamp, frame, source) for tid in sorted(self._present))
        return events + [e for e in settled if e is not None]
