"""Privacy masks: hide the **masks** (not the boxes) of chosen classes, dilated, in every frame.

:meth:`Privacy.apply` returns a :class:`PrivateFrame`; a writer that accepts only ``PrivateFrame`` (see
:func:`require_private`) cannot write a frame that did not go through it. It fails closed: a frame whose
detections are missing (``None``: inference failed) is hidden whole, and detections whose size does not
match the frame raise instead of leaving anything uncovered.

Besides this frame's masks, the last mask of every object seen in the previous ``hold_frames`` frames and
not seen now is hidden too, so one missed detection never reveals a face: with ``tracked`` detections
(``track_ids`` set) that is the last mask of each track that disappeared, moved along the track's motion;
detections without a track (all of them when no ``tracked`` is given) are each held where they were for
``hold_frames`` frames. Masks are taken whole (not cut to their boxes) and copied, so later changes to
the detections cannot uncover anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from isseg.model.detections import Detections
from isseg.model.masks import InstanceMasks, tight_crop
from isseg.track.matching import MaskCrop


@dataclass(frozen=True)
class PrivacyConfig:
    """What :class:`Privacy` hides, and how."""

    classes: tuple[str, ...] = ("person",)
    """Class names to hide (matched against ``Detections.class_names``)."""
    mode: str = "pixelate"
    """"pixelate" (each ``cell`` x ``cell`` block of the frame grid becomes its mean colour) or "fill"."""
    cell: int = 16
    """Pixelation block size in pixels; blocks are aligned to the frame, so they do not move with the object."""
    dilate: int = 4
    """The masks are grown by this many pixels, so that their edges (hair, ears) are hidden too."""
    hold_frames: int = 5
    """Frames an object's last mask stays hidden after it was last detected."""
    hold_growth: int = 2
    """A held mask is grown by this many more pixels for each frame the object has not been seen (parts of
    it that were hidden behind something when it was last seen may have come out since)."""
    min_score: float = 0.1
    """Detections at or above this score are hidden (low on purpose: hiding too much is the safe error)."""
    fill_colour: tuple[int, int, int] = (0, 0, 0)
    """BGR colour of "fill"."""

    def __post_init__(self) -> None:
        if self.mode not in ("pixelate", "fill"):
            raise ValueError(f"PrivacyConfig.mode: expected 'pixelate' or 'fill', got {self.mode!r}")
        if self.cell < 2 or self.dilate < 0 or self.hold_frames < 0:
            raise ValueError(f"PrivacyConfig: need cell >= 2, dilate >= 0, hold_frames >= 0, got {self.cell}, "
                             f"{self.dilate}, {self.hold_frames}")


@dataclass(frozen=True)
class PrivateFrame:
    """A frame with the privacy masks applied: ``image`` uint8 [H, W, 3] BGR; ``covered`` bool [H, W], the
    pixels hidden (after dilation); ``index``: the frame's number in this :class:`Privacy`'s stream."""

    image: np.ndarray
    covered: np.ndarray = field(repr=False)
    index: int


def require_private(frame: object) -> np.ndarray:
    """The image of a :class:`PrivateFrame`; anything else (a bare array) raises ``TypeError``. Writers of a
    stream with privacy on call this, so that an unmasked frame cannot be written by mistake."""
    if not isinstance(frame, PrivateFrame):
        raise TypeError(f"privacy is on: expected a PrivateFrame from Privacy.apply, got {type(frame).__name__}")
    return frame.image


@dataclass
class _Held:
    """The last mask of an object (a copy), when it was seen, where its box centre was and its velocity."""

    crop: MaskCrop
    last_seen: int
    centre: tuple[float, float] = (0.0, 0.0)
    velocity: tuple[float, float] = (0.0, 0.0)


def _extent(det: Detections, i: int, size: tuple[int, int]) -> MaskCrop:
    """A copy of detection ``i``'s mask cut to its own extent (all of it, also outside the box), or its box
    (clipped to the frame) when it has no mask."""
    h, w = size
    if det.masks is None:
        bx0, by0, bx1, by1 = (float(v) for v in det.boxes[i])
        x0, y0 = min(max(math.floor(bx0), 0), w), min(max(math.floor(by0), 0), h)
        x1, y1 = min(max(math.ceil(bx1), x0), w), min(max(math.ceil(by1), y0), h)
        return MaskCrop(np.ones((y1 - y0, x1 - x0), bool), x0, y0, (y1 - y0) * (x1 - x0))
    oy, ox, mask = det.masks.region(i) if isinstance(det.masks, InstanceMasks) else (0, 0, det.masks[i])
    y0, x0, crop = tight_crop(mask)
    if crop.size == 0:
        return MaskCrop(crop, 0, 0, 0)
    return MaskCrop(crop, ox + x0, oy + y0, int(np.count_nonzero(crop)))


def _paste(out: np.ndarray, crop: MaskCrop, dx: int = 0, dy: int = 0) -> None:
    """``out |= crop`` moved by (dx, dy), clipped to ``out`` (bool [H, W])."""
    h, w = out.shape
    ch, cw = crop.mask.shape
    x0, y0 = crop.x0 + dx, crop.y0 + dy
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + cw, w), min(y0 + ch, h)
    if xb > xa and yb > ya:
        out[ya:yb, xa:xb] |= crop.mask[ya - y0:yb - y0, xa - x0:xb - x0]


