"""isseg.data.synth_video: deterministic sequences with ground truth; counts on one of them end to end."""

from __future__ import annotations

import json

import cv2
import numpy as np

from isseg.data.synth_video import SynthVideo, VideoSpec, write_sequence
from isseg.track import Analytics, Tracker, load_zones, parse_zones
from isseg.track.simulate import simulate_detections

SMALL = VideoSpec(height=180, width=320, frames=40, walkers=4, crossing_pairs=1, dwellers=1, object_size=(16, 30))


def test_sequences_are_deterministic_and_ground_truth_is_consistent():
    a, b, c = SynthVideo(SMALL, 1), SynthVideo(SMALL, 1), SynthVideo(SMALL, 2)
    for f in (0, 17, 39):
        (ia, ta), (ib, tb), (ic, _) = a.render(f), b.render(f), c.render(f)
        assert np.array_equal(ia, ib) and np.array_equal(ta.masks, tb.masks) and not np.array_equal(ia, ic)
        assert ia.shape == (180, 320, 3) and ia.dtype == np.uint8
        assert (ta.masks.sum(0) <= 1).all()  # visible parts never overlap
        for k in range(len(ta.ids)):
            ys, xs = np.nonzero(ta.masks[k])
            assert tuple(ta.boxes[k]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert 0 < ta.visibility[k] <= 1
    assert a.line_crossings() == b.line_crossings()


def test_crossing_pairs_are_same_class_and_meet():
    video = SynthVideo(VideoSpec(frames=200, walkers=0, crossing_pairs=3, dwellers=0), seed=4)
    objs = video.scene.objects
    for p in range(3):
        one, two = objs[2 * p], objs[2 * p + 1]
        assert one.label == two.label
        tc = one.path[1, 0]  # both pass their shared point at the same frame
        assert np.allclose(one.centre(tc), two.centre(tc))
        assert abs(max(one.template.shape) - max(two.template.shape)) <= 8


def test_written_sequence_mot_ground_truth_video_and_zones(tmp_path):
    paths = write_sequence(tmp_path / "seq", SMALL, seed=3, video=True)
    cap = cv2.VideoCapture(str(paths["frames"]))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 40
    rows = np.loadtxt(paths["gt"], delimiter=",")
    assert rows.shape[1] == 9 and rows[:, 0].min() == 1 and rows[:, 0].max() <= 40 and (rows[:, 1] >= 1).all()
    truth = SynthVideo(SMALL, 3).render(10)[1]
    mine = rows[rows[:, 0] == 11]
    assert sorted(mine[:, 1].astype(int).tolist()) == sorted(truth.ids.tolist())
    gt = json.loads(paths["crossings"].read_text())
    assert gt["crossings"] == SynthVideo(SMALL, 3).line_crossings()
    config = load_zones(paths["zones"])
    assert [ln.name for ln in config.lines] == ["middle", "edge"] and config.zones[0].name == "zone"
    frames = write_sequence(tmp_path / "png", SMALL, seed=3, image_format="png")["frames"]
    assert len(list(frames.glob("*.png"))) == 40


def test_line_counts_are_exact_on_a_noisy_synthetic_sequence():
    """The whole chain on detector-like noise (jitter, misses while hidden, low scores, false positives):
    tracker, foot points from masks, hysteresis, the edge line; counts per line, class and direction equal
    the crossings of the objects' true foot points."""
    spec = VideoSpec(frames=150, walkers=8, crossing_pairs=2, dwellers=1)
    video = SynthVideo(spec, seed=11)
    tracker, analytics = Tracker(), Analytics(parse_zones(video.analytics_config()))
    rng = np.random.default_rng(12)
    for _, truth in video:
        tracked = tracker.update(simulate_detections(truth, rng, spec.classes))
        analytics.update(tracked, truth.timestamp, truth.index)
    analytics.finish(spec.frames / spec.fps, spec.frames)
    expected: dict[str, dict[str, dict[str, int]]] = {"middle": {}, "edge": {}}
    for c in video.line_crossings():
        expected[c["line"]].setdefault(c["class"], {"in": 0, "out": 0})[c["direction"]] += 1
    got = {line: {k: v for k, v in per.items() if v != {"in": 0, "out": 0}} for line, per in
           analytics.line_counts().items()}
    assert sum(v["in"] + v["out"] for per in expected.values() for v in per.values()) >= 6
    assert got == expected


def test_isseg_synth_video_writes_a_sequence_for_isseg_track(tmp_path):
    from isseg.cli.main import main
    from isseg.track import load_zones

    out = tmp_path / "seq"
    assert main(["synth", "--video", "--output", str(out), "--frames", "12", "--seed", "3", "--format", "png"]) == 0
    assert len(list((out / "img").glob("*.png"))) == 12
    rows = (out / "gt" / "gt.txt").read_text().splitlines()
    assert rows and all(1 <= int(r.split(",")[0]) <= 12 for r in rows)  # MOT frames count from 1
    truth = json.loads((out / "gt" / "crossings.json").read_text())
    assert {"lines", "crossings", "counts", "zone_visits"} <= set(truth)
    assert load_zones(out / "zones.json").lines  # a zones file isseg track takes as it is
    assert main(["synth", "--output", str(tmp_path / "x")]) == 1  # --num-images is needed without --video


def test_class_flips_change_labels_at_the_rate_asked_and_nothing_else_at_zero():
    """``DetectionNoise.class_flip``: that share of the objects' detections gets another class; at 0 the
    detections are the same, draw for draw, as without the field (the figures measured before it hold)."""
    from isseg.track.simulate import DetectionNoise

    spec = VideoSpec(frames=30, walkers=8, crossing_pairs=1, dwellers=0, pillars=0)
    truths = [truth for _, truth in SynthVideo(spec, seed=5)]

    def run(noise):
        rng = np.random.default_rng(7)
        return [simulate_detections(t, rng, spec.classes, noise) for t in truths]

    plain, zero, flipped = run(None), run(DetectionNoise(class_flip=0.0)), run(DetectionNoise(class_flip=0.5))
    for a, b in zip(plain, zero):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
    same = total = 0
    for det, truth in zip(flipped, truths):
        for box, label in zip(det.boxes, det.labels):
            k = np.abs(truth.boxes - box).sum(1).argmin()
            if np.abs(truth.boxes[k] - box).max() < 6:  # an object's detection, not a false positive
                same, total = same + int(label == truth.labels[k]), total + 1
    assert total > 100 and 0.35 < same / total < 0.65


def test_exact_detections_are_the_truths_visible_objects():
    """``DetectionNoise(exact=True)``: each object with ``min_area`` visible pixels or more, its visible mask,
    box and class, score 0.9; none of the others, no false positives; a frame without objects gives none."""
    from isseg.track.simulate import DetectionNoise

    spec = VideoSpec(frames=40, walkers=8, crossing_pairs=1, dwellers=0, pillars=1)
    rng = np.random.default_rng(0)
    checked = 0
    for _, truth in SynthVideo(spec, seed=3):
        det = simulate_detections(truth, rng, spec.classes, DetectionNoise(exact=True))
        big = truth.masks.reshape(len(truth.ids), -1).sum(1) >= 30 if len(truth.ids) else np.zeros(0, bool)
        np.testing.assert_array_equal(det.masks, truth.masks[big])
        np.testing.assert_array_equal(det.boxes, truth.boxes[big])
        np.testing.assert_array_equal(det.labels, truth.labels[big])
        assert (det.scores == np.float32(0.9)).all()
        checked += len(det)
    assert checked > 100
    empty = truth.__class__(**{**truth.__dict__, "ids": truth.ids[:0], "labels": truth.labels[:0],
                               "boxes": truth.boxes[:0], "masks": truth.masks[:0],
                               "visibility": truth.visibility[:0]})
    assert len(simulate_detections(empty, rng, spec.classes, DetectionNoise(exact=True))) == 0
