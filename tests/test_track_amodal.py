"""isseg.track.amodal: the whole object's box while a part of it is hidden; isseg.track.matching.assign."""

from __future__ import annotations

import numpy as np
import pytest

from isseg.track import amodal


def visible(x1: float, x2: float, wall: tuple[float, float]) -> tuple[float, float] | None:
    """The part of [x1, x2] not behind ``wall`` (x0, x1), or None when none, or both sides, are seen."""
    if x2 <= wall[0] or x1 >= wall[1]:
        return x1, x2
    if x1 < wall[0] <= x2 <= wall[1]:
        return x1, wall[0]
    if wall[0] <= x1 <= wall[1] < x2:
        return wall[1], x2
    return None


@pytest.mark.parametrize("speed", [3.0, -3.0])
def test_an_object_going_behind_a_wall_keeps_moving_in_its_whole_box(speed):
    """Seen down to a 3-px sliver at the wall's edge, given the motion of its visible box's centre smoothed the way
    a Kalman filter lags (it slows as the box shrinks); 15 frames later it is looked for where it is."""
    wall, width = (200.0, 260.0), 40.0
    start = 100.0 if speed > 0 else 360.0
    whole = amodal.WholeBox(np.array([start, 50, start + width, 90]))
    last, centre, motion = 0, start + width / 2, 0.0
    for f in range(1, 200):
        x1 = start + speed * f
        part = visible(x1, x1 + width, wall)
        if part is None or part[1] - part[0] < 3:
            break
        motion = 0.7 * motion + 0.3 * ((part[0] + part[1]) / 2 - centre)
        centre = (part[0] + part[1]) / 2
        amodal.update([whole], np.array([f - last], float), np.array([[part[0], 50, part[1], 90]]),
                      np.array([[motion, 0.0]]))
        last = f
        if whole.cut:  # the whole box is where the object is
            assert whole.box[[0, 2]].tolist() == pytest.approx([x1, x1 + width], abs=1.0)
    assert whole.cut and last > 30
    later = last + 15  # behind the wall all along: looked for where it is, not where it was last seen
    found = amodal.centres([whole], np.array([later - last], float), np.array([[0.0, 0.0]]))[0]
    # within 6 px: the first frame it is partly hidden hides too little to tell (5 %) and slows its velocity by 10 %;
    # the visible box's last centre and motion would put it 40 px off
    assert found[0] == pytest.approx(start + speed * later + width / 2, abs=6.0)
    assert found[1] == pytest.approx(70.0)


def test_an_object_that_gets_smaller_slowly_is_never_cut_and_a_whole_sighting_gives_the_visible_motion():
    whole = amodal.WholeBox(np.array([100.0, 100, 160, 200]))
    for f in range(1, 60):
        s = 0.99**f
        amodal.update([whole], np.array([1.0]), np.array([[100, 100, 100 + 60 * s, 100 + 100 * s]]),
                      np.array([[0.3, 0.5]]))
        assert not whole.cut
    assert whole.size == pytest.approx([60 * 0.99**59, 100 * 0.99**59])
    centre = amodal.centres([whole], np.array([4.0]), np.array([[7.0, 8.0]]))[0]
    assert centre.tolist() == [7.0, 8.0]  # last seen whole: the visible box's own prediction


def test_a_cut_at_the_bottom_border_keeps_the_top_edge_and_the_height():
    whole = amodal.WholeBox(np.array([50.0, 180, 80, 240]))  # 60 px high, moving down 4 px a frame
    motion, centre = 4.0, 210.0
    for f in range(1, 17):
        top = 180 + 4 * f
        bottom = min(top + 60, 270)
        motion, centre = 0.7 * motion + 0.3 * ((top + bottom) / 2 - centre), (top + bottom) / 2
        amodal.update([whole], np.array([1.0]), np.array([[50, top, 80, bottom]]), np.array([[0.0, motion]]))
    assert whole.cut and whole.box.tolist() == pytest.approx([50, 244, 80, 304], abs=1.5)  # its height once 2 % short
    assert whole.velocity.tolist() == pytest.approx([0.0, 4.0], abs=0.5)


def test_a_track_first_seen_going_behind_something_is_looked_for_as_its_visible_box():
    """Its motion was never seen whole: the velocity of its whole box would be that of a shrinking box's."""
    whole = amodal.WholeBox(np.array([100.0, 50, 140, 90]))
    for f in range(1, 8):
        amodal.update([whole], np.array([1.0]), np.array([[100 + 3 * f, 50, 140, 90]]), np.array([[1.5, 0.0]]))
    assert not whole.cut
    assert amodal.centres([whole], np.array([5.0]), np.array([[9.0, 9.0]]))[0].tolist() == [9.0, 9.0]


def test_assign_keeps_one_strong_pair_rather_than_two_weak_ones():
    """Seed 468 of the benchmark with exact detections, frame 104: track A (seen whole) against its object (0.95)
    and a sliver of the object behind it (0.25); track B (behind) against them 0.36 and 0.18 (below 0.2). Matching
    every track that can be matched swapped the two IDs (0.25 + 0.36 > 0.95 + nothing)."""
    from isseg.track.matching import assign

    rows, cols = assign(np.array([[0.95, 0.25], [0.36, 0.18]]), 0.2)
    assert rows.tolist() == [0] and cols.tolist() == [0]
    rows, cols = assign(np.array([[0.5, 0.4], [0.45, 0.1], [0.0, 0.38]]), 0.2)  # the largest total (0.88)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (2, 1)]
    rows, cols = assign(np.array([[0.1, 0.05]]), 0.2)
    assert rows.size == 0 and cols.size == 0
