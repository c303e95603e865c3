"""isseg.track privacy: the dilated masks are hidden, lost tracks' masks are held, nothing unmasked is written."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from isseg.data.synth_video import SynthVideo, VideoSpec
from isseg.model.detections import Detections
from isseg.track import Privacy, PrivateFrame, Tracker, require_private
from isseg.track.simulate import DetectionNoise, simulate_detections

H, W = 120, 160
NAMES = ("person", "car")


def texture(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def det_of(masks: list[np.ndarray], labels: list[int], ids: list[int] | None = None) -> Detections:
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return Detections(np.array(boxes, np.float32), np.full(len(masks), 0.9, np.float32), np.array(labels),
                      np.stack(masks), NAMES, (H, W), None if ids is None else np.array(ids, np.int64))


def person(x: int, y: int = 40) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.ellipse(m, (x, y), (10, 22), 0, 0, 360, 1, -1)
    return m.astype(bool)


def grown(mask: np.ndarray, px: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def test_fill_covers_the_dilated_mask_and_nothing_else():
    frame, m, car = texture(), person(60), person(120)
    out = Privacy(mode="fill", dilate=4, fill_colour=(1, 2, 3)).apply(frame, det_of([m, car], [0, 1]))
    inside = grown(m, 4)
    assert (out.image[inside] == (1, 2, 3)).all()
    assert np.array_equal(out.image[~inside], frame[~inside])  # the car and the rest untouched
    assert np.array_equal(out.covered, inside)
    assert out.image is not frame and not np.shares_memory(out.image, frame)


def test_pixelate_replaces_covered_pixels_by_cell_means():
    frame, m = texture(1), person(60)
    privacy = Privacy(cell=8, dilate=3)
    out = privacy.apply(frame, det_of([m], [0]))
    covered = grown(m, 3)
    assert np.array_equal(out.covered, covered) and np.array_equal(out.image[~covered], frame[~covered])
    for by in range(0, H, 8):  # every covered pixel is the mean of its 8x8 cell of the frame grid
        for bx in range(0, W, 8):
            cell = covered[by:by + 8, bx:bx + 8]
            if cell.any():
                mean = frame[by:by + 8, bx:bx + 8].reshape(-1, 3).mean(0)
                assert np.abs(out.image[by:by + 8, bx:bx + 8][cell].astype(float) - mean).max() <= 1
    assert (np.abs(out.image.astype(int) - frame.astype(int))[covered].mean(axis=-1) > 5).mean() > 0.8


def test_a_lost_track_is_held_along_its_motion_then_released():
    privacy = Privacy(mode="fill", dilate=2, hold_frames=3)
    for f in range(4):  # a person walks right, 4 px a frame
        det = det_of([person(40 + 4 * f)], [0], [7])
        privacy.apply(texture(), det, det)
    for f in range(4, 8):  # missed: still hidden where it is now, for 3 frames
        empty = Detections.empty((H, W), NAMES, tracked=True)
        out = privacy.apply(texture(), empty, empty)
        if f - 3 <= 3:
            assert out.covered[person(40 + 4 * f)].all(), f
        else:
            assert not out.covered.any()


def test_without_tracks_every_mask_is_held_where_it_was():
    privacy = Privacy(mode="fill", dilate=0, hold_frames=2)
    privacy.apply(texture(), det_of([person(50)], [0]))
    empty = Detections.empty((H, W), NAMES)
    assert privacy.apply(texture(), empty).covered[person(50)].all()
    assert privacy.apply(texture(), empty).covered[person(50)].all()
    assert not privacy.apply(texture(), empty).covered.any()


def test_fails_closed():
    frame = texture()
    out = Privacy().apply(frame, None)  # inference failed for this frame: hide it all
    assert out.covered.all() and not np.array_equal(out.image, frame)
    wrong = det_of([person(50)], [0])
    wrong.masks = np.zeros((1, H // 2, W // 2), bool)
    with pytest.raises(ValueError, match="cannot hide"):
        Privacy().apply(frame, wrong)
    assert require_private(out) is out.image
    with pytest.raises(TypeError, match="PrivateFrame"):
        require_private(frame)


def test_boxes_only_hide_the_box():
    det = det_of([person(60)], [0])
    det.masks = None
    out = Privacy(mode="fill", dilate=0).apply(texture(), det)
    x0, y0, x1, y1 = det.boxes[0].astype(int)
    assert out.covered[y0:y1, x0:x1].all() and out.covered.sum() == (y1 - y0) * (x1 - x0)


def test_no_written_frame_shows_a_detected_object_after_one_miss():
    """Synthetic video, detections with misses, low scores and jittered boxes (masks exact, so that any
    pixel left is the hold's fault, not the detector's): every object of a private class detected in this
    frame or the one before is fully hidden in each written frame, where it really is now (ground truth)."""
    spec = VideoSpec(frames=60, walkers=6, crossing_pairs=1, dwellers=1)
    video = SynthVideo(spec, seed=3)
    private = ("circle", "ellipse", "star")
    tracker, privacy = Tracker(), Privacy(classes=private, mode="fill", fill_colour=(0, 0, 0))
    rng = np.random.default_rng(5)
    written: list[np.ndarray] = []
    previous: set[int] = set()
    misses = 0
    for image, truth in video:
        det = simulate_detections(truth, rng, spec.classes, DetectionNoise(mask_shift=0, mask_morph=0))
        tracked = tracker.update(det)
        out = privacy.apply(image, det, tracked)
        written.append(require_private(out))
        seen = set()
        for k, gid in enumerate(truth.ids):
            if spec.classes[truth.labels[k]] not in private:
                continue
            if (det.masks & truth.masks[k]).sum(axis=(1, 2)).max(initial=0) > 0.5 * truth.masks[k].sum():
                seen.add(int(gid))
            elif int(gid) in previous:
                misses += 1
            if int(gid) in previous | seen:
                assert out.covered[truth.masks[k]].all(), (truth.index, gid)
        previous = seen
    assert misses >= 3 and len(written) == 60
    assert isinstance(out, PrivateFrame)
