"""isseg.track analytics: zone files, line counts with hysteresis and at the frame edge, zones, foot points."""

from __future__ import annotations

import json

import numpy as np
import pytest

from isseg.model.detections import Detections
from isseg.track import Analytics, ZoneFileError, load_zones, parse_zones
from isseg.track.geometry import FootJumps, anchor_points, frame_interval, hidden_feet, median_velocity, share_near

H, W = 200, 300
NAMES = ("person", "car")


def blob(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """A rectangle mask clipped to the frame, as a detector sees an object cut by the frame's border."""
    m = np.zeros((H, W), bool)
    m[max(y0, 0):max(min(y1, H), 0), max(x0, 0):max(min(x1, W), 0)] = True
    return m


def tracked(objects: list[tuple[int, int, np.ndarray]]) -> Detections:
    """``objects``: (track ID, label, mask); boxes from the masks."""
    objects = [o for o in objects if o[2].any()]
    if not objects:
        return Detections.empty((H, W), NAMES, tracked=True)
    boxes = []
    for _, _, m in objects:
        ys, xs = np.nonzero(m)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return Detections(np.array(boxes, np.float32), np.full(len(objects), 0.9, np.float32),
                      np.array([o[1] for o in objects], np.int64), np.stack([o[2] for o in objects]), NAMES,
                      (H, W), np.array([o[0] for o in objects], np.int64))


def run(analytics: Analytics, frames: list[list[tuple[int, int, np.ndarray]]], fps: float = 10.0) -> list:
    events = []
    for f, objects in enumerate(frames):
        events += analytics.update(tracked(objects), f / fps, f)
    return events


VERTICAL = {"lines": [{"name": "door", "points": [[150, 200], [150, 0]], "band": 4}]}  # "in" = left to right
EDGE = {"lines": [{"name": "edge", "points": [[W - 3, H + 100], [W - 3, 0]], "band": 4}]}  # 3 px from the right


def crosses_to_the_end(analytics: Analytics, frames: list, end_s: float, end_frame: int) -> list:
    """The ``cross`` events of :func:`run` over ``frames`` and then of ``analytics.finish(end_s, end_frame)``."""
    events = run(analytics, frames) + analytics.finish(end_s, end_frame)
    return [e for e in events if e.kind == "cross"]


def test_jitter_at_the_line_counts_once():
    """A person walks up to the line, jitters across it by up to 3 px (inside the 4 px band) for 20 frames,
    then walks on: one crossing; then jitters again on the far side: still one."""
    xs = list(range(120, 148, 2)) + [150 + (3 if f % 2 else -3) for f in range(20)] + list(range(152, 190, 2))
    xs += [160 + (3 if f % 2 else -3) for f in range(10)]
    frames = [[(7, 0, blob(x - 10, 80, x + 10, 130))] for x in xs]
    a = Analytics(parse_zones(VERTICAL))
    events = run(a, frames)
    crosses = [e for e in events if e.kind == "cross"]
    assert [(e.track_id, e.direction, e.class_name) for e in crosses] == [(7, "in", "person")]
    assert a.line_counts() == {"door": {"person": {"in": 1, "out": 0}}}
    # and without the band the same walk counts every jitter
    naive = Analytics(parse_zones({"lines": [{**VERTICAL["lines"][0], "band": 0}]}))
    assert sum(e.kind == "cross" for e in run(naive, frames)) > 10


def _stub(x: int, lost_foot: bool) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 30x50 object with its foot at x (mask, box); with ``lost_foot`` its mask has lost its lower 10 rows
    (a thin strip under something in front of it) but for a 3-px stub at its right end, while its box still
    reaches down: its lowest mask pixels are 13 px right of its foot and 8 px above its box's bottom."""
    m = blob(x - 15, 80, x + 15, 120 if lost_foot else 130)
    if lost_foot:
        m[120:122, x + 12:x + 15] = True
    return m, (x - 15, 80, x + 15, 130)


def _with_boxes(objects: list[tuple[int, int, np.ndarray, tuple[int, int, int, int]]]) -> Detections:
    """Like :func:`tracked`, with boxes given: (track ID, label, mask, box)."""
    det = tracked([o[:3] for o in objects])
    det.boxes = np.array([o[3] for o in objects], np.float32)
    return det


@pytest.mark.parametrize("anchor", ["foot", "centre"])
def test_a_sighting_whose_mask_lost_its_foot_moves_the_track_over_no_line_nor_zone_border(anchor):
    """A person walks to 5 px short of a line (beyond its 4-px band), waits there, and walks back, once
    inside a zone that ends at the line. For one frame its mask loses its lower part but a stub 13 px to the
    right, across the line: its box still reaches 8 px lower (16 % of its height), so that anchor is not its
    foot, and it crosses nothing and does not leave the zone. With ``anchor: centre`` (the mask's centroid, far
    above any box's bottom) the same walk's centroid never reaches the line either: nothing counts."""
    zone = {"name": "lobby", "polygon": [[0, 0], [150, 0], [150, 200], [0, 200]], "band": 4}
    a = Analytics(parse_zones({**VERTICAL, "zones": [zone], "anchor": anchor}))
    xs = list(range(120, 145, 5)) + [145] * 6 + list(range(140, 110, -5))
    events = []
    for f, x in enumerate(xs):
        mask, box = _stub(x, lost_foot=f == 8)
        events += a.update(_with_boxes([(4, 0, mask, box)]), f / 10, f)
    assert [(e.kind, e.name) for e in events] == [("enter", "lobby")]
    assert a.line_counts() == {"door": {}} and a.occupancy() == {"lobby": {"person": 1}}
    det = _with_boxes([(4, 0, *_stub(145, lost_foot=True))])
    assert hidden_feet(det.boxes, anchor_points(det)).tolist() == [True]
    assert hidden_feet(det.boxes, anchor_points(tracked([(4, 0, _stub(145, lost_foot=False)[0])]))).tolist() == [
        False]


def _legs(x: int, right_lower: bool) -> np.ndarray:
    """A 30x50 object on two 4-px legs at x - 15..x - 11 and x + 11..x + 15 (its foot at x, between them); with
    ``right_lower`` its mask's right leg is two rows longer, so its lowest pixels are that leg's, 13 px right."""
    m = blob(x - 15, 80, x + 15, 110)
    m[110:130, x - 15:x - 11] = True
    m[110:132 if right_lower else 130, x + 11:x + 15] = True
    return m


@pytest.mark.parametrize("anchor", ["foot", "centre"])
def test_a_foot_that_jumps_to_the_other_leg_moves_the_track_over_no_line_nor_zone_border(anchor):
    """A two-legged object walks to 7 px short of a line (beyond its 4-px band) and waits there, inside a zone
    that ends at the line. For one frame its mask's right leg is two pixels longer: its lowest pixels, 13 px
    right of its foot, are across the line (no other rule sees it: they are at its box's bottom). That
    sighting jumped off the track's usual foot, so it crosses nothing and leaves no zone; then the object
    walks across the line and is counted once. With ``anchor: centre`` the same walk counts the same."""
    zone = {"name": "lobby", "polygon": [[0, 0], [150, 0], [150, 200], [0, 200]], "band": 4}
    a = Analytics(parse_zones({**VERTICAL, "zones": [zone], "anchor": anchor}))
    xs = list(range(123, 143, 5)) + [143] * 6 + list(range(148, 180, 5))
    events = []
    for f, x in enumerate(xs):
        events += a.update(tracked([(4, 0, _legs(x, right_lower=f == 6))]), f / 10, f)
    assert [(e.kind, e.name, e.frame_index) for e in events] == [("enter", "lobby", 0), ("cross", "door", 12),
                                                                  ("exit", "lobby", 12)]
    assert a.line_counts() == {"door": {"person": {"in": 1, "out": 0}}}


def test_foot_jumps_are_judged_against_the_tracks_recent_feet_and_a_lasting_change_is_accepted():
    """Anchors at half their box's width, then at 0.9 of it: the first three of those jumped (the median of the
    last five is still 0.5), the fourth is the track's foot now. A sighting cut by a frame border is not judged,
    another track has its own history, and a track's first three sightings are never a jump."""
    jumps = FootJumps()
    box = np.array([[100.0, 50, 140, 100]])
    flags = [bool(jumps.update([1], box, np.array([[100.0 + 40 * r, 99]]), np.zeros(1, bool))[0])
             for r in [0.5] * 5 + [0.9] * 4]
    assert flags == [False] * 5 + [True] * 3 + [False]
    assert jumps.update([1], box, np.array([[120.0, 99]]), np.ones(1, bool)).tolist() == [False]  # cut: not judged
    assert jumps.update([2, 1], np.repeat(box, 2, 0), np.array([[138.0, 99], [120.0, 99]]),
                        np.zeros(2, bool)).tolist() == [False, True]


def test_counts_per_class_and_direction_and_each_crossing_once():
    a = Analytics(parse_zones(VERTICAL))
    walk = [[(1, 0, blob(x, 20, x + 20, 60)), (2, 1, blob(280 - x, 120, 300 - x, 170))] for x in range(60, 230, 5)]
    back = [[(1, 0, blob(x, 20, x + 20, 60))] for x in range(230, 60, -5)]
    run(a, walk + back)
    assert a.line_counts() == {"door": {"person": {"in": 1, "out": 1}, "car": {"in": 0, "out": 1}}}


def test_foot_point_comes_from_the_mask_not_the_box():
    m = np.zeros((H, W), bool)
    for r in range(40):  # a triangle whose lowest pixels are at its left, not under the box centre
        m[60 + r, 100:100 + 40 - r] = True
    det = tracked([(1, 0, m)])
    foot = anchor_points(det)[0]
    assert foot[1] == pytest.approx(det.boxes[0, 3] - 0.5)
    assert foot[0] < 104  # the box's bottom-centre would be x = 120
    det.masks = None
    assert anchor_points(det)[0].tolist() == pytest.approx([120.0, det.boxes[0, 3]])


def test_velocity_is_the_median_of_its_pairs_so_one_jittered_point_does_not_set_it():
    """Five points 1 px apart at 10 per second, then one 8 px off: 10 px/s (the end points would give 24)."""
    hist = [(t / 10, float(t), 2.0 * t) for t in range(5)] + [(0.5, 13.0, 10.0)]
    assert median_velocity(hist) == pytest.approx((10.0, 20.0))
    assert median_velocity([(1.0, 0.0, 0.0), (1.0, 5.0, 5.0)]) is None


def test_the_share_in_the_frame_around_a_crossing_is_taken_half_a_frame_either_side():
    """An object 40 rows high whose bottom is at row 8 of a 200-row frame when its foot meets a line has 20 % of
    its height in the frame; it moves 8 rows a frame, so the frames the crossing falls between are on average
    4 rows either side: 30 % on the better one. The frame interval is the median of the sightings' gaps."""
    assert share_near(8.0, 40.0, 8.0, 200) == pytest.approx(0.3)
    assert share_near(8.0, 40.0, -8.0, 200) == pytest.approx(0.3)  # moving up: the same two frames
    assert share_near(8.0, 40.0, 0.0, 200) == pytest.approx(0.2)
    assert frame_interval([(0.0, 0, 0), (0.04, 1, 1), (0.08, 2, 2), (0.2, 3, 3)]) == pytest.approx(0.04)
    assert frame_interval([(0.0, 0, 0)]) == 0.0


def test_foot_point_is_the_masks_even_where_the_box_cuts_it():
    """A box 3 px short of the mask's lowest rows (a detector's box and mask disagree by a few pixels): the
    foot is still the mask's lowest pixels, not the wider rows the box keeps (3 px higher, 1 px to the
    right)."""
    m = np.zeros((H, W), bool)
    for r in range(40):  # lowest pixels at the left: x 100 in row 99, 100-101 in row 98
        m[60 + r, 100:100 + 40 - r] = True
    det = Detections(np.array([[100, 60, 140, 97]], np.float32), np.ones(1, np.float32), np.zeros(1, np.int64),
                     m[None], ("person",), (H, W))
    assert anchor_points(det)[0].tolist() == pytest.approx([100 + 1 / 3 + 0.5, 99.5])


@pytest.mark.parametrize("wide", [False, True])
def test_a_line_at_the_frame_edge_counts_objects_leaving_and_entering(wide):
    """A line 3 px inside the right border: box corners (or box-clipped anchors) can never pass it. Objects
    that walk out through it count "in", objects that walk in through it count "out"."""
    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]], "band": 4}],
                          "retention_s": 0.3})
    half = 30 if wide else 8
    out_walk = [[(3, 0, blob(x - half, 90, x + half, 120))] for x in range(200, W + half, 6)] + [[]] * 6
    in_walk = [[(4, 0, blob(x - half, 90, x + half, 120))] for x in range(W + half - 10, 200, -6)]
    a = Analytics(config)
    run(a, [[]] * 8 + in_walk + out_walk)  # the first object comes in after 0.8 s: not there at the start
    assert a.line_counts() == {"edge": {"person": {"in": 1, "out": 1}}}


