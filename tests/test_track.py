"""isseg.track.Tracker: stable IDs through crossings and occlusion, confirmation, no reuse, classes, masks."""

from __future__ import annotations

import numpy as np
import pytest

from isseg.model.detections import Detections
from isseg.track import Tracker, TrackerConfig

H, W = 240, 320
NAMES = ("person", "car")


def disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def make(objects: list[tuple], masks: bool = True) -> tuple[Detections, list[int]]:
    """``objects``: (label, cx, cy, r, score), front to back: a nearer object hides the ones after it; an
    object less than 30 % visible is not detected. Sorted by score, like a detector's output. Also returns
    the index in ``objects`` of each detection."""
    taken = np.zeros((H, W), bool)
    rows = []
    for k, (label, cx, cy, r, score) in enumerate(objects):
        full = disc(cx, cy, r)
        visible = full & ~taken
        taken |= full
        if not visible.any() or visible.sum() < 0.3 * full.sum():
            continue
        ys, xs = np.nonzero(visible)
        rows.append((label, score, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), visible, k))
    rows.sort(key=lambda r: -r[1])
    if not rows:
        return Detections.empty((H, W), NAMES), []
    det = Detections(np.array([r[2] for r in rows], np.float32), np.array([r[1] for r in rows], np.float32),
                     np.array([r[0] for r in rows], np.int64), np.stack([r[3] for r in rows]) if masks else None,
                     NAMES, (H, W))
    return det, [r[4] for r in rows]


def frame(objects: list[tuple], masks: bool = True) -> Detections:
    return make(objects, masks)[0]


def ids_of(tracker: Tracker, objects: list[tuple]) -> dict[int, int]:
    """One update; {index in objects: track ID} of the objects detected and output."""
    det, source = make(objects)
    boxes = det.boxes.copy()
    out = tracker.update(det)
    assert out.track_ids is not None and out.track_ids.dtype == np.int64 and (out.track_ids >= 1).all()
    result = {}
    for j in range(len(out)):
        i = int(np.nonzero((boxes == out.boxes[j]).all(1))[0][0])
        result[source[i]] = int(out.track_ids[j])
    return result


def test_same_class_crossing_and_short_occlusion_keep_ids():
    """Two people of the same size cross (one hides the other for a few frames); then one is missed for 4
    frames. Each keeps its ID, and no other ID is ever given."""
    tracker = Tracker()
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    hidden_frames = 0
    for f in range(75):
        a = (0, 40 + 3 * f, 110 + 0.3 * f, 18, 0.9)  # left to right, in front
        b = (0, 280 - 3 * f, 130 - 0.3 * f, 18, 0.85)  # right to left, behind
        objects = [a, b] if not 50 <= f < 54 else [(0, -100, -100, 1, 0.9), b]  # a missed for 4 frames
        ids = ids_of(tracker, objects)
        hidden_frames += 1 not in ids and 2 <= f < 50
        for k, tid in ids.items():
            seen[k].add(tid)
    assert hidden_frames >= 2  # b was hidden behind a
    assert seen == {0: {1}, 1: {2}} or seen == {0: {2}, 1: {1}}
    assert tracker._next_id == 3


def test_mask_iou_tells_overlapping_objects_apart():
    """Where two objects' boxes overlap, their masks still differ: the mask IoU of an object with itself one
    pixel on is high, with the smaller object in front of it low (computed on box crops only)."""
    from isseg.track.matching import crop_iou, crop_mask

    big, small = disc(100, 100, 24), disc(104, 100, 12)
    box_big = np.array([76, 76, 124, 124], np.float32)
    box_small = np.array([92, 88, 116, 112], np.float32)
    same = crop_iou(crop_mask(big, box_big), crop_mask(disc(101, 100, 24), box_big))
    cross = crop_iou(crop_mask(big, box_big), crop_mask(small, box_small))
    assert same > 0.9 and cross < 0.3


