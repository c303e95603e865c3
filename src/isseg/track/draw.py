"""Drawings of analytics: lines with their counts, zones with their occupancy. (Tracked detections are drawn by
:func:`isseg.deploy.visualize.draw_detections`, in a colour per track ID.)"""

from __future__ import annotations

import cv2
import numpy as np

from isseg.track.analytics import Analytics


def _label(image: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    y = max(y, th + base + 1)
    cv2.rectangle(image, (x, y - th - base - 1), (x + tw + 2, y + 1), colour, -1)
    cv2.putText(image, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


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
