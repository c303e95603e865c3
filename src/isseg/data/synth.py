"""A procedural COCO-format instance segmentation dataset: shapes on textured backgrounds.

It exists so that training, evaluation and export can be exercised end to end, and a learning curve can
be seen, in minutes on a CPU and without downloading anything. It is hard enough not to be solved by
color alone: backgrounds are noisy and textured, objects vary in size, color, rotation and aspect, and
later shapes occlude earlier ones. Masks are the *visible* part of each shape and are stored as RLE,
because occlusion can split a shape or cut holes in it, which polygons from contours would not keep
exactly. The output is a pure function of ``(seed, image index, image_size)``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from isseg.data.masks import mask_to_rle, rle_to_bbox

CLASS_NAMES: tuple[str, ...] = ("circle", "rectangle", "triangle", "ellipse", "star")


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``float32 [S, S, 3]``: a smooth color field, one of a few textures, and pixel noise."""
    import cv2

    base = rng.uniform(40, 215, size=3)
    grid = rng.normal(0, 35, size=(int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.float32)
    field = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    image = base[None, None, :] + field
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = int(rng.integers(0, 4))
    if kind == 1:  # stripes at a random angle
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 30)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period))
        image += (wave * rng.uniform(8, 25))[:, :, None] * rng.uniform(0.5, 1.0, size=3)
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(8, 40))
        checker = ((xx // cell + yy // cell) % 2) * 2 - 1
        image += (checker * rng.uniform(6, 20))[:, :, None]
    elif kind == 3:  # blotchy high-frequency texture
        fine = rng.normal(0, 1, size=(size // 4, size // 4, 3)).astype(np.float32)
        image += cv2.resize(fine, (size, size), interpolation=cv2.INTER_LINEAR) * rng.uniform(8, 22)
    image += rng.normal(0, rng.uniform(2, 8), size=image.shape)
    return image.astype(np.float32)


def shape_mask(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """``uint8 [S, S]`` 0/1 mask of one whole shape of class ``cls``; centers may lie near the border so
    that some shapes are cut by it."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    r = rng.uniform(0.05, 0.28) * size
    cx, cy = rng.uniform(-0.05, 1.05, size=2) * size
    angle = rng.uniform(0, 360)
    name = CLASS_NAMES[cls]
    if name == "circle":
        cv2.circle(mask, (round(cx), round(cy)), max(2, round(r)), 1, -1)
    elif name == "ellipse":
        axes = (max(2, round(r)), max(2, round(r * rng.uniform(0.35, 0.65))))
        cv2.ellipse(mask, (round(cx), round(cy)), axes, angle, 0, 360, 1, -1)
    else:
        if name == "rectangle":
            w, h = 2 * r, 2 * r * rng.uniform(0.4, 1.0)
            pts = cv2.boxPoints(((cx, cy), (w, h), angle))
        elif name == "triangle":
            a0 = math.radians(angle)
            angles = a0 + np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.3, 0.3, size=3)
            pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
        else:  # star: 5 outer and 5 inner vertices
            a = math.radians(angle) + np.arange(10) * math.pi / 5
            radius = np.where(np.arange(10) % 2 == 0, r, r * rng.uniform(0.38, 0.5))
            pts = np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Fill ``mask`` with a color that stands out from the background there, shaded and noisy."""
    ys, xs = np.nonzero(mask)
    under = image[ys, xs].mean(axis=0)
    for _ in range(20):
        color = rng.uniform(0, 255, size=3)
        if np.abs(color - under).sum() > 120:
            break
    gx, gy = rng.normal(0, 0.25, size=2)
    shade = (xs - xs.mean()) * gx + (ys - ys.mean()) * gy
    noise = rng.normal(0, rng.uniform(1, 6), size=(len(ys), 3))
    image[ys, xs] = color[None, :] + shade[:, None] + noise


def render_image(
    rng: np.random.Generator, size: int, max_objects: int = 8, min_area: int | None = None
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image and its objects: ``uint8 [S, S, 3]`` BGR and ``[(class index, visible mask uint8 [S, S])]``.

    Shapes are painted in order, each occluding the ones before; an object is dropped when less than
    ``min_area`` pixels (default ``(0.03 * S)^2``, at least 16) or less than 10 % of it stay visible.
    """
    min_area = max(16, round((0.03 * size) ** 2)) if min_area is None else min_area
    image = textured_background(rng, size)
    objects: list[tuple[int, np.ndarray, int]] = []  # class, visible mask, full area
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        mask = shape_mask(rng, cls, size)
        full = int(mask.sum())
        if full == 0:
            continue
        for _, visible, _ in objects:
            visible &= 1 - mask
        _paint(rng, image, mask)
        objects.append((cls, mask, full))
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    kept = []
    for cls, visible, full in objects:
        area = int(visible.sum())
        if area >= min_area and area >= 0.1 * full:
            kept.append((cls, visible))
    return image, kept


def make_synthetic_dataset(
    output: str | os.PathLike,
    num_images: int,
    seed: int = 0,
    image_size: int = 320,
    val_fraction: float = 0.2,
    max_objects: int = 8,
    image_format: str = "jpg",
) -> dict[str, Path]:
    """Write ``num_images`` images and COCO files into ``output``; return their paths.

    Layout: ``train.json`` + ``train/``, ``val.json`` + ``val/``; the last ``round(num_images *
    val_fraction)`` images (at least one when ``val_fraction > 0`` and there are 2+ images) form the
    held-out split. Image ``i`` depends only on ``(seed, i, image_size)``, so a larger set extends a
    smaller one. Categories: :data:`CLASS_NAMES` with ids 1..5.
    """
    import cv2

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    n_val = round(num_images * val_fraction)
    if val_fraction > 0 and num_images >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, num_images - 1)
    out = Path(output)
    paths = {
        "train_json": out / "train.json",
        "train_images": out / "train",
        "val_json": out / "val.json",
        "val_images": out / "val",
    }
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASS_NAMES)]
    splits: dict[str, dict[str, Any]] = {}
    for split in ("train", "val"):
        paths[f"{split}_images"].mkdir(parents=True, exist_ok=True)
        splits[split] = {
            "info": {
                "description": f"isseg synthetic shapes, seed {seed}, size {image_size}",
                "version": "1",
            },
            "licenses": [],
            "images": [],
            "annotations": [],
            "categories": categories,
        }
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else []
    ann_id = 1
    for i in range(num_images):
        split = "train" if i < num_images - n_val else "val"
        rng = np.random.default_rng([seed, i, image_size])
        image, objects = render_image(rng, image_size, max_objects)
        file_name = f"{i:06d}.{image_format}"
        if not cv2.imwrite(str(paths[f"{split}_images"] / file_name), image, params):
            raise OSError(f"could not write {paths[f'{split}_images'] / file_name}")
        data = splits[split]
        data["images"].append(
            {"id": i + 1, "file_name": file_name, "width": image_size, "height": image_size}
        )
        for cls, mask in objects:
            rle = mask_to_rle(mask)
            data["annotations"].append({
                "id": ann_id, "image_id": i + 1, "category_id": cls + 1, "segmentation": rle,
                "area": int(mask.sum()), "bbox": rle_to_bbox(rle), "iscrowd": 0,
            })  # fmt: skip
            ann_id += 1
    for split, data in splits.items():
        paths[f"{split}_json"].write_text(json.dumps(data))
    return paths