class Privacy:
    """Hides chosen classes' masks in each frame of one stream; see the module docstring.

    A held track's mask is moved along the track's last velocity, and every place between where it was
    last seen and where it would be now is hidden, so a missed detection of a moving object is still
    covered; a held mask without a track (no velocity) stays where it was seen.
    """

    def __init__(self, config: PrivacyConfig | None = None, **overrides: object) -> None:
        base = config or PrivacyConfig()
        self.config = PrivacyConfig(**{**base.__dict__, **overrides}) if overrides else base
        self.frame = -1
        self._tracks: dict[int, _Held] = {}
        self._anonymous: list[_Held] = []

    def _chosen(self, det: Detections) -> np.ndarray:
        names, cfg = det.names, self.config
        keep = [i for i in range(len(det)) if names[i] in cfg.classes and det.scores[i] >= cfg.min_score]
        return np.array(keep, np.int64)

    def _hold_tracks(self, tracked: Detections, size: tuple[int, int]) -> set[tuple[float, ...]]:
        """Remember each chosen tracked detection's mask by track ID; return their boxes."""
        boxes = set()
        for i in self._chosen(tracked):
            tid, box = int(tracked.track_ids[i]), [float(v) for v in tracked.boxes[i]]
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            prev, velocity = self._tracks.get(tid), (0.0, 0.0)
            if prev is not None:
                dt = self.frame - prev.last_seen
                velocity = ((centre[0] - prev.centre[0]) / dt, (centre[1] - prev.centre[1]) / dt)
            self._tracks[tid] = _Held(_extent(tracked, int(i), size), self.frame, centre, velocity)
            boxes.add(tuple(box))
        return boxes

    def cover(self, detections: Detections | None, size: tuple[int, int], tracked: Detections | None = None
              ) -> np.ndarray:
        """bool [H, W]: the pixels to hide in this frame (dilated), and the hold state moved on one frame."""
        self.frame += 1
        h, w = size
        if detections is None:
            return np.ones((h, w), bool)  # no detections for this frame: hide it all
        for d in (detections, tracked):
            if d is not None and d.masks is not None and d.masks.shape[1:] != (h, w):
                raise ValueError(f"privacy: masks are {d.masks.shape[1]}x{d.masks.shape[2]} but the frame is "
                                 f"{h}x{w}; cannot hide them")
        out = np.zeros((h, w), bool)
        tracked_boxes = set()
        if tracked is not None and tracked.track_ids is not None:
            tracked_boxes = self._hold_tracks(tracked, size)
        for i in self._chosen(detections):
            crop = _extent(detections, int(i), size)
            _paste(out, crop)
            if tuple(float(v) for v in detections.boxes[i]) not in tracked_boxes:
                self._anonymous.append(_Held(crop, self.frame))
        hold = self.config.hold_frames
        self._tracks = {t: v for t, v in self._tracks.items() if self.frame - v.last_seen <= hold}
        self._anonymous = [v for v in self._anonymous if self.frame - v.last_seen <= hold]
        by_age: dict[int, np.ndarray] = {}
        for held in list(self._tracks.values()) + self._anonymous:
            age = self.frame - held.last_seen
            if age == 0:
                continue  # seen in this frame: its mask is in ``out`` already
            layer = by_age.setdefault(age, np.zeros((h, w), bool))
            for k in range(age + 1):  # from where it was seen to where it would be now
                _paste(layer, held.crop, round(held.velocity[0] * k), round(held.velocity[1] * k))
        out = _dilate(out, self.config.dilate)
        for age, layer in by_age.items():  # the longer unseen, the less sure where it is: grow more
            out |= _dilate(layer, self.config.dilate + self.config.hold_growth * age)
        return out

    def apply(self, frame: np.ndarray, detections: Detections | None, tracked: Detections | None = None,
              in_place: bool = False) -> PrivateFrame:
        """Hide the chosen classes in BGR ``frame`` (uint8 [H, W, 3]); a copy unless ``in_place``.

        ``detections``: all of this frame's detections (``None`` hides the whole frame); ``tracked``: the
        tracker's output for it, so that the masks of tracks that disappear are held by track.
        """
        image = frame if in_place else frame.copy()
        covered = self.cover(detections, frame.shape[:2], tracked)
        if covered.any():
            hide(image, covered, self.config)
        return PrivateFrame(image, covered, self.frame)


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` grown by ``px`` pixels (an ellipse), computed on the region around its pixels only."""
    import cv2

    if px <= 0 or not mask.any():
        return mask
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    h, w = mask.shape
    y0, y1 = max(ys[0] - px, 0), min(ys[-1] + px + 1, h)
    x0, x1 = max(xs[0] - px, 0), min(xs[-1] + px + 1, w)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    out = mask.copy()
    out[y0:y1, x0:x1] = cv2.dilate(mask[y0:y1, x0:x1].astype(np.uint8), kernel).astype(bool)
    return out


def hide(image: np.ndarray, covered: np.ndarray, config: PrivacyConfig) -> None:
    """Pixelate or fill the ``covered`` (bool [H, W]) pixels of ``image`` (uint8 [H, W, C]) in place."""
    import cv2

    if config.mode == "fill":
        image[covered] = config.fill_colour
        return
    cell = config.cell
    h, w = covered.shape
    ys = np.flatnonzero(covered.any(1))
    xs = np.flatnonzero(covered.any(0))
    y0, x0 = ys[0] // cell * cell, xs[0] // cell * cell
    y1, x1 = min(-(-(ys[-1] + 1) // cell) * cell, h), min(-(-(xs[-1] + 1) // cell) * cell, w)
    region = image[y0:y1, x0:x1]
    small = cv2.resize(region, (-(-(x1 - x0) // cell), -(-(y1 - y0) // cell)), interpolation=cv2.INTER_AREA)
    blocks = np.repeat(np.repeat(small, cell, 0), cell, 1)[:y1 - y0, :x1 - x0]
    np.copyto(region, blocks.reshape(region.shape), where=covered[y0:y1, x0:x1, None])
