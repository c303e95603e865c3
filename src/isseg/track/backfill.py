"""A track's first moments: the detections its object had before the track was confirmed.

A tracker of the ByteTrack family only starts a track from a sure detection, and only gives it an ID a few
frames later. An object that walks in through the frame border is half cut there and found with low scores
at first, so a line it crosses in those frames would never be counted. :class:`EarlierDetections` keeps the
detections that no track took in the last few frames (and those of tentative tracks that died); when a
track is confirmed, :meth:`~EarlierDetections.chain` links it backwards through them (one per frame, gaps of
a few frames allowed), starting from the track's first detection and moving its box and mask crop back
along the track's velocity. What it finds is reported once,
with the track's tentative detections, as :attr:`isseg.track.Tracker.earlier`, for
:meth:`isseg.track.Analytics.update` to replay. The tracker's own output never changes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from isseg.model.detections import Detections
from isseg.model.masks import InstanceMasks
from isseg.track.matching import MaskCrop, similarity

_EMPTY = np.zeros((0, 0), bool)


@dataclass
class Sighting:
    """One detection of an object, kept after its frame: ``frame`` (the tracker's frame counter), ``box``
    float32 [4] (x1, y1, x2, y2), ``crop`` its mask crop (a copy; None without masks), ``label``, ``score``."""

    frame: int
    box: np.ndarray
    crop: MaskCrop | None
    label: int
    score: float


def sighting(frame: int, det: Detections, crops: list[MaskCrop | None], i: int) -> Sighting:
    """Detection ``i`` of ``det`` as a :class:`Sighting` that no longer refers to ``det``'s arrays."""
    c = crops[i]
    crop = None if c is None else MaskCrop(c.mask.copy(), c.x0, c.y0, c.area)
    return Sighting(frame, np.array(det.boxes[i], np.float32), crop, int(det.labels[i]), float(det.scores[i]))


class EarlierDetections:
    """The unused detections of the last ``frames`` frames (and those of tentative tracks that died), and the
    backward linking of new tracks to them."""

    def __init__(self, frames: int, max_gap: int = 3) -> None:
        self.max_gap = max_gap
        self._frames: deque[tuple[int, list[Sighting]]] = deque(maxlen=max(frames, 0))

    def push(self, frame: int, det: Detections, crops: list[MaskCrop | None], rows: list[int]) -> None:
        """Keep detections ``rows`` of this frame (those no track took) for later :meth:`chain` calls."""
        if self._frames.maxlen:
            self._frames.append((frame, [sighting(frame, det, crops, i) for i in rows]))

    def give_back(self, sightings: list[Sighting]) -> None:
        """Return the sightings of a tentative track that died to the frames they came from (if still kept)."""
        kept = dict(self._frames)
        for s in sightings:
            if s.frame in kept:
                kept[s.frame].append(s)

    def clear(self) -> None:
        self._frames.clear()

    def chain(self, first: Sighting, velocity: np.ndarray, mask_weight: float, class_weight: float,
              threshold: float) -> list[Sighting]:
        """The sightings of ``first``'s object before ``first`` (oldest first), each taken out of the pool.

        Going back one frame at a time, the last sighting found is moved back by ``velocity`` (float [2],
        pixels per frame of its centre) times the frames between, and matched to that frame's sightings by
        :func:`isseg.track.matching.similarity` (at least ``threshold``); the chain ends after ``max_gap``
        frames without one, or at the oldest frame kept."""
        found: list[Sighting] = []
        last = first
        for frame, sightings in reversed(self._frames):
            if not sightings or frame >= first.frame:
                continue
            gap = last.frame - frame
            if gap > self.max_gap + 1:
                break
            dx, dy = (-velocity * gap).tolist()
            box = last.box + np.array([dx, dy, dx, dy], np.float32)
            crop = None if last.crop is None else last.crop.moved(int(round(dx)), int(round(dy)))
            sim = similarity(box[None], np.array([last.label]), [crop], np.stack([s.box for s in sightings]),
                             np.array([s.label for s in sightings]), [s.crop for s in sightings], mask_weight,
                             class_weight, threshold)[0]
            best = int(np.argmax(sim))
            if sim[best] >= threshold:
                last = sightings.pop(best)
                found.append(last)
        return found[::-1]


def as_detections(groups: dict[int, list[tuple[int, Sighting]]], like: Detections) -> list[tuple[int, Detections]]:
    """``{frames ago: [(track id, sighting)]}`` as ``[(frames ago, Detections)]``, oldest first, each with
    ``track_ids`` set, masks at ``like``'s frame size (None where ``like`` has none), classes of ``like``."""
    out = []
    h, w = (like.masks.shape[1:] if like.masks is not None else like.image_size)
    for ago in sorted(groups, reverse=True):
        rows = groups[ago]
        masks = None
        if like.masks is not None:
            crops = [(_EMPTY, 0, 0) if s.crop is None else (s.crop.mask, s.crop.y0, s.crop.x0) for _, s in rows]
            masks = InstanceMasks([c for c, _, _ in crops], [(y, x) for _, y, x in crops], (h, w))
        det = Detections(np.stack([s.box for _, s in rows]).astype(np.float32),
                         np.array([s.score for _, s in rows], np.float32),
                         np.array([s.label for _, s in rows], np.int64), masks, like.class_names,
                         like.image_size, np.array([tid for tid, _ in rows], np.int64))
        out.append((ago, det))
    return out
