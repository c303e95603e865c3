"""Multi-object tracking of instance segmentations: :class:`Tracker` gives each object a stable ID.

A ByteTrack-family tracker that also looks at the masks. Per frame:

1. every track's box is predicted by its Kalman filter (:mod:`isseg.track.kalman`), and its last mask is
   moved with it;
2. detections at or above ``high_score`` are matched to confirmed tracks, active and lost (stage 1);
   the detections left that are duplicates of a matched one, or of a better one left (one mask covers at
   least ``duplicate_overlap`` of the other, whatever their classes: a detector often finds one object
   twice, as two classes, or finds a part of it too), take no further part: they neither continue another
   track nor start one;
3. the confirmed tracks left over, active and lost, are matched to the detections between ``low_score``
   and ``high_score`` (stage 2: an object whose score drops while it is half hidden keeps its ID);
4. confirmed tracks still unmatched (often lost behind something, and seen again only in part, so that
   their boxes no longer overlap) are re-found (stage 3): matched to the high detections left by the distance
   of the centres (or, for a track last seen cut by something, of its whole box, :mod:`isseg.track.amodal`,
   whichever is nearer) in units of the track's recent largest size, within a radius that grows while the track
   is lost; a track last seen touching a frame border while moving out through it went out there, and only a
   detection at that border, of a class the track has been detected as, can continue it
   (``leaving_same_class``); a detection of another class than the track's must be within
   ``refind_other_class`` of the radius (a class flip is seen where the object was predicted);
5. tentative tracks are matched to the high detections left (stage 4);
6. high detections still unmatched, at or above ``new_track_score``, start tentative tracks;
7. a track confirmed in this frame is linked backwards through the detections no track took in the last
   ``backfill_frames`` frames (:mod:`isseg.track.backfill`); those, and its tentative detections, are
   :attr:`Tracker.earlier`, for :meth:`isseg.track.Analytics.update` to count the line it crossed before.

Matching is optimal (Hungarian) on a similarity that fuses box IoU of the predicted box with mask IoU of
the moved mask (:func:`isseg.track.matching.similarity`). A detection of another class than the track's is
worth ``class_weight`` times as much, so a track prefers its own class but keeps its ID when the detector's
class flips. A track's class is the vote of its detections (the sum of their scores per class); with
``vote_labels`` the output's labels are the tracks' classes, so that an ID's class flips only when the votes
do. A tentative track is confirmed, and only then given an ID, after ``confirm_frames`` consecutive
matches; it is dropped at its first miss. A confirmed track that is missed is kept as lost for
``lost_frames`` frames (or until it is predicted to be wholly outside the frame), during which a detection
can bring it back with its ID. IDs start at 1, count up
and are never reused.
"""

from __future__ import annotations

import numpy as np

from isseg.model.detections import Detections
from isseg.track import amodal, kalman
from isseg.track.backfill import EarlierDetections, Sighting, as_detections, sighting
from isseg.track.geometry import border_bits
from isseg.track.matching import MaskCrop, assign, crop_masks, duplicates, similarity
from isseg.track.tracker_config import TrackerConfig

TENTATIVE, ACTIVE, LOST = 0, 1, 2


class _Track:
    """One track: Kalman state, class (and its votes), last mask crop (a copy) and where its Kalman centre
    was then; while tentative, its detections (``pending``)."""

    __slots__ = ("id", "label", "votes", "mean", "cov", "hits", "state", "last_frame", "crop", "crop_centre",
                 "size", "pending", "leaving", "whole")

    def __init__(self, label: int, mean: np.ndarray, cov: np.ndarray, frame: int) -> None:
        self.id = 0
        self.label = label
        self.votes: dict[int, float] = {}
        self.mean, self.cov = mean, cov
        self.hits = 1
        self.state = TENTATIVE
        self.last_frame = frame
        self.crop: MaskCrop | None = None
        self.crop_centre = mean[:2].copy()
        self.size = mean[2:4].copy()  # recent largest (w, h): decays slowly towards the measured size
        self.pending: list[Sighting] = []
        self.whole = amodal.WholeBox(kalman.state_to_xyxy(mean[None])[0])  # the object's, hidden parts too
        self.leaving = 0  # borders (bits of geometry.border_bits) its last box touched while moving out through them

    def predicted_crop(self) -> MaskCrop | None:
        """The last mask moved by the predicted displacement of the box centre since it was seen."""
        if self.crop is None:
            return None
        dx, dy = np.rint(self.mean[:2] - self.crop_centre).astype(int)
        return self.crop.moved(int(dx), int(dy))

    def vote(self, label: int, score: float) -> None:
        """Count a detection of class ``label``; the track's class is the one with the most score."""
        self.votes[label] = self.votes.get(label, 0.0) + max(score, 1e-6)
        self.label = max(self.votes, key=self.votes.__getitem__)


