"""isseg.track drawing: a track's colour depends on its ID only (no flicker), counts are drawn."""

from __future__ import annotations

import numpy as np

from isseg.deploy.visualize import draw_detections, track_color
from isseg.model.detections import Detections
from isseg.track import Analytics, draw_analytics, parse_zones

H, W = 120, 200


def tracked(order: list[int]) -> Detections:
    masks = np.zeros((3, H, W), bool)
    masks[0, 10:40, 10:40] = masks[1, 50:90, 60:100] = masks[2, 20:60, 130:170] = True
    boxes = np.array([[10, 10, 40, 40], [60, 50, 100, 90], [130, 20, 170, 60]], np.float32)
    det = Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 1]), masks, ("person", "car"),
                     (H, W), np.array([3, 4, 5], np.int64))
    return det.filter(np.array(order))


def test_colours_follow_the_id_not_the_order_or_class():
    assert track_color(7) == track_color(7)
    colours = {track_color(i) for i in range(1, 41)}
    assert len(colours) == 40  # neighbouring IDs never share a colour
    image = np.full((H, W, 3), 128, np.uint8)
    a = draw_detections(image, tracked([0, 1, 2]), alpha=0.45, boxes=False, captions=False)
    b = draw_detections(image, tracked([2, 0, 1]), alpha=0.45, boxes=False, captions=False)
    inside = np.zeros((H, W), bool)
    inside[15:35, 15:35] = inside[55:85, 65:95] = inside[25:55, 135:165] = True
    assert np.array_equal(a[inside], b[inside])  # same pixels whatever the detections' order
    for tid, (y, x) in zip((3, 4, 5), ((25, 25), (70, 80), (40, 150))):
        expected = (128 * 0.55 + np.array(track_color(tid)) * 0.45).astype(np.uint8)
        assert np.abs(a[y, x].astype(int) - expected).max() <= 1
    assert np.array_equal(image, np.full((H, W, 3), 128, np.uint8))  # the input is not drawn on


def test_counts_are_drawn():
    a = Analytics(parse_zones({"lines": [{"name": "door", "points": [[100, 120], [100, 0]]}],
                               "zones": [{"name": "bay", "polygon": [[5, 5], [60, 5], [60, 60], [5, 60]]}]}))
    a.update(tracked([0, 1, 2]), 0.0, 0)
    image = np.zeros((H, W, 3), np.uint8)
    out = draw_analytics(image, a)
    assert out is image and image.any()
    assert (image[:, 100] > 0).all(axis=-1).sum() > H // 2  # the line itself