def test_confirmation_before_an_id_and_never_minus_one():
    tracker = Tracker()
    first = tracker.update(frame([(0, 100, 100, 15, 0.9)]))
    assert len(first) == 0 and first.track_ids is not None and first.track_ids.shape == (0,)
    second = tracker.update(frame([(0, 103, 100, 15, 0.9)]))
    assert second.track_ids.tolist() == [1]
    # a detection seen in one frame only never gets an ID, and does not use one up
    tracker.update(frame([(0, 106, 100, 15, 0.9), (1, 250, 200, 15, 0.9)]))
    out = tracker.update(frame([(0, 109, 100, 15, 0.9)]))
    assert out.track_ids.tolist() == [1]
    later = tracker.update(frame([(0, 112, 100, 15, 0.9), (1, 30, 30, 15, 0.9)]))
    later = tracker.update(frame([(0, 115, 100, 15, 0.9), (1, 33, 30, 15, 0.9)]))
    assert sorted(later.track_ids.tolist()) == [1, 2]


def test_ids_are_never_reused():
    tracker = Tracker(lost_frames=3)
    ids: list[int] = []
    for episode in range(3):  # the same object comes back after its track expired, and after a reset
        for f in range(5):
            out = tracker.update(frame([(0, 60 + 4 * f, 100, 15, 0.9)]))
            ids += out.track_ids.tolist()
        for _ in range(6):
            tracker.update(frame([]))
        if episode == 1:
            tracker.reset()
    distinct = sorted(set(ids))
    assert distinct == [1, 2, 3]
    assert ids == sorted(ids)  # each new one is larger than all before it


def test_class_only_tracks_keep_apart_when_class_weight_is_zero():
    """With ``class_weight=0`` a track only matches its own class: a car that appears where a person was
    (same place, same size) gets its own ID, and an ID never changes class."""
    tracker = Tracker(class_weight=0.0)
    classes: dict[int, set[int]] = {}
    for f in range(12):
        label = 0 if f < 6 else 1
        out = tracker.update(frame([(label, 100 + f, 100, 15, 0.9)]))
        for tid, lab in zip(out.track_ids, out.labels):
            classes.setdefault(int(tid), set()).add(int(lab))
    assert len(classes) == 2 and all(len(v) == 1 for v in classes.values())


def test_a_class_flip_keeps_the_id_and_the_votes_set_the_class():
    """The detector calls a person a car in a few frames: one ID throughout, output as a person; when it is a
    car for good, the same ID becomes a car once the car's votes outweigh the person's."""
    tracker = Tracker()
    ids, labels = [], []
    plan = [0] * 6 + [1] + [0] * 3 + [1, 0, 1] + [1] * 14  # person, flickers, then a car
    for f, label in enumerate(plan):
        out = tracker.update(frame([(label, 60 + 3 * f, 100, 15, 0.9)]))
        ids += out.track_ids.tolist()
        labels += out.labels.tolist()
    assert set(ids) == {1} and len(ids) == len(plan) - 1 and tracker._next_id == 2
    assert labels[:12] == [0] * 12  # the flips (frames 6, 10 and 12) are output as the track's class
    assert labels[-1] == 1 and labels == sorted(labels)  # the class changes once, to car
    raw = Tracker(vote_labels=False)
    got = [raw.update(frame([(label, 60 + 3 * f, 100, 15, 0.9)])).labels.tolist() for f, label in enumerate(plan)]
    assert sum(got, []) == plan[1:]  # without the vote: each detection's own label


def test_a_cross_class_duplicate_starts_no_track():
    """The detector finds one object twice, as a person and (a little lower score) as a car, with nearly the
    same mask; a second object passes close by. Two IDs, never a third; with duplicates allowed
    (``duplicate_overlap`` > 1), the duplicate gets a track of its own."""
    def run(tracker: Tracker) -> set[int]:
        ids: set[int] = set()
        for f in range(10):
            det = frame([(0, 80 + 3 * f, 100, 20, 0.9), (0, 200 - 3 * f, 130, 16, 0.85)])
            dup = frame([(1, 80 + 3 * f, 101, 20, 0.8)])
            det = Detections(np.r_[det.boxes, dup.boxes], np.r_[det.scores, dup.scores], np.r_[det.labels, dup.labels],
                             np.r_[det.masks, dup.masks], NAMES, (H, W))
            ids |= set(tracker.update(det).track_ids.tolist())
        return ids

    assert run(Tracker()) == {1, 2}
    assert len(run(Tracker(duplicate_overlap=1.1))) == 3