def test_an_object_coming_in_at_the_frame_edge_is_not_counted_while_the_edge_still_cuts_it():
    """Two legs 35 px apart, its foot between them: coming in through the right border it shows its left leg
    first, whose foot is 17 px short of its own. First detected with that leg already past a line 3 px
    inside the border, it walks on until the leg is 15.5 px past, its own foot still beyond the line (its
    right leg beyond the border), and back out: no crossing. One that walks on in counts once."""
    def legs(x0: int) -> np.ndarray:
        m = blob(x0, 90, x0 + 40, 130)
        m[130:150] = blob(x0, 130, x0 + 5, 150)[130:150] | blob(x0 + 35, 130, x0 + 40, 150)[130:150]
        return m

    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]], "band": 4}],
                          "retention_s": 0.3})
    path = list(range(W - 12, W - 21, -3)) + list(range(W - 21, W + 3, 3))
    # at its furthest in: the left leg's foot 15.5 px past the line, its own foot (x0 + 20 = W - 1) beyond it
    assert anchor_points(tracked([(1, 0, legs(W - 21))]))[0].tolist() == [W - 18.5, 149.5]
    a = Analytics(config)
    walk_on = [[(2, 0, legs(x))] for x in range(W - 12, W - 90, -3)]
    events = run(a, [[]] * 8 + [[(1, 0, legs(x))] for x in path] + [[]] * 6 + walk_on)
    assert [(e.track_id, e.direction) for e in events if e.kind == "cross"] == [(2, "out")]


