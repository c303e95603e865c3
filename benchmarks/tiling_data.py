"""Small objects in large frames: the data set of the tiling benchmark (``benchmarks/tiling_quality.py``).

    .venv/bin/python benchmarks/tiling_data.py --output runs/tiling-data --train 3000 --test 8

Writes COCO files of two splits drawn from one generator (the shape classes of ``isseg.data.synth``,
painted on textured backgrounds, later shapes occluding earlier ones):

- ``train.json`` + ``train/``: ``--train`` images of ``--train-size`` px (default 512) with 2 to 10
  objects each, for training a small model at that canvas;
- ``test.json`` + ``test/``: ``--test`` frames of 3840x2160 (4K) with 40 to 80 objects each.

Object sizes (the diameter of the drawn shape) are the point of the set: 80 % log-uniform in 10..60 px (the
objects a 4K camera sees far away; about half of them are COCO "small", area < 32^2), 20 % log-uniform in
60..300 px (near objects, which tile borders cut). Backgrounds have their texture at the pixel scale of the
objects whatever the image size (stripes, checkerboards, blotches, noise), so a 512 px training image and a
4K frame look alike up close; objects may be cut by the image border. An object is annotated when at least
30 px and 25 % of it stay visible (its visible part is the mask, RLE). Deterministic for ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isseg.data.masks import mask_to_rle, rle_area, rle_to_bbox
from isseg.data.synth import CLASS_NAMES

SMALL_RANGE = (10.0, 60.0)  # diameters in px, log-uniform
LARGE_RANGE = (60.0, 300.0)
LARGE_SHARE = 0.2
MIN_VISIBLE_PX, MIN_VISIBLE_SHARE = 30, 0.25


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``float32 [H, W, 3]``: a smooth color field, one texture at a fixed pixel scale, pixel noise."""
    base = rng.uniform(40, 215, size=3).astype(np.float32)
    cells = (int(rng.integers(2, 7)), int(rng.integers(2, 7)))
    grid = rng.normal(0, 35, size=(*cells, 3)).astype(np.float32)
    image = base + cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    kind = int(rng.integers(0, 4))
    if kind in (1, 2):
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        if kind == 1:  # stripes at a random angle, period 6..30 px
            angle, period = rng.uniform(0, math.pi), rng.uniform(6, 30)
            wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * np.float32(2 * math.pi / period))
            image += (wave * rng.uniform(8, 25))[:, :, None] * rng.uniform(0.5, 1.0, size=3).astype(np.float32)
        else:  # checkerboard, cells of 8..40 px
            cell = int(rng.integers(8, 40))
            checker = ((xx // cell + yy // cell) % 2) * 2 - 1
            image += (checker * np.float32(rng.uniform(6, 20)))[:, :, None]
        del yy, xx
    elif kind == 3:  # blotches of about 4 px
        fine = rng.normal(0, 1, size=(max(1, height // 4), max(1, width // 4), 3)).astype(np.float32)
        image += cv2.resize(fine, (width, height), interpolation=cv2.INTER_LINEAR) * np.float32(rng.uniform(8, 22))
    image += rng.normal(0, rng.uniform(2, 8), size=image.shape).astype(np.float32)
    return image


def draw_diameter(rng: np.random.Generator) -> float:
    lo, hi = LARGE_RANGE if rng.uniform() < LARGE_SHARE else SMALL_RANGE
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def shape_patch(rng: np.random.Generator, cls: int, diameter: float) -> np.ndarray:
    """``uint8 [S, S]`` 0/1 mask of one shape of class ``cls`` and about ``diameter`` px, centred, rotated."""
    size = int(math.ceil(diameter)) + 4
    mask = np.zeros((size, size), np.uint8)
    c, r = (size - 1) / 2.0, diameter / 2.0
    angle = rng.uniform(0, 360)
    name = CLASS_NAMES[cls]
    if name == "circle":
        cv2.circle(mask, (round(c), round(c)), max(2, round(r)), 1, -1)
    elif name == "ellipse":
        axes = (max(2, round(r)), max(1, round(r * rng.uniform(0.35, 0.65))))
        cv2.ellipse(mask, (round(c), round(c)), axes, angle, 0, 360, 1, -1)
    else:
        if name == "rectangle":
            pts = cv2.boxPoints(((c, c), (2 * r * 0.8, 2 * r * 0.8 * rng.uniform(0.4, 1.0)), angle))
        elif name == "triangle":
            a = math.radians(angle) + np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
            pts = np.stack([c + r * np.cos(a), c + r * np.sin(a)], axis=1)
        else:  # star
            a = math.radians(angle) + np.arange(10) * math.pi / 5
            radius = np.where(np.arange(10) % 2 == 0, r, r * rng.uniform(0.38, 0.5))
            pts = np.stack([c + radius * np.cos(a), c + radius * np.sin(a)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


class _Object:
    """One placed object: class, its window (y0, x0) in the image and its visible part in that window."""

    def __init__(self, cls: int, y0: int, x0: int, visible: np.ndarray) -> None:
        self.cls, self.y0, self.x0, self.visible = cls, y0, x0, visible
        self.full = int(visible.sum())

    def window(self) -> tuple[slice, slice]:
        h, w = self.visible.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


def _paint(rng: np.random.Generator, region: np.ndarray, mask: np.ndarray) -> None:
    """Fill ``mask`` of ``region`` (float32 [h, w, 3]) with a color that stands out there, shaded, noisy."""
    ys, xs = np.nonzero(mask)
    under = region[ys, xs].mean(axis=0)
    for _ in range(20):
        color = rng.uniform(0, 255, size=3)
        if np.abs(color - under).sum() > 120:
            break
    gx, gy = rng.normal(0, 0.25, size=2) * (30.0 / max(8.0, float(mask.shape[0])))
    shade = (xs - xs.mean()) * gx + (ys - ys.mean()) * gy
    region[ys, xs] = color[None, :] + shade[:, None] + rng.normal(0, rng.uniform(1, 6), size=(len(ys), 3))


def render(rng: np.random.Generator, height: int, width: int, num_objects: int
           ) -> tuple[np.ndarray, list[_Object]]:
    """One BGR uint8 image and its annotated objects (visible part >= 30 px and 25 % of the shape)."""
    image = background(rng, height, width)
    objects: list[_Object] = []
    for _ in range(num_objects):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        d = draw_diameter(rng)
        patch = shape_patch(rng, cls, d)
        s = patch.shape[0]
        cy, cx = rng.uniform(-0.3 * d, height + 0.3 * d), rng.uniform(-0.3 * d, width + 0.3 * d)
        y0, x0 = int(round(cy - s / 2)), int(round(cx - s / 2))
        ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + s, height), min(x0 + s, width)
        if yb <= ya or xb <= xa:
            continue
        mask = patch[ya - y0 : yb - y0, xa - x0 : xb - x0]
        if not mask.any():
            continue
        new = _Object(cls, ya, xa, mask.copy())
        new.full = int(patch.sum())
        for old in objects:  # the new shape occludes the earlier ones
            oy = slice(max(old.y0, ya), min(old.y0 + old.visible.shape[0], yb))
            ox = slice(max(old.x0, xa), min(old.x0 + old.visible.shape[1], xb))
            if oy.stop > oy.start and ox.stop > ox.start:
                old.visible[oy.start - old.y0 : oy.stop - old.y0, ox.start - old.x0 : ox.stop - old.x0] &= \
                    1 - mask[oy.start - ya : oy.stop - ya, ox.start - xa : ox.stop - xa]
        _paint(rng, image[ya:yb, xa:xb], mask)
        objects.append(new)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    kept = [o for o in objects if o.visible.sum() >= max(MIN_VISIBLE_PX, MIN_VISIBLE_SHARE * o.full)]
    return image, kept


def _render_one(task: tuple[Path, int, tuple[int, int], tuple[int, int], int, int]) -> list[tuple[int, dict]]:
    """Render and write image ``i`` of a split; -> its annotations as (category id, RLE) pairs."""
    folder, i, (h, w), objects, seed, split = task
    rng = np.random.default_rng([seed, split, i])
    image, kept = render(rng, h, w, int(rng.integers(objects[0], objects[1] + 1)))
    name = folder / f"{i:06d}.jpg"
    if not cv2.imwrite(str(name), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write {name}")
    full = np.zeros((h, w), np.uint8)
    out = []
    for obj in kept:
        window = obj.window()
        full[window] = obj.visible
        out.append((obj.cls + 1, mask_to_rle(full)))
        full[window] = 0
    return out


def write_split(folder: Path, json_path: Path, count: int, size: tuple[int, int], objects: tuple[int, int],
                seed: int, split: int, jobs: int = 1) -> dict[str, Any]:
    """``count`` images of ``size`` (H, W) with ``objects`` (min, max) shapes each -> a COCO file
    (``jobs`` processes render them; the result does not depend on it)."""
    import multiprocessing

    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    data: dict[str, Any] = {
        "info": {"description": f"isseg tiling benchmark, seed {seed}, split {split}, {h}x{w}"},
        "images": [], "annotations": [], "licenses": [],
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASS_NAMES)],
    }  # fmt: skip
    tasks = [(folder, i, (h, w), objects, seed, split) for i in range(count)]
    with multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else _Serial() as pool:
        for i, annotations in enumerate(pool.imap(_render_one, tasks)):
            data["images"].append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h})
            for category, rle in annotations:
                data["annotations"].append({
                    "id": len(data["annotations"]) + 1, "image_id": i + 1, "category_id": category,
                    "segmentation": rle, "area": int(rle_area(rle)), "bbox": rle_to_bbox(rle), "iscrowd": 0,
                })  # fmt: skip
    json_path.write_text(json.dumps(data))
    return data


class _Serial:
    """``Pool`` stand-in that maps in this process."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn: Any, items: list) -> Any:
        return map(fn, items)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="runs/tiling-data")
    p.add_argument("--train", type=int, default=3000, help="training images (0: none)")
    p.add_argument("--train-size", type=int, default=512)
    p.add_argument("--test", type=int, default=8, help="4K test frames (0: none)")
    p.add_argument("--test-size", type=int, nargs=2, default=(2160, 3840), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="processes rendering images (default 1)")
    args = p.parse_args(argv)
    out = Path(args.output)
    for name, count, size, objects, split in (
            ("train", args.train, (args.train_size, args.train_size), (2, 10), 0),
            ("test", args.test, tuple(args.test_size), (40, 80), 1)):
        if count:
            data = write_split(out / name, out / f"{name}.json", count, size, objects, args.seed, split,
                               args.jobs)
            areas = np.array([a["area"] for a in data["annotations"]])
            print(f"{name}: {count} images of {size[0]}x{size[1]}, {len(areas)} objects "
                  f"({(areas < 32 ** 2).mean():.0%} small, {(areas > 96 ** 2).mean():.0%} large) -> {out}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