def test_duplicates_are_overlapping_masks_not_overlapping_boxes():
    """Two objects whose boxes overlap much but whose visible masks do not are not duplicates; the same object
    found twice is, whatever the order of the candidates."""
    from isseg.track.matching import crop_mask, duplicates

    front, behind = disc(100, 100, 20), disc(108, 100, 20) & ~disc(100, 100, 20)
    again = disc(101, 100, 20)
    boxes = np.array([[80, 80, 120, 120], [100, 80, 128, 120], [81, 80, 121, 120]], np.float32)
    crops = [crop_mask(m, b) for m, b in zip((front, behind, again), boxes)]
    assert duplicates(boxes, crops, [0], [1, 2], 0.5) == [2]
    assert duplicates(boxes, crops, [], [2, 1, 0], 0.5) == [0]
    assert duplicates(boxes, [None, None, None], [0], [1, 2], 0.5) == [2]  # boxes only: box IoU
    assert duplicates(boxes, crops, [0], [1, 2], 1.1) == []
    half = front.copy()
    half[:, 100:] = False  # the left half of the front object, found as an object of its own: IoU 0.5
    part = crop_mask(half, np.array([80, 80, 100, 120], np.float32))
    assert duplicates(np.r_[boxes[:1], [[80, 80, 100, 120]]], [crops[0], part], [0], [1], 0.8) == [1]


def test_masks_boxes_scores_are_kept():
    tracker = Tracker()
    for f in range(4):
        det = frame([(0, 80 + 3 * f, 100, 20, 0.9), (1, 220 - 3 * f, 150, 25, 0.8), (0, 160, 40, 10, 0.05)])
        out = tracker.update(det)
    assert out.masks is not None and out.masks.dtype == bool and out.masks.shape == (2, H, W)
    for j in range(len(out)):
        i = int(np.nonzero((det.boxes == out.boxes[j]).all(1))[0][0])
        assert np.array_equal(out.masks[j], det.masks[i])
        assert out.scores[j] == det.scores[i] and out.labels[j] == det.labels[i]
    assert "person #" in repr(out) and out.filter(np.array([1])).track_ids.tolist() == [out.track_ids[1]]


def test_boxes_only_detections():
    tracker = Tracker()
    for f in range(5):
        out = tracker.update(frame([(0, 80 + 3 * f, 100, 20, 0.9), (1, 220 - 3 * f, 150, 25, 0.8)], masks=False))
    assert out.masks is None and sorted(out.track_ids.tolist()) == [1, 2]


def test_low_scores_keep_a_track_alive_but_never_start_one():
    tracker = Tracker()
    ids = []
    for f in range(12):
        score = 0.9 if f < 4 else 0.3  # the object is half hidden: its score drops
        out = tracker.update(frame([(0, 60 + 4 * f, 100, 15, score), (1, 250, 200, 15, 0.3)]))
        ids.append(out.track_ids.tolist())
    assert ids[-1] == [1] and all(i == [1] for i in ids[1:])


def test_reuse_input_gives_the_same_tracks_without_copying_masks():
    objects = [[(0, 40 + 4 * f, 60, 12, 0.7), (1, 150, 60 + 3 * f, 14, 0.8), (0, 250 - 4 * f, 180, 12, 0.6)]
               for f in range(6)]
    a, b = Tracker(), Tracker()
    for f, objs in enumerate(objects):
        extra = [(1, 20 + 40 * f, 220, 10, 0.95)]  # a new object in each frame, top score: never confirmed
        out_a = a.update(frame(objs + extra))
        det = frame(objs + extra)
        out_b = b.update(det, reuse_input=True)
    by_id_a = {int(t): m for t, m in zip(out_a.track_ids, out_a.masks)}
    by_id_b = {int(t): m for t, m in zip(out_b.track_ids, out_b.masks)}
    assert by_id_a.keys() == by_id_b.keys() == {1, 2, 3}
    assert all(np.array_equal(by_id_a[t], by_id_b[t]) for t in by_id_a)
    assert np.shares_memory(out_b.masks, det.masks) and not np.shares_memory(out_a.masks, det.masks)
    for i in range(len(det)):  # the input stays a consistent set of the same instances
        ys, xs = np.nonzero(det.masks[i])
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(det.boxes[i].astype(int))