def test_an_object_cut_by_the_frame_edge_beyond_a_line_when_the_stream_starts_counts_when_it_walks_in():
    """When the stream starts, an object (20 x 40) is cut by the right border, its visible foot 0.5 px
    beyond a line 3 px from that border (its own foot, hidden, 8 px beyond). It walks in, left 2 px per
    frame: its foot crossed the line after the stream began, so it counts (out) once it has walked in by the
    band and the border no longer cuts it, as any object coming in there does."""
    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]], "band": 4}]})
    frames = [[(3, 0, blob(295 - 2 * f, 80, 315 - 2 * f, 120))] for f in range(16)]
    assert anchor_points(tracked(frames[0]))[0].tolist() == [297.5, 119.5]
    crosses = [e for e in run(Analytics(config), frames) if e.kind == "cross"]
    assert [(e.track_id, e.direction, e.frame_index) for e in crosses] == [(3, "out", 9)]


def test_an_object_first_seen_past_a_line_at_the_frame_edge_was_there_before_if_its_motion_says_so():
    """Two objects walk in through the right border at 3 px a frame; the detector first finds both at frame 5.
    One is already 17 px past a line 3 px inside the border: run backwards, its foot met the line before the
    stream began, so no crossing. The other, its foot still beyond the line, crosses in the stream."""
    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]], "band": 4}]})
    frames = [[]] * 5 + [[(1, 0, blob(x - 30, 40, x + 30, 70)), (2, 0, blob(x + 8, 130, x + 68, 160))]
                         for x in range(W - 20, W - 120, -3)]
    events = run(Analytics(config), frames)
    assert [(e.track_id, e.direction) for e in events if e.kind == "cross"] == [(2, "out")]


def test_zone_enter_dwell_exit_and_lost():
    config = parse_zones({"zones": [{"name": "bay", "polygon": [[100, 50], [200, 50], [200, 150], [100, 150]],
                                     "max_dwell_s": 1.0}], "retention_s": 0.5})
    a = Analytics(config)
    frames = [[(5, 1, blob(x, 60, x + 30, 90))] for x in range(40, 130, 10)]  # walks in
    frames += [[(5, 1, blob(130, 60, 160, 90)), (6, 0, blob(140, 100, 150, 120))]] * 15  # stays; a person too
    frames += [[(5, 1, blob(x, 60, x + 30, 90))] for x in range(130, 250, 10)]  # leaves; the person vanishes
    events = run(a, frames)
    kinds = [(e.kind, e.track_id, e.reason, e.frame_index) for e in events]
    # car enters at frame 5 (its foot 5 px inside), the person at 9; dwell after 1 s; the person, last seen
    # at frame 23, has left once missing for more than 0.5 s; the car's foot leaves at frame 30
    assert kinds == [("enter", 5, "", 5), ("enter", 6, "", 9), ("dwell", 5, "", 15), ("dwell", 6, "", 19),
                     ("exit", 6, "lost", 29), ("exit", 5, "left", 30)]
    exit5, exit6 = (next(e for e in events if e.kind == "exit" and e.track_id == t) for t in (5, 6))
    assert exit5.dwell_s == pytest.approx(3.0 - 0.5) and exit6.dwell_s == pytest.approx(2.3 - 0.9)
    assert exit5.timestamp == pytest.approx(3.0) and exit5.class_name == "car"
    summary = a.summary()["zones"]["bay"]
    assert summary["entries"] == {"car": 1, "person": 1} and summary["visits"] == 2 and summary["occupancy"] == {}


def test_zone_occupancy_and_finish():
    a = Analytics(parse_zones({"zones": [{"name": "z", "polygon": [[0, 0], [150, 0], [150, 200], [0, 200]]}]}))
    run(a, [[(1, 0, blob(20, 20, 40, 60)), (2, 0, blob(60, 20, 80, 60)), (3, 1, blob(200, 20, 240, 60))]] * 3)
    assert a.occupancy() == {"z": {"person": 2}}
    events = a.finish(1.0, 3)
    assert sorted((e.kind, e.track_id, e.reason) for e in events) == [("exit", 1, "end"), ("exit", 2, "end")]


def test_analytics_needs_tracked_detections():
    a = Analytics(parse_zones(VERTICAL))
    det = tracked([(1, 0, blob(10, 10, 20, 20))])
    det.track_ids = None
    with pytest.raises(ValueError, match="track_ids"):
        a.update(det, 0.0, 0)


def test_fraction_units_follow_the_frame_size():
    config = parse_zones({"units": "fraction", "lines": [{"name": "mid", "points": [[0.5, 1], [0.5, 0]]}]})
    a = Analytics(config)
    run(a, [[(1, 0, blob(x, 20, x + 20, 60))] for x in range(60, 230, 5)])
    assert a.lines[0].line.a == (150.0, 200.0) and a.line_counts()["mid"]["person"]["in"] == 1


GOOD = """
lines:
  - name: door
    points: [[10, 20], [30, 40]]
zones:
  - name: bay
    polygon: [[0, 0], [10, 0], [10, 10]]
    max_dwell_s: 5
"""


