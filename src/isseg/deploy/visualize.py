"""Drawing of instance segmentation results: semi-transparent colored masks with contours, boxes, and
"class score" captions (the look of Open Model Zoo's instance segmentation demo).

Tracked detections (``track_ids`` set) are coloured by their track ID and captioned "#id class score": a track's
colour depends on its ID only, never on its place among the frame's detections or its class, so it cannot
flicker from frame to frame. Other detections are coloured by class."""

from __future__ import annotations

import colorsys
from typing import Any

import cv2
import numpy as np

from isseg.model.detections import Detections


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable BGR color per class (golden-ratio hue walk, bright and saturated)."""
    hue = (index * 0.618033988749895 + 0.1) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour for a track ID: hues a golden-ratio step apart, so neighbouring IDs differ."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    value = 0.95 if track_id % 2 else 0.8
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, value)
    return int(b * 255), int(g * 255), int(r * 255)


def _mask_region(masks: Any, i: int, box: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """(x0, y0, mask ``i``'s pixels around its box) or None when empty: a pasted mask lies within its box (2 px
    of margin for rounding), so a 4K frame's full mask is never built nor scanned. ``masks``: bool [N, H, W]
    (an array or ``InstanceMasks``)."""
    h, w = masks.shape[1:]
    x0, y0 = max(int(box[0]) - 2, 0), max(int(box[1]) - 2, 0)
    x1, y1 = min(int(np.ceil(box[2])) + 2, w), min(int(np.ceil(box[3])) + 2, h)
    m = masks[i, y0:y1, x0:x1]
    return (x0, y0, m) if m.size and m.any() else None


def draw_detections(image: np.ndarray, det: Detections, alpha: float = 0.5, masks: bool = True,
                    boxes: bool = True, captions: bool = True, line_width: int | None = None) -> np.ndarray:
    """A copy of BGR ``image`` with ``det`` drawn on it (lowest score first, so the best ends on top)."""
    out = np.ascontiguousarray(image).copy()
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    h, w = out.shape[:2]
    lw = line_width or max(1, round(min(h, w) / 400))
    font_scale = max(0.4, min(h, w) / 1200)
    names = det.names
    ids = det.track_ids
    colors = [track_color(int(ids[i])) if ids is not None else class_color(int(det.labels[i]))
              for i in range(len(det))]
    order = np.argsort(det.scores, kind="stable")
    if masks and det.masks is not None:
        for i in order:
            found = _mask_region(det.masks, i, det.boxes[i])
            if found is None:
                continue
            x0, y0, m = found
            region = out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
            region[m] = (region[m] * (1 - alpha) + np.array(colors[i], np.float32) * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(region, contours, -1, colors[i], lw)
    for i in order:
        color = colors[i]
        x0, y0, x1, y1 = (int(round(float(v))) for v in det.boxes[i])
        if boxes:
            cv2.rectangle(out, (x0, y0), (x1, y1), color, lw)
        if captions:
            text = f"{names[i]} {det.scores[i]:.2f}"
            text = text if ids is None else f"#{int(ids[i])} {text}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(y0 + th + base + 2, h - 1)
            cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 2, ty + 1), color, -1)
            cv2.putText(out, text, (x0 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
    return out