def test_empty_frames_and_bad_config():
    tracker = Tracker()
    out = tracker.update(Detections.empty((H, W), NAMES))
    assert len(out) == 0 and out.track_ids.shape == (0,)
    with pytest.raises(ValueError, match="low_score"):
        TrackerConfig(low_score=0.6, high_score=0.5)
    with pytest.raises(ValueError, match="mask_weight"):
        Tracker(mask_weight=1.5)
    with pytest.raises(ValueError, match=r"refind_other_class must be in \[0, 1\], got 0.5, 0.3, -0.1"):
        Tracker(refind_other_class=-0.1)


def test_similarity_weighs_other_classes_and_skips_pairs_that_cannot_match():
    """A pair of different classes is worth class_weight times the same pair of one class (-1 with 0); with
    ``at_least``, a pair that could not reach it even with a perfect mask IoU is -1, the others unchanged."""
    from isseg.track.matching import crop_mask, similarity

    boxes = np.array([[80, 80, 120, 120], [84, 80, 124, 120], [110, 80, 150, 120]], np.float32)
    masks = [disc(100, 100, 20), disc(104, 100, 20), disc(130, 100, 20)]
    crops = [crop_mask(m, b) for m, b in zip(masks, boxes)]
    track = (boxes[:1], np.array([0]), crops[:1])
    same = similarity(*track, boxes[1:], np.array([0, 0]), crops[1:], 0.5)
    other = similarity(*track, boxes[1:], np.array([1, 1]), crops[1:], 0.5, class_weight=0.3)
    assert same[0, 0] > 0.7 and np.allclose(other, 0.3 * same)
    assert (similarity(*track, boxes[1:], np.array([1, 1]), crops[1:], 0.5) == -1).all()
    # the far pair: box IoU 0.14, so at most 0.3 * (0.5 * 0.14 + 0.5) = 0.17 < 0.2; the near one is kept
    pruned = similarity(*track, boxes[1:], np.array([1, 1]), crops[1:], 0.5, class_weight=0.3, at_least=0.2)
    assert pruned[0, 1] == -1 and pruned[0, 0] == other[0, 0]


def test_earlier_holds_a_new_tracks_detections_from_before_its_id():
    """An object whose score alternates between sure and unsure starts tentative tracks that die at the next
    unsure frame, until two sure frames in a row confirm one (frame 6). ``earlier`` then holds its
    detections of every frame before (1 to 6 frames ago), those of the tentative tracks that died included,
    with their own boxes and the new track's ID; it is empty in the other frames, and the output never
    depends on it."""
    scores = [0.3, 0.8, 0.2, 0.8, 0.2, 0.9, 0.9, 0.9]
    tracker, plain = Tracker(), Tracker(backfill_frames=0)
    boxes = []
    for f, s in enumerate(scores):
        det = frame([(0, 40 + 3 * f, 60, 12, s)])
        boxes.append(det.boxes[0].copy())
        out, out0 = tracker.update(det), plain.update(frame([(0, 40 + 3 * f, 60, 12, s)]))
        assert out.track_ids.tolist() == out0.track_ids.tolist() and plain.earlier == []
        if f != 6:
            assert tracker.earlier == []
            continue
        assert out.track_ids.tolist() == [1]
        assert [ago for ago, _ in tracker.earlier] == [6, 5, 4, 3, 2, 1]
        for ago, det_ago in tracker.earlier:
            assert det_ago.track_ids.tolist() == [1] and det_ago.masks.shape == (1, H, W)
            np.testing.assert_array_equal(det_ago.boxes[0], boxes[f - ago])
            assert det_ago.scores[0] == pytest.approx(scores[f - ago])


@pytest.mark.parametrize("x_start, border", [(262, True), (162, False)])
def test_a_track_that_goes_out_through_a_border_is_not_refound_inside(x_start, border):
    """An object walks right (3 px a frame); in frame 16 it is not detected, and a false positive (score
    0.55) appears 24 px behind where its box's centre would be, overlapping nothing. Re-finding by centre
    distance (stage 3, for objects that went behind something) takes it when the object was in the middle
    of the frame; when its box touched the right border as it moved towards it, the object went out there,
    so only a detection at that border could be it: the false positive gets no ID."""
    tracker = Tracker()
    for f in range(16):
        out = tracker.update(frame([(0, x_start + 3 * f, 120, 15, 0.9)]))
    assert out.track_ids.tolist() == [1]
    assert (out.boxes[0, 2] >= W - 1) == border  # the object's box touches the border (or not) when last seen
    centre = float(out.boxes[0, 0] + out.boxes[0, 2]) / 2 + 3
    out = tracker.update(frame([(0, centre - 24, 120, 9, 0.55)]))
    assert out.track_ids.tolist() == ([] if border else [1])


