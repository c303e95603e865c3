"""The knobs of :class:`isseg.track.Tracker`, every one a named, documented field (the stages they act in are
described in :mod:`isseg.track.tracker`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrackerConfig:
    """Every knob of :class:`isseg.track.Tracker`. Scores are the detector's; similarities are in [0, 1]."""

    high_score: float = 0.5
    """Detections with a score at or above this take part in the first association stage."""
    low_score: float = 0.1
    """Detections below this are ignored; those in [low_score, high_score) may only continue confirmed tracks."""
    new_track_score: float = 0.6
    """An unmatched detection starts a (tentative) track only if its score is at least this."""
    match_similarity: float = 0.2
    """Stage 1 (high detections to confirmed tracks): the least similarity of a match."""
    low_match_similarity: float = 0.4
    """Stage 2 (low detections to confirmed tracks): the least similarity of a match; stricter than stage 1."""
    tentative_match_similarity: float = 0.3
    """Stage 4 (high detections to tentative tracks): the least similarity of a match."""
    refind_radius: float = 1.0
    """Re-finding (stage 3: high detections left after stage 2 to confirmed tracks left): a detection is a
    candidate when its centre is within this many track sizes of the predicted centre. The track's size is its
    recent largest, so an object that shrank while going behind something is still measured at full size."""
    refind_growth: float = 0.05
    """How much ``refind_radius`` grows per frame the track has been lost (motion gets less sure)."""
    refind_other_class: float = 0.4
    """Re-finding by a detection of another class than the track's takes only one within this share of the
    radius: a detector's class flip is seen where the object was predicted, another object that happens to
    be near is not (1 = anywhere in the radius)."""
    leaving_same_class: bool = True
    """Re-finding a track that went out through a frame border (see :class:`isseg.track.Tracker`) takes only a detection
    of a class that the track has been detected as: another class coming in where it went out is another
    object. Other lost tracks may be re-found by any class (at ``class_weight``), which keeps an ID through
    a detector's class flips."""
    mask_weight: float = 0.5
    """Weight of mask IoU in the fused similarity (box IoU has ``1 - mask_weight``); 0 = boxes only."""
    class_weight: float = 0.3
    """A detection of another class than the track's counts this many times its similarity (in every stage);
    0 = a track only ever matches its own class."""
    duplicate_overlap: float = 0.8
    """After stage 1, a detection is a duplicate, of any class, and dropped, when its mask and that of a
    matched detection, or of a better unmatched one, overlap by at least this much of the smaller (box IoU
    without masks). Above 1: never."""
    vote_labels: bool = True
    """Output each detection with its track's class (the score-weighted vote of the track's detections)
    instead of its own label."""
    fuse_score: bool = True
    """Stage 1 multiplies the similarity by the detection's score, so a sure detection wins a close call."""
    confirm_frames: int = 2
    """Consecutive matched frames (the first one included) before a track is confirmed and gets an ID."""
    lost_frames: int = 30
    """Frames a confirmed track is kept after its last match, to be found again with the same ID."""
    backfill_frames: int = 10
    """When a track is confirmed, its object's detections of up to this many earlier frames that no track
    took (down to ``low_score``, matched backwards at ``low_match_similarity``) are reported in
    :attr:`Tracker.earlier`; 0 = never."""
    position_noise: float = 1 / 20
    """Kalman position noise, as a fraction of the box size (per frame, and of each measurement)."""
    velocity_noise: float = 1 / 160
    """Kalman velocity noise, as a fraction of the box size per frame."""

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score:
            raise ValueError(f"TrackerConfig: need 0 <= low_score <= high_score, got {self.low_score}, "
                             f"{self.high_score}")
        if self.confirm_frames < 1 or self.lost_frames < 0 or self.backfill_frames < 0:
            raise ValueError(f"TrackerConfig: confirm_frames must be >= 1, lost_frames and backfill_frames >= 0, "
                             f"got {self.confirm_frames}, {self.lost_frames}, {self.backfill_frames}")
        if not all(0 <= v <= 1 for v in (self.mask_weight, self.class_weight, self.refind_other_class)):
            raise ValueError(f"TrackerConfig: mask_weight, class_weight and refind_other_class must be in [0, 1], "
                             f"got {self.mask_weight}, {self.class_weight}, {self.refind_other_class}")
