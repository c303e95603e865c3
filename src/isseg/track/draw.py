"""Drawings of tracks and analytics: a colour per track ID (the same in every frame), lines with their
counts, zones with their occupancy.

A track's colour depends on its ID only, never on its place in the frame's detections or its class,
so it cannot flicker from frame to frame.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from isseg.model.detections import Detections
from isseg.track.analytics import Analytics
from isseg.track.matching import crop_mask


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour for a track ID: hues a golden-ratio step apart, so neighbouring IDs differ."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    value = 0.95 if track_id % 2 else 0.8
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, value)
    return int(b * 255), int(g * 255), int(r * 255)


def _label(image: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    y = max(y, th + base + 1)
    cv2.rectangle(image, (x, y - th - base - 1), (x + tw + 2, y + 1), colour, -1)
    cv2.putText(image, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def draw_tracks(image: np.ndarray, tracked: Detections, alpha: float = 0.45, boxes: bool = True,
                trails: dict[int, list[tuple[float, float]]] | None = None) -> np.ndarray:
    """A copy of BGR ``image`` with each tracked detection's mask, box and "#id class" caption in its track's
    colour (detections without ``track_ids`` are drawn grey); ``trails`` maps an ID to points to join."""
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    lw = max(1, round(min(h, w) / 400))
    scale = max(0.4, min(h, w) / 1200)
    ids = tracked.track_ids if tracked.track_ids is not None else np.zeros(len(tracked), np.int64)
    names = tracked.names
    for i in range(len(tracked)):
        colour = track_colour(int(ids[i])) if ids[i] > 0 else (160, 160, 160)
        if tracked.masks is not None:
            c = crop_mask(tracked.masks[i], tracked.boxes[i])
            if c.area:
                region = out[c.y0:c.y0 + c.mask.shape[0], c.x0:c.x0 + c.mask.shape[1]]
                region[c.mask] = (region[c.mask] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
                contours, _ = cv2.findContours(c.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(region, contours, -1, colour, lw)
        x0, y0, x1, y1 = (int(round(float(v))) for v in tracked.boxes[i])
        if boxes:
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, lw)
        _label(out, f"#{int(ids[i])} {names[i]}" if ids[i] > 0 else names[i], (x0, y0 - 2), colour, scale)
    for tid, points in (trails or {}).items():
        if len(points) > 1:
            pts = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [pts], False, track_colour(tid), lw, cv2.LINE_AA)
    return out


def draw_analytics(image: np.ndarray, analytics: Analytics) -> np.ndarray:
    """Draw, in place, each line (an arrow shows "in") with its in / out counts and each zone with its
    occupancy and entries; returns ``image``. Nothing is drawn before the first ``update`` (no frame size)."""
    h, w = image.shape[:2]
    lw = max(1, round(min(h, w) / 400))
    scale = max(0.45, min(h, w) / 1000)
    for m in analytics.zones:
        poly = np.round(np.array(m.zone.polygon)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(image, [poly], True, (0, 200, 255), lw, cv2.LINE_AA)
        occ = sum(m.occupancy().values())
        x, y = poly[:, 0, 0].min(), poly[:, 0, 1].min()
        _label(image, f"{m.zone.name}: {occ} in, {sum(m.entries.values())} entered", (int(x), int(y) - 2),
               (0, 200, 255), scale)
    for c in analytics.lines:
        a = np.array(c.line.a)
        b = np.array(c.line.b)
        cv2.line(image, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), (255, 255, 255), lw + 1,
                 cv2.LINE_AA)
        mid = (a + b) / 2
        u = (b - a) / np.linalg.norm(b - a)
        normal = np.array([-u[1], u[0]])  # towards the "in" side (right of a -> b on screen)
        tip = mid + normal * 20 * scale / 0.45
        cv2.arrowedLine(image, tuple(np.round(mid).astype(int)), tuple(np.round(tip).astype(int)), (255, 255, 255),
                        lw, cv2.LINE_AA, tipLength=0.4)
        n_in = sum(v["in"] for v in c.counts.values())
        n_out = sum(v["out"] for v in c.counts.values())
        at = np.clip(np.round(mid + normal * 8), [0, 12], [w - 150, h - 4]).astype(int)
        _label(image, f"{c.line.name}: in {n_in} / out {n_out}", (int(at[0]), int(at[1])), (255, 255, 255), scale)
    return image
