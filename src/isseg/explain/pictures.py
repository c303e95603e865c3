"""Explanations as pictures: each map as a heat map (OpenCV's JET: blue low, red high) blended over the image, with
the detections it is about drawn on top."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isseg.atomic import atomic_write
from isseg.deploy.visualize import draw_detections
from isseg.explain.api import Explanation
from isseg.sources.decode import read_image


def heatmap_overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """BGR ``image`` [H, W, 3] with ``saliency`` [H, W] in 0..1 blended over it as a JET heat map."""
    if saliency.shape != image.shape[:2]:
        raise ValueError(f"saliency map {saliency.shape} does not match the image {image.shape[:2]}")
    heat = cv2.applyColorMap(np.clip(saliency * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "x"


def _write(path: Path, picture: np.ndarray) -> str:
    ok, data = cv2.imencode(path.suffix, picture)
    if not ok:
        raise ValueError(f"{path}: cannot encode the picture")
    atomic_write(path, data.tobytes())
    return path.name


def save_explanation(expl: Explanation, image: np.ndarray | str | Path, folder: str | Path, stem: str = "image",
                     alpha: float = 0.5, suffix: str = ".jpg") -> dict[str, Any]:
    """Write the pictures of ``expl`` into ``folder``: ``<stem>.detections``, ``<stem>.class-<name>`` per class map
    (with all that class's detections), ``<stem>.det<i>-<name>`` per detection map; returns the index entry of the
    image (files, detections, seconds)."""
    picture = read_image(image)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    det = expl.detections
    files = {"detections": _write(out / f"{stem}.detections{suffix}",
                                  draw_detections(picture, det, masks=True))}
    names = det.names
    for name, saliency in expl.class_maps.items():
        own = det.filter(np.array([n == name for n in names], bool))
        drawn = draw_detections(heatmap_overlay(picture, saliency, alpha), own, masks=False)
        files[f"class {name}"] = _write(out / f"{stem}.class-{_slug(name)}{suffix}", drawn)
    rows = []
    for i in range(len(det)):
        row: dict[str, Any] = {"index": i, "class": names[i], "score": round(float(det.scores[i]), 4),
                               "box": [round(float(v), 1) for v in det.boxes[i]]}
        if expl.detection_maps is not None and i < len(expl.detection_maps):
            one = det.filter(np.array([i]))
            drawn = draw_detections(heatmap_overlay(picture, expl.detection_maps[i], alpha), one, masks=False)
            row["file"] = _write(out / f"{stem}.det{i}-{_slug(names[i])}{suffix}", drawn)
        rows.append(row)
    return {"files": files, "detections": rows, "method": expl.method,
            "seconds": {k: round(v, 4) for k, v in expl.seconds.items()}}


def write_index(folder: str | Path, entries: dict[str, Any], features: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """``explain.json`` (each image's entry) and ``features.npz`` (``names`` [N] and ``vectors`` float32
    [N, 5 * C], the images' feature vectors) in ``folder``."""
    out = Path(folder)
    index = atomic_write(out / "explain.json", json.dumps(entries, indent=2))
    names = list(features)
    vectors = np.stack([features[n] for n in names]) if names else np.zeros((0, 0), np.float32)

    def save(f: Any) -> None:
        np.savez(f, names=np.array(names), vectors=vectors)

    return index, atomic_write(out / "features.npz", save)