@pytest.mark.parametrize(("text", "suffix", "field"), [
    ("lines: [{name: a, points: [[1, 2]]}]", ".yaml", "lines[0].points"),
    ("lines: [{name: a, points: [[1, 2], [3, x]]}]", ".yaml", "lines[0].points[1][1]"),
    ("lines: [{name: a, pts: [[1, 2], [3, 4]]}]", ".yaml", "lines[0]"),
    ("lines: [{name: a, points: [[1, 2], [3, 4]]}, {name: a, points: [[1, 2], [3, 5]]}]", ".yaml", "lines[1].name"),
    ("zones: [{name: z, polygon: [[0, 0], [1, 1]]}]", ".yaml", "zones[0].polygon"),
    ("zones: [{name: z, polygon: [[0, 0], [1, 0], [0, 1]], max_dwell_s: -1}]", ".yaml", "zones[0].max_dwell_s"),
    ("zones: [{name: z, polygon: [[0, 0], [1, 1], [2, 2]]}]", ".yaml", "zones[0].polygon"),
    ("units: inches\nlines: []", ".yaml", "units"),
    ("lines: [{name: a, points: [[1, 2], [3, 4]]", ".yaml", "line 1"),
    ('{"lines": [}', ".json", "line 1"),
    ("[1, 2]", ".yaml", "top level"),
    ("lines: []", ".yaml", "lines/zones"),
    ("units: fraction\nlines: [{name: a, points: [[0, 0], [640, 480]]}]", ".yaml", "units"),
])
def test_bad_zone_files_give_one_line_naming_file_and_field(tmp_path, text, suffix, field):
    path = tmp_path / f"zones{suffix}"
    path.write_text(text)
    with pytest.raises(ZoneFileError) as err:
        load_zones(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)) and field in message and "expected" in message \
        or "not valid" in message


def test_good_zone_files_and_missing_file(tmp_path):
    (tmp_path / "z.yaml").write_text(GOOD)
    config = load_zones(tmp_path / "z.yaml")
    assert config.lines[0].a == (10.0, 20.0) and config.zones[0].max_dwell_s == 5.0
    (tmp_path / "z.json").write_text(json.dumps({"lines": [{"name": "door", "points": [[10, 20], [30, 40]]}]}))
    assert load_zones(tmp_path / "z.json").lines[0].b == (30.0, 40.0)
    with pytest.raises(ZoneFileError, match="cannot be read") as err:
        load_zones(tmp_path / "missing.yaml")
    assert "\n" not in str(err.value)


def test_an_edge_exit_is_counted_after_the_retention_or_at_the_end():
    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]]}], "retention_s": 5.0})
    a = Analytics(config)
    run(a, [[]] * 60 + [[(3, 0, blob(x - 20, 90, x + 20, 120))] for x in range(200, W + 20, 6)] + [[]] * 3)
    assert a.line_counts() == {"edge": {}}  # gone for 0.3 s only: it may still come back
    events = a.finish(10.0, 100)
    assert [(e.kind, e.direction, e.frame_index) for e in events] == [("cross", "in", 100)]
    assert a.line_counts() == {"edge": {"person": {"in": 1, "out": 0}}}


def _entering_from_below(frames: int = 40) -> list[Detections]:
    """A person comes in through the bottom border walking up and left, across the vertical line x = 150
    while still half cut by the border: found only with low scores (0.3) until 60 % of it is in the frame."""
    out = []
    for f in range(frames):
        x, y = 170 - 1.5 * f, 235 - 2.5 * f  # its box's top-left corner; the box is 24 x 50
        m = blob(round(x), round(y), round(x) + 24, round(y) + 50)
        ys, xs = np.nonzero(m)
        if not len(xs):
            out.append(Detections.empty((H, W), NAMES))
            continue
        score = 0.9 if m.sum() >= 0.6 * 24 * 50 else 0.3
        out.append(Detections(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32),
                              np.array([score], np.float32), np.zeros(1, np.int64), m[None], NAMES, (H, W)))
    return out


def test_a_line_crossed_before_the_track_is_confirmed_is_counted():
    """The object crosses the line (foot from x = 182 to x = 146 by frame 24) while its scores are too low to
    start a track (confirmed at frame 27, already left of the line): the tracker's earlier detections,
    replayed, count the crossing once ("out": right to left); without them, it is missed. The tracker's own
    output is the same with and without backfill."""
    from isseg.track import Tracker

    def count(backfill: int, replay: bool) -> tuple[dict, list]:
        tracker, a = Tracker(backfill_frames=backfill), Analytics(parse_zones(VERTICAL))
        outputs = []
        for f, det in enumerate(_entering_from_below()):
            out = tracker.update(det)
            outputs.append((out.track_ids.tolist(), out.boxes.tolist()))
            a.update(out, f / 10, f, tracker.earlier if replay else ())
        a.finish(4.0, 40)
        return a.line_counts(), outputs

    with_replay, outputs = count(10, True)
    assert with_replay == {"door": {"person": {"in": 0, "out": 1}}}
    assert count(10, False)[0] == {"door": {}}
    no_backfill, outputs_0 = count(0, True)
    assert no_backfill == {"door": {}} and outputs_0 == outputs
    assert any(ids for ids, _ in outputs)


@pytest.mark.parametrize("replayed", [0, 3])
def test_replayed_sightings_cut_by_the_edge_make_no_second_entry(replayed):
    """An object that walks in through a line at the frame edge counts once ("out"), whether its first
    frames come as normal updates or, replayed, as a new track's earlier detections (they are cut by the
    border beyond the line, so they tell nothing of its foot, and are left out)."""
    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]], "band": 4}]})
    walk = [[(4, 0, blob(x - 30, 90, x + 30, 120))] for x in range(W + 20, 150, -6)]
    a = Analytics(config)
    run(a, [[]] * 8)
    events = []
    for f, objects in enumerate(walk[replayed:], start=8 + replayed):
        earlier = [(replayed - k, tracked(walk[k])) for k in range(replayed)] if f == 8 + replayed else []
        events += a.update(tracked(objects), f / 10, f, earlier)
    assert [(e.kind, e.direction) for e in events] == [("cross", "out")]
    assert a.line_counts() == {"edge": {"person": {"in": 0, "out": 1}}}


def test_an_object_cut_by_one_border_leaves_through_it_whatever_its_anchor_does():
    """Two objects cut by the right border move down and vanish. One, seen whole before, touches only the
    right border: its visible foot stays pinned left of a line 3 px from that border (it does not move
    towards the line), yet it can only have left through that border, so it counts once. The other is cut
    at the bottom-right corner, moving down: it left through the bottom, and the edge line does not count
    it."""
    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]], "band": 4}],
                          "retention_s": 0.3})
    side = [[(1, 0, blob(x, 40, x + 50, 80))] for x in range(212, 252, 10)]
    side += [[(1, 0, blob(262, y, 312, y + 40))] for y in range(40, 80, 2)] + [[]] * 8
    corner = [[(2, 0, blob(280, y, 330, y + 40))] for y in range(150, 190, 2)] + [[]] * 8
    for frames, expected in ((side, {"in": 1, "out": 0}), (corner, None)):
        a = Analytics(config)
        run(a, frames)
        assert a.line_counts()["edge"].get("person") == expected


def _walk(xs: list[int], tid: int = 3) -> list[list[tuple[int, int, np.ndarray]]]:
    """One person whose foot (the mask's lowest pixels, centred) is at x in ``xs``, frame after frame."""
    return [[(tid, 0, blob(x - 10, 80, x + 10, 130))] for x in xs]


