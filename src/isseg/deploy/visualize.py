"""Drawing of instance segmentation results: semi-transparent colored masks with contours, boxes, and
"class score" captions (the look of Open Model Zoo's instance segmentation demo)."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from isseg.model.detections import Detections


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable BGR color per class (golden-ratio hue walk, bright and saturated)."""
    hue = (index * 0.618033988749895 + 0.1) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


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
    order = np.argsort(det.scores, kind="stable")
    if masks and det.masks is not None:
        for i in order:
            mask = det.masks[i]
            color = np.array(class_color(int(det.labels[i])), dtype=np.float32)
            ys, xs = np.nonzero(mask)
            if ys.size == 0:
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            region = out[y0:y1, x0:x1]
            m = mask[y0:y1, x0:x1]
            region[m] = (region[m] * (1 - alpha) + color * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(region, contours, -1, tuple(int(c) for c in color), lw)
    for i in order:
        color = class_color(int(det.labels[i]))
        x0, y0, x1, y1 = (int(round(float(v))) for v in det.boxes[i])
        if boxes:
            cv2.rectangle(out, (x0, y0), (x1, y1), color, lw)
        if captions:
            text = f"{names[i]} {det.scores[i]:.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(y0 + th + base + 2, h - 1)
            cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 2, ty + 1), color, -1)
            cv2.putText(out, text, (x0 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
    return out