@pytest.mark.parametrize("label, same_class, flipped_before, same_id", [
    (1, True, False, False), (0, True, False, True), (1, False, False, True), (1, True, True, True)])
def test_a_track_gone_out_is_refound_there_only_by_a_class_it_was_seen_as(label, same_class, flipped_before,
                                                                         same_id):
    """A person walks towards the right border (3 px a frame) and, a third of it out, is missed; in the next
    frame an object comes in at that border 20 px lower, its box barely overlapping the track's prediction.
    Re-finding by distance (stage 3) continues the track with it only when it is of a class the track was
    detected as (a car walking in where a person walked out is another object; but not when the detector
    already called that person a car once), unless ``leaving_same_class`` is off. (``refind_other_class=1``:
    the car is 0.6 of the radius away, beyond the default reach of another class anywhere in the frame.)"""
    tracker = Tracker(leaving_same_class=same_class, refind_other_class=1.0)
    for f in range(17):
        out = tracker.update(frame([(int(flipped_before and f == 8), 262 + 3 * f, 120, 15, 0.9)]))
    assert out.track_ids.tolist() == [1] and out.boxes[0, 2] == W
    tracker.update(frame([]))
    ids = [tracker.update(frame([(label, 318 - 3 * k, 140, 15, 0.9)])).track_ids.tolist() for k in range(2)]
    assert ids == ([[1], [1]] if same_id else [[], [2]])  # a new object: an ID once confirmed, a new one


@pytest.mark.parametrize("dy, label, same_id", [(8, 1, True), (20, 0, True), (20, 1, False)])
def test_a_track_lost_inside_the_frame_is_refound_by_another_class_only_where_it_was_predicted(dy, label,
                                                                                           same_id):
    """A person (30 px), missed for 2 frames in the middle of the frame, is seen again ``dy`` px lower than
    predicted: too far for stages 1 and 2, so only re-finding (stage 3) can take it. Detected as a person,
    it keeps its ID at 8 or 20 px (within the radius); detected as a car (the detector's class flipped), it
    keeps it at 8 px (a quarter of the radius: within ``refind_other_class``), but at 20 px (0.6 of it) a car
    is another object, with an ID of its own once confirmed (seed 323 of the benchmark: a circle's track,
    lost behind a triangle for a frame, took the triangle 0.87 radius away)."""
    tracker = Tracker()
    for f in range(10):
        out = tracker.update(frame([(0, 100 + 3 * f, 120, 15, 0.9)]))
    assert out.track_ids.tolist() == [1]
    tracker.update(frame([]))
    tracker.update(frame([]))
    ids = [tracker.update(frame([(label, 136 + 3 * k, 120 + dy, 15, 0.9)])).track_ids.tolist() for k in range(2)]
    assert ids == ([[1], [1]] if same_id else [[], [2]])


@pytest.mark.parametrize("direction", [1, -1])
def test_an_object_seen_down_to_a_sliver_behind_a_pillar_keeps_its_id_beyond_it(direction):
    """Its visible box shrinks against the pillar's edge and stops there; the track's whole (amodal) box does not,
    so the object is looked for, and found, where it comes out, a pillar's and its own width further on."""
    pillar = np.zeros((H, W), bool)
    pillar[:, 150:185] = True
    tracker, seen = Tracker(), []
    for f in range(90):
        cx = 160 + direction * (-100 + 3 * f)
        visible = disc(cx, 120, 16) & ~pillar
        if visible.sum() < 30:
            det = Detections.empty((H, W), NAMES)
        else:
            ys, xs = np.nonzero(visible)
            box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
            det = Detections(box, np.array([0.9], np.float32), np.array([0]), visible[None], NAMES, (H, W))
        out = tracker.update(det)
        seen += [int(i) for i in out.track_ids]
    assert seen[:5] == [1] * 5 and seen[-5:] == [1] * 5, "a new ID after the pillar"
    assert set(seen) == {1}