class Tracker:
    """Stable IDs for the instances of a video: ``tracked = tracker.update(detections)`` once per frame.

    ``update`` takes any :class:`~isseg.model.detections.Detections` (masks may be None: boxes only) and
    returns the detections that belong to confirmed tracks, in their input order, with their boxes, scores
    and masks unchanged, ``track_ids`` (int64 [N], >= 1) set, and labels their own or, with ``vote_labels``
    (the default), their tracks' classes. Feed it every detection down to
    ``low_score`` (e.g. 0.1), not only those above a display threshold: the low ones keep tracks alive.

    ``earlier``, after each ``update``: ``[(frames ago, Detections)]``, oldest first, the detections of the
    tracks confirmed in that frame from before they were output (their tentative frames and, back to
    ``backfill_frames``, the unused detections linked to them), ``track_ids`` set; usually empty. Pass it
    to :meth:`isseg.track.Analytics.update` so that a line crossed in those frames is counted.
    """

    def __init__(self, config: TrackerConfig | None = None, **overrides: float | int | bool) -> None:
        base = config or TrackerConfig()
        self.config = TrackerConfig(**{**base.__dict__, **overrides}) if overrides else base
        self.tracks: list[_Track] = []
        self.frame = 0
        self._next_id = 1
        self._pool = EarlierDetections(self.config.backfill_frames)
        self._confirmed_now: list[_Track] = []
        self.earlier: list[tuple[int, Detections]] = []

    def reset(self) -> None:
        """Forget every track (a new video); IDs keep counting up, so none is ever reused."""
        self.tracks = []
        self.frame = 0
        self._pool.clear()
        self.earlier = []

    def update(self, detections: Detections, reuse_input: bool = False) -> Detections:
        """Associate one frame's detections with the tracks; see the class docstring.

        The result's arrays are views of ``detections``' own when its confirmed detections are its first rows
        (the usual case, as detections come sorted by score), else copies: with full-frame masks that copy
        is most of the time ``update`` takes. ``reuse_input=True`` avoids it: the tracker may then swap rows
        of ``detections`` in place (all its arrays together, so it stays the same set of instances, no
        longer sorted by score) to make them so; pass it when nothing else reads ``detections`` in between.
        """
        cfg = self.config
        self.frame += 1
        self._confirmed_now = []
        self._predict()
        det = detections
        scores = np.asarray(det.scores, np.float32)
        crops = self._det_crops(det)
        high = np.nonzero(scores >= cfg.high_score)[0]
        low = np.nonzero((scores >= cfg.low_score) & (scores < cfg.high_score))[0]
        confirmed = [t for t in self.tracks if t.state != TENTATIVE]
        tentative = [t for t in self.tracks if t.state == TENTATIVE]
        matches: dict[int, _Track] = {}  # detection index -> track
        rest = self._match(confirmed, high, det, crops, cfg.match_similarity, matches, cfg.fuse_score)
        left = [int(i) for i in np.r_[high, low] if i not in matches]
        left.sort(key=lambda i: -scores[i])
        dup = set(duplicates(det.boxes, crops, list(matches), left, cfg.duplicate_overlap))
        high, low = (np.array([i for i in ix if i not in dup], np.int64) for ix in (high, low))
        rest = self._match(rest, low, det, crops, cfg.low_match_similarity, matches, False)
        high_left = np.array([i for i in high if i not in matches], np.int64)
        self._refind(rest, high_left, det, matches)
        high_left = np.array([i for i in high_left if i not in matches], np.int64)
        self._match(tentative, high_left, det, crops, cfg.tentative_match_similarity, matches, False)
        self._correct(matches, det, crops)
        self._age(tuple(det.image_size))
        started = [int(i) for i in high_left if i not in matches and scores[i] >= cfg.new_track_score]
        for i in started:
            self._start(det, crops, i)
        self._backfill(det, crops, [int(i) for i in np.r_[high, low] if i not in matches and i not in started])
        return self._output(det, matches, reuse_input)

    # ------------------------------------------------------------------------------------------ steps
    def _predict(self) -> None:
        if not self.tracks:
            return
        means = np.stack([t.mean for t in self.tracks])
        covs = np.stack([t.cov for t in self.tracks])
        lost = np.array([t.state == LOST for t in self.tracks])
        means[lost, 6:] = 0.0  # a lost track keeps moving but stops growing or shrinking
        means, covs = kalman.predict(means, covs, self.config.position_noise, self.config.velocity_noise)
        for t, m, c in zip(self.tracks, means, covs):
            t.mean, t.cov = m, c

    @staticmethod
    def _det_crops(det: Detections) -> list[MaskCrop | None]:
        if det.masks is None or len(det) == 0:
            return [None] * len(det)
        return list(crop_masks(det.masks, det.boxes))

    def _match(self, tracks: list[_Track], idx: np.ndarray, det: Detections, crops: list[MaskCrop | None],
               threshold: float, matches: dict[int, _Track], fuse_score: bool) -> list[_Track]:
        """Match ``tracks`` to detections ``idx``; record pairs in ``matches``; return the unmatched tracks."""
        if not tracks or len(idx) == 0:
            return tracks
        pred = kalman.state_to_xyxy(np.stack([t.mean for t in tracks]))
        labels = np.array([t.label for t in tracks], np.int64)
        sim = similarity(pred, labels, [t.predicted_crop() for t in tracks], det.boxes[idx],
                         np.asarray(det.labels)[idx], [crops[i] for i in idx], self.config.mask_weight,
                         self.config.class_weight, threshold)
        if fuse_score:
            sim = np.where(sim > 0, sim * np.asarray(det.scores, np.float32)[idx][None, :], sim)
        rows, cols = assign(sim, threshold)
        for r, c in zip(rows, cols):
            matches[int(idx[c])] = tracks[r]
        taken = set(rows.tolist())
        return [t for k, t in enumerate(tracks) if k not in taken]

    def _refind(self, tracks: list[_Track], idx: np.ndarray, det: Detections, matches: dict[int, _Track]) -> None:
        """Match confirmed tracks to detections ``idx`` by centre distance in units of the track's size."""
        cfg = self.config
        if not tracks or len(idx) == 0 or cfg.refind_radius <= 0:
            return
        lost_for = np.array([self.frame - t.last_frame for t in tracks], np.float64)
        kalman_at = np.stack([t.mean[:2] for t in tracks])
        size = np.stack([t.size for t in tracks]).clip(1.0)[:, None]
        boxes = np.asarray(det.boxes, np.float64)[idx]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        wh = boxes[:, 2:] - boxes[:, :2]
        r = np.minimum(*(np.hypot(*((centres[None] - at[:, None]) / size).transpose(2, 0, 1))  # the nearer of two
                         for at in (kalman_at, amodal.centres([t.whole for t in tracks], lost_for, kalman_at))))
        gate = cfg.refind_radius * (1 + cfg.refind_growth * (lost_for - 1))[:, None]
        sim = 1 - r / gate
        labels, det_labels = np.array([t.label for t in tracks]), np.asarray(det.labels)[idx]
        other = labels[:, None] != det_labels[None, :]
        sim[other & (r > cfg.refind_other_class * gate)] = -1
        sim[other] = sim[other] * cfg.class_weight if cfg.class_weight > 0 else -1
        sim[(wh[None, :, 0] > 1.5 * size[:, :, 0]) | (wh[None, :, 1] > 1.5 * size[:, :, 1])] = -1
        leaving = np.array([t.leaving for t in tracks])[:, None]
        at_border = border_bits(boxes, tuple(det.image_size))[None, :]
        sim[(leaving != 0) & ((leaving & at_border) == 0)] = -1  # it went out there
        if cfg.leaving_same_class:  # a class it was never seen as, coming in where it went out: another object
            for k in np.flatnonzero(leaving[:, 0]):
                sim[k, ~np.isin(det_labels, list(tracks[k].votes))] = -1
        rows, cols = assign(sim, 1e-6)
        for r_, c in zip(rows, cols):
            matches[int(idx[c])] = tracks[r_]

    def _correct(self, matches: dict[int, _Track], det: Detections, crops: list[MaskCrop | None]) -> None:
        """Kalman update of the matched tracks, new mask crops, confirmation (and IDs) of tentative ones."""
        if not matches:
            return
        order = list(matches)
        tracks = [matches[i] for i in order]
        means, covs = kalman.update(np.stack([t.mean for t in tracks]), np.stack([t.cov for t in tracks]),
                                    det.boxes[order], self.config.position_noise)
        touching = border_bits(det.boxes[order], tuple(det.image_size))
        amodal.update([t.whole for t in tracks], np.array([self.frame - t.last_frame for t in tracks], np.float64),
                      det.boxes[order], means[:, 4:6])
        for i, t, m, c, touch in zip(order, tracks, means, covs, touching):
            t.mean, t.cov = m, c
            vx, vy = float(m[4]), float(m[5])
            t.leaving = int(touch) & ((vx < 0) * 1 + (vy < 0) * 2 + (vx > 0) * 4 + (vy > 0) * 8)
            crop = crops[i]
            t.crop = None if crop is None else MaskCrop(crop.mask.copy(), crop.x0, crop.y0, crop.area)
            t.crop_centre = m[:2].copy()
            t.size = np.maximum(det.boxes[i, 2:] - det.boxes[i, :2], t.size * 0.97)
            t.last_frame = self.frame
            t.vote(int(det.labels[i]), float(det.scores[i]))
            if t.state == TENTATIVE:
                t.hits += 1
                t.pending.append(sighting(self.frame, det, crops, i))
                if t.hits >= self.config.confirm_frames:
                    self._confirm(t)
            else:
                t.state = ACTIVE

    def _confirm(self, track: _Track) -> None:
        track.state = ACTIVE
        track.id = self._next_id
        self._next_id += 1
        self._confirmed_now.append(track)

    def _backfill(self, det: Detections, crops: list[MaskCrop | None], unused: list[int]) -> None:
        """:attr:`earlier` of the tracks confirmed in this frame; then keep this frame's ``unused`` detections."""
        cfg = self.config
        groups: dict[int, list[tuple[int, Sighting]]] = {}
        for t in self._confirmed_now:
            found = self._pool.chain(t.pending[0], t.mean[4:6], cfg.mask_weight, cfg.class_weight,
                                     cfg.low_match_similarity) if t.pending and cfg.backfill_frames else []
            for s in found + (t.pending[:-1] if cfg.backfill_frames else []):
                groups.setdefault(self.frame - s.frame, []).append((t.id, s))
            t.pending = []
        self.earlier = as_detections(groups, det) if groups else []
        self._pool.push(self.frame, det, crops, unused)

    def _age(self, image_size: tuple[int, int]) -> None:
        """Unmatched this frame: tentative tracks die, active ones become lost, lost ones expire, and so do
        lost ones predicted to be wholly outside the frame (when its size is known)."""
        h, w = image_size
        kept = []
        for t in self.tracks:
            if t.last_frame != self.frame:
                if t.state == TENTATIVE:
                    self._pool.give_back(t.pending)
                    continue
                if self.frame - t.last_frame > self.config.lost_frames:
                    continue
                cx, cy, bw, bh = t.mean[:4]
                if h and w and (cx + bw / 2 < 0 or cy + bh / 2 < 0 or cx - bw / 2 > w or cy - bh / 2 > h):
                    continue
                t.state = LOST
            kept.append(t)
        self.tracks = kept

    def _start(self, det: Detections, crops: list[MaskCrop | None], i: int) -> None:
        means, covs = kalman.initiate(det.boxes[i:i + 1], self.config.position_noise, self.config.velocity_noise)
        t = _Track(int(det.labels[i]), means[0], covs[0], self.frame)
        t.vote(int(det.labels[i]), float(det.scores[i]))
        t.pending = [sighting(self.frame, det, crops, i)]
        t.crop = t.pending[0].crop
        self.tracks.append(t)
        if self.config.confirm_frames <= 1:
            self._confirm(t)

    def _output(self, det: Detections, matches: dict[int, _Track], reuse_input: bool) -> Detections:
        """The detections of confirmed tracks; views of the input's arrays when they are its first k rows (or
        ``reuse_input`` lets them be made so), else copies."""
        confirmed = {i: t for i, t in matches.items() if t.state == ACTIVE}
        k = len(confirmed)
        if k and max(confirmed) != k - 1 and reuse_input:
            holes = [i for i in range(k) if i not in confirmed]
            donors = [i for i in sorted(confirmed) if i >= k]
            for h, d in zip(holes, donors):  # move confirmed rows into the holes: a few rows, not all masks
                for arr in (det.boxes, det.scores, det.labels, det.masks, det.track_ids):
                    if arr is not None:
                        arr[[h, d]] = arr[[d, h]]
                confirmed[h] = confirmed.pop(d)
        keep = sorted(confirmed)
        ids = np.array([confirmed[i].id for i in keep], np.int64)
        if not k or keep[-1] == k - 1:  # the first k detections (the usual case: sorted by score)
            out = det.filter(slice(0, k))
        else:
            out = det.filter(np.array(keep, np.int64))
        out.track_ids = ids
        if self.config.vote_labels and k:
            labels = np.array([confirmed[i].label for i in keep], out.labels.dtype)
            if not np.array_equal(labels, out.labels):
                out.labels = labels  # a new array: the input's labels stay as they were
        return out