@pytest.mark.parametrize("stop, expected", [(152, 1), (148, 0)])
def test_a_crossing_within_the_band_counts_when_the_stream_ends(stop, expected):
    """A person who has just stepped over the line (2 px past it, inside the 4 px band) when the video ends
    crossed it; one who stops 2 px before it did not. Counted once, at ``finish``."""
    a = Analytics(parse_zones(VERTICAL))
    frames = _walk(list(range(120, stop, 2)) + [stop])
    assert not [e for e in run(a, frames) if e.kind == "cross"]
    crosses = [e for e in a.finish(len(frames) / 10.0, len(frames)) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == [(3, "in")] * expected
    assert a.line_counts() == ({"door": {"person": {"in": expected, "out": 0}}} if expected else {"door": {}})


def test_a_track_lost_just_past_the_line_counts_once_after_the_retention():
    """A person lost (not at the frame edge) 2 px past the line counts when it has been missing for the
    retention, once; a person lost while still on its own side counts nothing."""
    a = Analytics(parse_zones({**VERTICAL, "retention_s": 0.5}))
    frames = [[(3, 0, blob(x - 10, 80, x + 10, 130)), (4, 0, blob(x - 50, 140, x - 30, 190))]
              for x in list(range(120, 152, 2)) + [152]]
    crosses = [e for e in run(a, frames + [[]] * 10) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == [(3, "in")]
    last_seen = len(frames) - 1
    assert crosses[0].frame_index - last_seen > 5  # missing for more than 0.5 s at 10 frames a second
    assert not [e for e in a.finish(5.0, 50) if e.kind == "cross"]


@pytest.mark.parametrize("onward, expected", [(True, [(5, "in")]), (False, [])])
def test_a_track_first_seen_within_the_band_counts_when_it_walks_over(onward, expected):
    """A person first seen 2 px before the line (inside the band) who walks over it crossed it; one who walks
    back the way it came did not."""
    a = Analytics(parse_zones(VERTICAL))
    xs = [148, 150, 152, 156, 160, 166] if onward else [148, 146, 142, 138, 134, 130]
    crosses = crosses_to_the_end(a, _walk(xs, tid=5), 1.0, len(xs))
    assert [(e.track_id, e.direction) for e in crosses] == expected


def _footed(x: int, y1: int, body: tuple[int, int], foot: tuple[int, int], height: int, foot_h: int) -> np.ndarray:
    """A body with a narrower foot below it: the foot spans ``x + foot`` in its last ``foot_h`` rows (above
    ``y1``), the body ``x + body`` in the ``height - foot_h`` rows above that; cut by the frame's border."""
    return blob(x + body[0], y1 - height, x + body[1], y1 - foot_h) | blob(x + foot[0], y1 - foot_h, x + foot[1], y1)


def test_a_track_that_ends_out_through_the_bottom_settles_on_its_last_whole_foot():
    """A person's foot walks to 2 px past the line (inside the band), then it walks straight down out of
    the frame. Once its foot is below the frame its lowest visible pixels are its body's (3 px before the
    line): that is not where it stands. When it is gone, the last foot seen whole decides: it crossed, once."""
    shape = {"body": (-10, 0), "foot": (-3, 3), "height": 50, "foot_h": 10}
    frames = [[(1, 0, _footed(140 + f, 150 + 3 * f, **shape))] for f in range(13)]
    frames += [[(1, 0, _footed(152, 186 + 4 * k, **shape))] for k in range(1, 12)]
    assert anchor_points(tracked(frames[-1]))[0].tolist() == [147.0, 199.5]  # the body's, cut by the bottom
    a = Analytics(parse_zones({**VERTICAL, "retention_s": 0.5}))
    crosses = crosses_to_the_end(a, frames + [[]] * 10, 4.0, 40)
    assert [(e.track_id, e.direction, e.point) for e in crosses] == [(1, "in", (152.0, 193.5))]


def test_a_corner_exit_is_judged_by_the_motion_from_before_the_border_cut_it():
    """An object walks right (3 px a frame) and up (1 px) out through the top-right corner, past a line
    3 px from the right border. Its foot (a 2 px stub at its right end) leaves the frame before its anchor
    passes the band; then its lowest visible pixels are its body's, 12 px back, so its last few anchors
    move away from the line. Its motion while the frame did not cut it meets the line before the top
    border: it went out through the line's side, and counts once."""
    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]], "band": 4}],
                          "retention_s": 0.3})
    shape = {"body": (-30, 0), "foot": (-1, 1), "height": 40, "foot_h": 6}
    frames = [[(2, 0, _footed(250 + 3 * f, 60 - f, **shape))] for f in range(19)]
    assert [round(float(anchor_points(tracked(f))[0, 0]), 1) for f in frames[-3:]] == [298.0, 285.5, 287.0]
    a = Analytics(config)
    crosses = [e for e in run(a, frames + [[]] * 8) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == [(2, "in")]
    assert a.line_counts() == {"edge": {"person": {"in": 1, "out": 0}}}


def test_a_track_cut_by_the_edge_past_the_line_when_the_stream_ends_counts():
    """A person walks out through the right border past a line 3 px inside it; the video ends while the
    border still cuts it, with its visible foot 1 px past the line (inside the band). The cut only hides the
    part of it further out, so its foot is past the line too: it crossed, counted once at ``finish``."""
    config = parse_zones({"lines": [{"name": "edge", "points": [[W - 3, H], [W - 3, 0]], "band": 4}]})
    a = Analytics(config)
    frames = [[(6, 0, blob(x - 10, 80, x + 10, 130))] for x in range(250, 307, 4)]
    assert anchor_points(tracked(frames[-1]))[0].tolist() == [298.0, 129.5]
    assert not [e for e in run(a, [[]] * 8 + frames) if e.kind == "cross"]
    crosses = [e for e in a.finish(3.0, 30) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == [(6, "in")]


@pytest.mark.parametrize("steep, expected", [(False, {"in": 1, "out": 0}), (True, None)])
def test_a_bottom_corner_exit_counts_if_enough_of_it_is_in_the_frame_when_its_foot_meets_the_line(steep, expected):
    """An object (40 px tall) walks out through the bottom-right corner, past a line 3 px from the right
    border. Walking mostly right, its foot meets the line with most of it in the frame: it went out through
    the line. Walking steeply down (8 px a frame), its foot would meet the line with 5 % of it in the frame's
    rows, 15 % half a frame before (less than ``MIN_INSIDE`` on both): it went out through the bottom, and
    does not count."""
    config = parse_zones({**EDGE, "retention_s": 0.3})
    if steep:
        frames = [[(7, 0, blob(260 + 2 * f, 90 + 8 * f, 280 + 2 * f, 130 + 8 * f))] for f in range(14)]
    else:
        frames = [[(7, 0, blob(250 + 3 * f, 150 + f, 270 + 3 * f, 190 + f))] for f in range(17)]
    a = Analytics(config)
    run(a, [[]] * 8 + frames + [[]] * 6)
    assert a.line_counts() == {"edge": {"person": expected} if expected else {}}


def test_a_bottom_corner_exit_is_judged_by_its_hidden_foot_not_its_pinned_anchor():
    """An object (20 x 40) whose foot is a 6 px toe at its left end walks right 2 px and down 6 px per frame
    out through the bottom-right corner, past a line 3 px from the right border. Last seen with its toe
    below the frame, its lowest visible pixels are its body's, 7 px nearer the line than its foot: from
    there, its bottom would meet the line with 30 % of it in the frame's rows. Its foot, estimated from the
    box's uncut left side and the toe's offset seen whole, and its top plus the height seen whole, meets the
    line only below the frame (0 % in the rows, half a frame before too): it went out through the bottom,
    no crossing."""
    config = parse_zones({**EDGE, "retention_s": 0.3})
    shape = {"body": (0, 20), "foot": (0, 6), "height": 40, "foot_h": 4}
    frames = [[(3, 0, _footed(264 + 2 * f, H - 40 + 6 * f, **shape))] for f in range(9)]
    assert anchor_points(tracked(frames[-1]))[0].tolist() == [290.0, H - 0.5]  # the body's, pinned
    a = Analytics(config)
    crosses = crosses_to_the_end(a, [[]] * 5 + frames + [[]] * 8, 3.0, 30)
    assert crosses == []


def test_a_bottom_corner_exit_whose_hidden_foot_is_past_the_line_is_judged_on_the_frames_around_the_line():
    """An object (20 x 40) whose foot is a 6 px heel at its right end walks right 4 px and down 8 px per
    frame out through the bottom-right corner. Last seen with 20 % of its height in the frame, its hidden
    foot (estimated) is 1 px past a line 3 px from the right border, though its visible lowest pixels are
    6.5 px before it. Its foot met the line a quarter of a frame earlier, with 27 % of its pixels in the
    frame's rows, and 38 % half a frame before: a crossing counts when ``MIN_INSIDE`` of the object is in the
    frame on the frame before it or the one after (taken half a frame from it), so it went out through the
    line, once."""
    config = parse_zones({**EDGE, "retention_s": 0.3})
    shape = {"body": (0, 20), "foot": (14, 20), "height": 40, "foot_h": 4}
    frames = [[(4, 0, _footed(245 + 4 * f, H - 40 + 8 * f, **shape))] for f in range(10)]
    assert anchor_points(tracked(frames[-1]))[0].tolist() == [290.5, H - 0.5]  # the body's, pinned
    a = Analytics(config)
    crosses = crosses_to_the_end(a, [[]] * 5 + frames + [[]] * 8, 3.0, 30)
    assert [(e.track_id, e.direction) for e in crosses] == [(4, "in")]


@pytest.mark.parametrize("steep, expected", [(False, [(8, "in")]), (True, [])])
def test_a_track_gone_through_the_top_just_before_the_line_counts_if_its_motion_met_it_first(steep, expected):
    """A person walks up and right out through the top border and is lost with its foot 1 px before a line
    (inside the band), 20 px below the top, 40 px tall: its motion meets the line with half of it in the
    frame, so it crossed. One lost 3 px before the line walking steeply up would be out of the frame before
    its foot met the line: no crossing."""
    n = 10
    if steep:
        frames = [[(8, 0, blob(137 - (n - 1 - f), -28 + 8 * (n - 1 - f), 157 - (n - 1 - f), 12 + 8 * (n - 1 - f)))]
                  for f in range(n)]
    else:
        frames = [[(8, 0, blob(139 - 2 * (n - 1 - f), -20 + 3 * (n - 1 - f), 159 - 2 * (n - 1 - f),
                                20 + 3 * (n - 1 - f)))] for f in range(n)]
    assert abs(anchor_points(tracked(frames[-1]))[0, 0] - 150) == (3 if steep else 1)
    a = Analytics(parse_zones({**VERTICAL, "retention_s": 0.5}))
    crosses = crosses_to_the_end(a, frames + [[]] * 10, 3.0, 30)
    assert [(e.track_id, e.direction) for e in crosses] == expected


@pytest.mark.parametrize("kind, expected", [("rectangle", [(8, "in")]), ("apex down", [])])
def test_a_track_gone_through_the_top_counts_by_the_share_of_its_mask_in_the_frame(kind, expected):
    """An object 20 wide and 30 high walks right 2 px and up 3 px per frame out through the top border and is
    lost with its foot 1 px before a line, its bottom 12 px below the top: its foot meets the line with 35 %
    of its height in the frame (40 % half a frame before). A rectangle has that share of its pixels there: it
    crossed. A triangle with its apex down has 13 % (17 % half a frame before), by the shape of its mask as
    last seen whole near the top: it went out through the top, no crossing."""
    n = 12
    frames = [[(8, 0, _shape(kind, 149 - 2 * (n - 1 - f), -18 + 3 * (n - 1 - f), h=30))] for f in range(n)]
    assert anchor_points(tracked(frames[-1]))[0].tolist() == [149.0, 11.5 if kind == "rectangle" else 10.5]
    a = Analytics(parse_zones({**VERTICAL, "retention_s": 0.5}))
    crosses = crosses_to_the_end(a, frames + [[]] * 10, 3.0, 30)
    assert [(e.track_id, e.direction) for e in crosses] == expected


@pytest.mark.parametrize("steep, expected", [(False, [(9, "in")]), (True, [])])
def test_a_track_gone_through_the_bottom_before_the_line_counts_by_its_hidden_foot(steep, expected):
    """An object (20 x 40) cut by the bottom border has no visible foot: its lowest visible pixels are pinned to
    the border; its foot is estimated from its mask's top rows, placed as when it was last seen whole. Lost
    there with that foot 2 px before the line, walking right and down 2 px a frame, it meets the line a frame
    later with 70 % of it in the frame's rows: it crossed (as the benchmark's truth counts it). Walking 1 px
    right and 10 px down a frame, it is wholly below the frame when its foot meets the line: no crossing."""
    n, dy = 12, 10 if steep else 2
    dx = 1 if steep else 2
    frames = [[(9, 0, blob(138 - dx * (n - 1 - f), 170 + (20 if steep else 0) - dy * (n - 1 - f),
                            158 - dx * (n - 1 - f), 210 + (20 if steep else 0) - dy * (n - 1 - f)))] for f in range(n)]
    assert anchor_points(tracked(frames[-1]))[0].tolist() == [148.0, 199.5]
    a = Analytics(parse_zones({**VERTICAL, "retention_s": 0.5}))
    crosses = crosses_to_the_end(a, frames + [[]] * 10, 3.0, 30)
    assert [(e.track_id, e.direction) for e in crosses] == expected
    assert [e.point for e in crosses] == ([(148.0, 210.0)] if expected else [])  # its hidden foot, not 199.5


def _shape(kind: str, cx: int, top: int, h: int = 40, w: int = 20) -> np.ndarray:
    """A ``kind`` ("triangle": apex up; "apex down"; "rectangle"; "heel": a rectangle whose lowest 8 rows narrow to its
    right end, so its foot is 9 px right of its centre) ``w`` wide at its base and ``h`` high, centred on
    ``cx``, its top row at ``top``, clipped to the frame."""
    m = np.zeros((H, W), bool)
    for r in range(h):
        half = (r + 1) / h * w / 2 if kind == "triangle" else (h - r) / h * w / 2 if kind == "apex down" else w / 2
        left = cx + w / 2 - 2 * (h - r) if kind == "heel" and r >= h - 8 else cx - half
        if 0 <= top + r < H:
            m[top + r, max(round(left), 0):max(round(cx + half), 0)] = True
    return m


@pytest.mark.parametrize("kind, expected", [("rectangle", [(6, "out")]), ("triangle", [])])
def test_a_crossing_below_the_frame_counts_by_the_share_of_the_mask_in_the_frame(kind, expected):
    """An object 20 x 40 comes up through the bottom border walking left 3 px and up 1 px per frame, first
    seen 12 px past a line 3 px from the right border. Run backwards, its foot meets the line when 40 % of its
    height is in the frame. A rectangle then has 40 % of its pixels in the frame, over the 30 % rule: it came
    in through the line. A triangle (apex up) has 16 %: it came in through the bottom, and does not count."""
    config = parse_zones(EDGE)
    frames = [[(6, 0, _shape(kind, 285 - 3 * f, H - 20 - f))] for f in range(30)]
    crosses = [e for e in run(Analytics(config), [[]] * 5 + frames) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == expected


def test_a_track_first_seen_cut_at_a_bottom_corner_is_judged_by_its_estimated_foot():
    """An object 60 px wide whose foot is 29 px right of its centre comes up through the bottom-right corner,
    walking left and up 4 px per frame. First seen cut by the bottom and right borders, its foot (hidden) is
    16 px right of a line 20 px from the right border, its visible lowest pixels 13 px left of it: nothing
    in sight crosses. Once it is seen whole, its foot then is estimated from that sighting's box: right of
    the line, and it met the line with 90 % of its height in the frame's rows: it crossed (out)."""
    config = parse_zones({"lines": [{"name": "door", "points": [[W - 20, H + 100], [W - 20, 0]], "band": 4}]})
    frames = [[(9, 0, _shape("heel", 267 - 4 * f, H - 20 - 4 * f, w=60))] for f in range(12)]
    assert anchor_points(tracked(frames[0]))[0][0] == 267  # the lowest visible rows, cut at the right border
    crosses = [e for e in run(Analytics(config), frames) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == [(9, "out")]


@pytest.mark.parametrize("x0, expected", [(150, {"in": 0, "out": 1}), (128, None)])
def test_a_track_that_came_up_from_below_across_the_line_counts_once_seen_whole(x0, expected):
    """A person whose foot is 16 px right of its body's centre comes in through the bottom border walking up
    and left. Its first sighting shows only its body (its foot is below the frame), left of the line; its
    foot meets the line (x = 150, running on below the frame) with 43 % of its height in the frame. Once
    it is seen whole, its foot at the first sighting is estimated from that box and the shape seen whole:
    right of the line, so it crossed (out). Started 22 px further left, its foot never meets the line."""
    shape = {"body": (-10, 0), "foot": (8, 14), "height": 40, "foot_h": 8}
    frames = [[(4, 0, _footed(x0 - 3 * f, H + 30 - 2 * f, **shape))] for f in range(20)]
    assert anchor_points(tracked(frames[0]))[0][0] == x0 - 5  # the body's lowest visible pixels
    a = Analytics(parse_zones({"lines": [{"name": "door", "points": [[150, H + 100], [150, 0]], "band": 4}]}))
    crosses = [e for e in run(a, frames) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == ([(4, "out")] if expected else [])
    assert a.line_counts() == {"door": {"person": expected} if expected else {}}


@pytest.mark.parametrize("steep, expected", [(False, [(5, "out")]), (True, [])])
def test_a_track_first_seen_cut_by_the_top_just_past_an_edge_line_came_in_through_it(steep, expected):
    """An object (20 x 40) comes in through the top-right corner, undetected until it is 17 px (12 px when
    steep) past a line 3 px from the right border, cut by the top. Once it is seen whole, its motion, run
    backwards from that first sighting, meets the line with 63 % of its height in the frame's rows: it came
    in through the line. Walking steeply down, its bottom would have been above the frame then: it came in
    through the top, and does not count."""
    config = parse_zones(EDGE)
    if steep:
        frames = [[(5, 0, blob(275 - f, -26 + 4 * f, 295 - f, 14 + 4 * f))] for f in range(12)]
    else:
        frames = [[(5, 0, blob(270 - 3 * f, -12 + f // 2, 290 - 3 * f, 28 + f // 2))] for f in range(36)]
    a = Analytics(config)
    crosses = [e for e in run(a, [[]] * 5 + frames) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == expected


def test_an_edge_entry_at_a_top_corner_waits_until_it_is_seen_whole():
    """An object (20 x 40) comes in through the top-right corner walking left 3 px and down 1 px per frame,
    first seen cut by both borders 5.5 px past a line 3 px from the right border, its bottom 4 px into the
    frame. Run backwards, its bottom is still in the frame when its foot meets the line, but only 5 % of its
    height: it came in through the top. How much of it is in the frame is known only once its height is, so
    the entry is judged when it is first seen whole: no crossing."""
    config = parse_zones(EDGE)
    frames = [[(5, 0, blob(283 - 3 * f, -36 + f, 303 - 3 * f, 4 + f))] for f in range(42)]
    assert anchor_points(tracked(frames[0]))[0].tolist() == [291.5, 3.5]
    crosses = [e for e in run(Analytics(config), [[]] * 5 + frames) if e.kind == "cross"]
    assert crosses == []


@pytest.mark.parametrize("steep, expected", [(False, [(6, "out")]), (True, [])])
def test_an_edge_entry_from_below_is_judged_by_the_motion_across_the_bottom_border(steep, expected):
    """An object (20 x 40) comes up through the bottom border, first seen 12 px past a line 3 px from the
    right border with half (steep: 60 %) of its height in the frame. Its anchors stay pinned to the bottom
    border until it is seen whole, so they show little but its sideways motion. Walking left 3 px per frame and up
    1, run backwards it meets the line with 40 % of its height in the frame: it came in through the line.
    Walking left 1 and up 4, its bottom was 48 px further down when its foot was at the line (all of it below
    the frame): it came in through the bottom, and does not count (the anchors' motion would put 36 % of it
    in the frame)."""
    config = parse_zones(EDGE)
    if steep:
        frames = [[(6, 0, blob(275 - f, H - 24 - 4 * f, 295 - f, H + 16 - 4 * f))] for f in range(12)]
    else:
        frames = [[(6, 0, blob(275 - 3 * f, H - 20 - f, 295 - 3 * f, H + 20 - f))] for f in range(30)]
    crosses = [e for e in run(Analytics(config), [[]] * 5 + frames) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == expected


@pytest.mark.parametrize("x0, expected", [(145, []), (130, [(2, "in")]), (120, [(2, "in")])])
def test_a_crossing_made_while_cut_by_the_top_counts_by_the_share_of_the_mask_in_the_frame(x0, expected):
    """A rectangle 20 x 40 comes down through the top border (3 px a frame) walking right (2 px), its foot in
    sight. From x0 = 145 its foot meets the line with its bottom 7.5 rows into the frame: 15-22 % of it on the
    frames around, no crossing (it was out of the frame, but for its foot). From 130 it crosses with 75 % in
    the frame, still cut by the top: it counts once it is seen whole. From 120 it is first seen whole on the
    line (within the band): it counts when it walks out of the band, once."""
    frames = [[(2, 0, blob(x0 + 2 * f - 10, 3 * f - 40, x0 + 2 * f + 10, 3 * f))] for f in range(1, 30)]
    a = Analytics(parse_zones(VERTICAL))
    crosses = crosses_to_the_end(a, frames, 3.0, 30)
    assert [(e.track_id, e.direction) for e in crosses] == expected


@pytest.mark.parametrize("x0, expected", [(89, []), (100, [(3, "in")])])
def test_a_crossing_made_while_leaving_through_the_top_counts_by_the_share_of_the_mask_in_the_frame(x0, expected):
    """A rectangle 20 x 40, first seen whole, walks right (2 px a frame) and up (3 px) out through the top. From
    x0 = 89 its foot meets the line with its bottom 8.5 rows below the top: 18-25 % of it in the frame on the
    frames around, no crossing. From 100 it crosses with 62 % in the frame: it counts."""
    frames = [[(3, 0, blob(x0 + 2 * f - 10, 60 - 3 * f, x0 + 2 * f + 10, 100 - 3 * f))] for f in range(36)]
    a = Analytics(parse_zones(VERTICAL))
    crosses = crosses_to_the_end(a, frames + [[]] * 10, 5.0, 50)
    assert [(e.track_id, e.direction) for e in crosses] == expected


@pytest.mark.parametrize("x0, expected", [(204, []), (159, [(4, "out")])])
def test_an_object_leaving_through_the_bottom_crosses_where_its_hidden_foot_does(x0, expected):
    """A "heel" (its foot 8 px right of its centre, in its lowest rows) walks left 3 px and down 2 px a frame out
    through the bottom. Once the bottom border hides its heel, its lowest visible pixels are 8 px left of its
    foot. From x0 = 204 they pass the line with 25 % of it in the frame, its foot only with 10-20 %: no
    crossing. Its foot is estimated from its mask's top rows, placed as when it was last seen whole. From 159
    its foot crosses with 95 % in the frame: it counts."""
    frames = [[(4, 0, _shape("heel", x0 - 3 * f, 150 + 2 * f))] for f in range(26)]
    assert anchor_points(tracked(frames[0]))[0][0] == pytest.approx(x0 + 8.33, abs=0.01)
    a = Analytics(parse_zones({**VERTICAL, "retention_s": 0.5}))
    crosses = crosses_to_the_end(a, frames + [[]] * 10, 4.0, 40)
    assert [(e.track_id, e.direction) for e in crosses] == expected


def test_a_track_that_came_up_from_below_is_judged_by_its_masks_top_rows():
    """As in the test before, a person whose foot is 16 px right of its body's centre comes up through the bottom
    walking left; its first sighting shows only its body, and its box's centre is 7 px left of where its whole
    box's centre would be. Its foot then, estimated from its mask's top rows (the body's, as seen whole), is
    157, right of the line, and it met the line with 40 % of it in the frame: it crossed (out)."""
    shape = {"body": (-10, 0), "foot": (8, 14), "height": 40, "foot_h": 8}
    frames = [[(4, 0, _footed(146 - 3 * f, H + 30 - 2 * f, **shape))] for f in range(20)]
    a = Analytics(parse_zones({"lines": [{"name": "door", "points": [[150, H + 100], [150, 0]], "band": 4}]}))
    crosses = [e for e in run(a, frames) if e.kind == "cross"]
    assert [(e.track_id, e.direction) for e in crosses] == [(4, "out")]


def test_a_crossing_made_while_cut_by_the_top_is_judged_on_the_sightings_around_it():
    """A rectangle 20 x 40 comes down through the top border slowly (2 px a frame) walking right, its foot in
    sight; its foot crosses the line between two sightings with its bottom 8 and 10 rows into the frame (20 and
    25 % of it): no crossing, though it then speeds up (8 px a frame) and is seen whole soon after (a straight
    motion from its first sighting to then would have put 55 % of it in the frame at the line)."""
    bottoms = [2 * f for f in range(1, 6)] + [10 + 8 * k for k in range(1, 12)]
    frames = [[(2, 0, blob(141 + 2 * f - 10, b - 40, 141 + 2 * f + 10, b))] for f, b in enumerate(bottoms, 1)]
    a = Analytics(parse_zones(VERTICAL))
    assert crosses_to_the_end(a, frames, 3.0, 30) == []


def test_with_centre_anchors_a_crossing_made_while_cut_by_the_top_counts():
    """The rules for tracks cut by the top or bottom border are about feet: with ``anchor: centre`` the walk
    of the test before that left through the top with its foot's crossing out of the frame counts where its
    mask's centroid crosses."""
    frames = [[(3, 0, blob(89 + 2 * f - 10, 60 - 3 * f, 89 + 2 * f + 10, 100 - 3 * f))] for f in range(36)]
    a = Analytics(parse_zones({**VERTICAL, "anchor": "centre"}))
    crosses = crosses_to_the_end(a, frames + [[]] * 10, 5.0, 50)
    assert [(e.track_id, e.direction) for e in crosses] == [(3, "in")]


def test_top_rows_are_the_mean_column_of_the_masks_top_rows_and_its_top():
    """``geometry.top_rows``: the mean x (pixel centres) of the mask's pixels in its top ``rows`` rows, and the
    upper edge of its top row; a "heel" cut by the bottom border keeps them, while its lowest pixels move."""
    from isseg.track.geometry import top_rows

    whole, cut = _shape("heel", 100, 150), _shape("heel", 100, 170)  # 40 high: the second lost its lowest 10 rows
    box = np.array([90, 150, 110, 190], np.float32)
    assert top_rows(whole[None], 0, box, 10) == (100.0, 150.0)
    assert top_rows(cut[None], 0, box + [0, 20, 0, 10], 10) == (100.0, 170.0)
    assert top_rows(np.zeros((1, H, W), bool), 0, box, 10) is None
