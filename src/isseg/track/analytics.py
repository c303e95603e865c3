"""Line counts, zone occupancy and dwell time on tracked detections, with events.

Each tracked object is reduced to one anchor point per frame: its **foot**, the centre of the lowest
pixels of its mask (the bottom-centre of its box when there is no mask), or the centre of its mask. A foot
well above its box's bottom (:func:`~isseg.track.geometry.hidden_feet`: the object's lower part is hidden or
lost from its mask) is not a foot: that sighting keeps its track present and moves it over no line or border.

Lines (:class:`~isseg.track.lines.LineCounter`) count, per class, crossings "in" (to the right of the line's
first -> second point, as seen on screen) and "out". A track's side of a line only changes when its anchor is
more than the line's ``band`` pixels beyond it, so jitter around the line never counts twice; only anchors
between the perpendiculars at the line's ends count. The band holds only while a track goes on: a track first
seen inside the band is on the side its anchor was on, and a track that ends (missing for ``retention_s``, or
still there at :meth:`Analytics.finish`) with its anchor past the line but inside the band has crossed (unless
the frame edge cuts it; the anchor is its last one that the frame's bottom border did not cut, as an object
going out through the bottom has its foot below the frame). Near a frame edge the band shrinks to half the
room left between the line and the edge. An object whose mask touches the frame edge beyond the line is cut by
the frame (its lowest *visible* pixels are not its foot), so it cannot be moved back across the line while it
touches there; one that leaves through that edge counts once it has been missing for ``retention_s`` (or at
:meth:`Analytics.finish`), and one that comes in through it counts once it has walked in by the band from
where it was first seen (unless its motion, run backwards, meets the line before the stream began: it was
there already). An
object cut by that one border can only have left or come in through it; one cut at a corner, only if its
motion (while no border cut it) meets the line before the other border, where "before the top or bottom border"
means while at least 30 % of its height (as last seen whole) is within the frame's rows. So a line a few pixels
from the border counts the objects that walk out and in through it. A track that ends cut by that edge with its
anchor past the line has crossed (the cut only hides the part of it further out), and one that goes out through
the top border within the band before a line crossed it if its motion met the line first (by the same 30 % rule;
not through the bottom border, where its foot is hidden). One first seen cut by the bottom border (coming up
into the frame) crossed unseen if its foot then, estimated once it is seen whole, is across the line from
where it is (by a 30 % rule of its mask's pixels, as first seen whole); it counts when it is first seen whole.
One first seen cut by the top or bottom border just past a line at the frame edge came in through it if its
motion, run backwards, meets the line while 30 % of its mask's pixels are in the frame's rows.

A track's detections from before it was confirmed (:attr:`isseg.track.Tracker.earlier`, passed as
``earlier``) are replayed through the lines first, at their own times, so that an object that crossed a
line while it was too unsure to be tracked (coming in half cut by the frame border) is still counted.

Zones (:class:`~isseg.track.geometry.ZoneMonitor`) keep, per track, whether its anchor is inside (more
than ``band`` pixels inside the border to enter, more than ``band`` outside to leave), give occupancy per
class and the dwell time of each visit, and emit enter, exit and dwell events; a track missing for longer
than the config's ``retention_s`` has left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from isseg.model.detections import Detections
from isseg.track.events import Event
from isseg.track.geometry import FootJumps, ZoneMonitor, anchor_points, border_bits, edge_contacts, hidden_feet
from isseg.track.lines import LineCounter
from isseg.track.zones import ZoneConfig


class Analytics:
    """All lines and zones of a :class:`~isseg.track.zones.ZoneConfig`, updated once per frame.

    ``events = analytics.update(tracked, timestamp, frame_index)`` takes the output of
    :meth:`isseg.track.Tracker.update` (``track_ids`` set) and returns the events of that frame; ``finish``
    closes the visits still open at the end of a stream. Coordinates given as fractions are turned into
    pixels with the first frame's size (and again if the size changes).
    """

    def __init__(self, config: ZoneConfig, source: str = "") -> None:
        self.config = config
        self.source = source
        self.lines: list[LineCounter] = []
        self.zones: list[ZoneMonitor] = []
        self._size: tuple[int, int] | None = None
        self.last_points: dict[int, tuple[float, float]] = {}
        self._times: deque[tuple[float, int]] = deque(maxlen=64)  # (timestamp, frame index) of recent updates
        self._jumps = FootJumps()

    def _layout(self, size: tuple[int, int]) -> None:
        if size == self._size:
            return
        cfg = self.config.in_pixels(*size)
        old_lines = {c.line.name: c for c in self.lines}
        old_zones = {m.zone.name: m for m in self.zones}
        self.lines = [LineCounter(ln, size, cfg.retention_s, old_lines.get(ln.name), cfg.anchor == "foot")
                      for ln in cfg.lines]
        self.zones = [ZoneMonitor(z, cfg.retention_s, old_zones.get(z.name)) for z in cfg.zones]
        self._size = size

    def update(self, tracked: Detections, timestamp: float, frame_index: int,
               earlier: Sequence[tuple[int, Detections]] = ()) -> list[Event]:
        """Events of one frame. ``tracked`` must carry ``track_ids``; its ``image_size`` (or mask size) sets
        the frame size; ``timestamp`` in seconds. ``earlier``: the tracker's :attr:`~isseg.track.Tracker.earlier`
        (``[(frames ago, Detections)]``), replayed through the lines before this frame."""
        if tracked.track_ids is None:
            raise ValueError("Analytics.update needs tracked detections (track_ids set): pass the output of "
                             "Tracker.update")
        size = tuple(tracked.image_size)
        if size == (0, 0) and tracked.masks is not None:
            size = tracked.masks.shape[1:]
        if size == (0, 0):
            raise ValueError("Analytics.update: the detections have no image_size and no masks")
        self._layout((int(size[0]), int(size[1])))
        events = self._replay(earlier)
        self._times.append((timestamp, frame_index))
        points = anchor_points(tracked, self.config.anchor)
        contacts = edge_contacts(tracked, self._size)
        ids = [int(t) for t in tracked.track_ids]
        names = tracked.names
        self.last_points = {i: (float(p[0]), float(p[1])) for i, p in zip(ids, points)}
        hidden = None
        if self.config.anchor == "foot" and tracked.masks is not None:
            cut = border_bits(tracked.boxes, self._size) != 0
            hidden = hidden_feet(tracked.boxes, points) | self._jumps.update(ids, tracked.boxes, points, cut)
        for counter in self.lines:
            events += counter.update(ids, names, points, contacts, timestamp, frame_index, self.source, tracked.boxes,
                                     tracked.masks, hidden)
        for monitor in self.zones:
            events += monitor.update(ids, names, points, timestamp, frame_index, self.source, hidden)
        return events

    def _replay(self, earlier: Sequence[tuple[int, Detections]]) -> list[Event]:
        """Line events of a tracker's earlier detections, at the times of the updates they belong to (those
        older than the updates remembered are left out)."""
        events: list[Event] = []
        for ago, det in sorted(earlier, key=lambda pair: -pair[0]):
            if not 1 <= ago <= len(self._times) or len(det) == 0 or det.track_ids is None:
                continue
            timestamp, frame_index = self._times[-ago]
            points = anchor_points(det, self.config.anchor)
            contacts = edge_contacts(det, self._size)  # type: ignore[arg-type]
            ids, names = [int(t) for t in det.track_ids], det.names
            for counter in self.lines:
                events += counter.replay(ids, names, points, contacts, timestamp, frame_index, self.source, det.boxes,
                                         det.masks)
        return events

    def finish(self, timestamp: float, frame_index: int) -> list[Event]:
        """At the end of a stream: the crossings of tracks that had left through a frame edge but were not yet
        missing for ``retention_s``, and exit events (reason "end") for every track still inside a zone."""
        events: list[Event] = []
        for counter in self.lines:
            events += counter.finish(timestamp, frame_index, self.source)
        for monitor in self.zones:
            events += monitor.close_all(timestamp, frame_index, self.source)
        return events

    def line_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{line: {class: {"in": n, "out": n}}}``."""
        return {c.line.name: {k: dict(v) for k, v in c.counts.items()} for c in self.lines}

    def occupancy(self) -> dict[str, dict[str, int]]:
        """``{zone: {class: tracks inside now}}``."""
        return {m.zone.name: m.occupancy() for m in self.zones}

    def summary(self) -> dict:
        """Counts per line; per zone: occupancy now, entries per class, visits closed and their dwell times."""
        zones = {}
        for m in self.zones:
            dwell = np.array(m.dwells, np.float64)
            zones[m.zone.name] = {
                "occupancy": m.occupancy(), "entries": dict(m.entries), "visits": int(dwell.size),
                "mean_dwell_s": round(float(dwell.mean()), 3) if dwell.size else None,
                "max_dwell_s": round(float(dwell.max()), 3) if dwell.size else None}
        return {"lines": self.line_counts(), "zones": zones}
