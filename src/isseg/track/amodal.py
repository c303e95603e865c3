"""The whole object's box while a part of it is hidden: where a track's object is, behind a pillar, a passer-by
or a frame border.

A detector reports what it sees. An object that walks behind a pillar is reported as a box that shrinks
against the pillar's edge, down to a sliver; its centre slows to half the object's speed and stops. A motion
model fed those boxes (the Kalman filter of :mod:`isseg.track.kalman`, which must follow the visible box for
matching) learns that the object stopped, and when it comes out on the other side, one pillar's width and one
object's width further on, its track is looked for in the wrong place. The amodal box does not stop: on each
axis where a sighting is much smaller than the object was last seen whole (``cut``), one edge is hidden, and
it is the one that has lately moved least as the object does; the box is then the other edge and the whole
size. Its velocity on each axis is the visible box's (the Kalman filter's) as it was when last seen whole on
that axis. :class:`isseg.track.Tracker` looks for a lost track last seen cut by it as well as by the Kalman
filter's prediction, and takes the nearer (its re-finding, stage 3).

Each track has a :class:`WholeBox`; the functions take a list of them (one frame's T tracks) and work on them
batched.
"""

from __future__ import annotations

import numpy as np

CUT = 0.85
"""On an axis where a sighting's extent is below this share of the object's whole size, one side is hidden."""
WHOLE = 0.95
"""On an axis where a sighting's extent is at least this share of the object's whole size, it is seen whole: its
velocity is the visible box's, and its size may shrink. Between :data:`CUT` and this, neither changes (the
object may be starting to go behind something)."""
KNOWN = 5
"""An object's motion on an axis is known once it has been seen whole on it this many times; before, a cut
sighting is looked for as the visible box (the velocity of a track first seen going behind something is that
of its visible part)."""
SIZE_DECAY = 0.98
"""Per frame, the whole size may shrink to this share of itself (an object walking away), no faster."""

# The layout of WholeBox.state: its one owner (the properties and the batched functions index by these).
_BOX, _SEEN, _VELOCITY, _SIZE = slice(0, 4), slice(4, 8), slice(8, 10), slice(10, 12)
_LOW, _KNOWN, _CUT = slice(12, 14), slice(14, 16), slice(16, 17)
_LENGTH = 17


class WholeBox:
    """One track's amodal box, as views of one float64 [17] ``state`` (so that a frame's T tracks are stacked
    at once): ``box`` [4] (x1, y1, x2, y2) at the track's last sighting; ``seen`` [4]: that sighting's visible
    box; ``velocity`` [2] (of the centre, pixels per frame); ``size`` [2] (w, h of the object as last seen whole
    on each axis, shrinking by at most :data:`SIZE_DECAY` a frame while it is); ``low`` [2]: on each axis, how
    much more the low edge (x1, y1) than the high one has moved as the object does, lately (> 0: the high edge
    is the hidden one); ``known`` [2]: the times seen whole on each axis; ``cut``: whether the last sighting was
    cut on an axis whose motion is known."""

    __slots__ = ("state",)

    def __init__(self, box: np.ndarray) -> None:
        b = np.asarray(box, np.float64)
        self.state = np.zeros(_LENGTH)
        self.state[_BOX] = self.state[_SEEN] = b
        self.state[_SIZE] = b[2:] - b[:2]

    box = property(lambda self: self.state[_BOX])
    seen = property(lambda self: self.state[_SEEN])
    velocity = property(lambda self: self.state[_VELOCITY])
    size = property(lambda self: self.state[_SIZE])
    low = property(lambda self: self.state[_LOW])
    known = property(lambda self: self.state[_KNOWN])
    cut = property(lambda self: bool(self.state[_CUT][0]))


def centres(wholes: list[WholeBox], frames: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """float64 [T, 2]: where to look for each track's object ``frames`` (float [T]) after its last sighting:
    the centre of its amodal box moved on by its velocity where that sighting was cut, else ``visible``
    (float [T, 2], e.g. the Kalman filter's prediction of the visible box's centre)."""
    state = np.stack([w.state for w in wholes])
    box = state[:, _BOX]
    centre = (box[:, :2] + box[:, 2:]) / 2 + state[:, _VELOCITY] * frames[:, None]
    return np.where(state[:, _CUT] > 0, centre, visible)


def update(wholes: list[WholeBox], frames: np.ndarray, seen: np.ndarray, motion: np.ndarray) -> None:
    """Update ``wholes`` in place with the sightings ``seen`` (float [T, 4] xyxy, visible boxes), ``frames``
    (float [T]) after their last ones. ``motion`` (float [T, 2]): the velocity of the visible box's centre
    (the Kalman filter's); on an axis where a sighting is not whole, the velocity stays what it was when it last
    was (the visible box's centre slows down against an occluder; the object does not). The hidden edge is the
    one whose moves since the last sightings were less like the object's (an occluder's edge stays where it is,
    or moves as the occluder does), judged over the last few sightings (each counts half as much as the next)."""
    state = np.stack([w.state for w in wholes])
    seen = np.asarray(seen, np.float64)
    frames = np.maximum(np.asarray(frames, np.float64), 1.0)[:, None]
    velocity, size = state[:, _VELOCITY], state[:, _SIZE]
    moved = seen - state[:, _SEEN]
    expected = velocity * frames
    low = 0.5 * state[:, _LOW] + np.abs(moved[:, 2:] - expected) - np.abs(moved[:, :2] - expected)
    extent = seen[:, 2:] - seen[:, :2]
    decayed = size * SIZE_DECAY**frames
    cut = extent < CUT * decayed
    whole = extent >= WHOLE * size
    size = np.where(whole, np.maximum(extent, decayed), np.maximum(extent, size))  # else as when last seen whole
    lo = np.where(cut & (low <= 0), seen[:, 2:] - size, seen[:, :2])
    known = state[:, _KNOWN] + whole
    new = np.empty_like(state)
    new[:, _BOX] = np.concatenate([lo, np.where(cut & (low > 0), lo + size, seen[:, 2:])], 1)
    new[:, _SEEN], new[:, _VELOCITY], new[:, _SIZE] = seen, np.where(whole, motion, velocity), size
    new[:, _LOW], new[:, _KNOWN], new[:, _CUT] = low, known, (cut & (known >= KNOWN)).any(1, keepdims=True)
    for w, row in zip(wholes, new):
        w.state = row
