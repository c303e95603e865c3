"""Synthetic video sequences with ground truth, for testing and measuring tracking, counting and privacy.

Objects are shapes of :mod:`isseg.data.synth` (each drawn once, then moved rigidly) on a textured background
along known piecewise-linear paths: walkers cross the frame from border to border; crossing pairs are two
objects of the **same class** and similar size whose paths cross at the same time (boxes alone are ambiguous
there; one hides the other); dwellers walk into the zone, stop, and walk out; static pillars hide whatever
passes behind them. The ground truth of a frame is each object's *visible* mask (nearer objects paint over
farther ones), box and visible fraction; line crossings are those of each object's true foot point (the
lowest pixels of its whole shape) along its path. Everything is a pure function of ``(spec, seed)``.
:func:`write_sequence` writes frames (or an .mp4), MOT ground truth, the crossings and a zones file;
:func:`isseg.track.simulate.simulate_detections` turns the ground truth into detector-like output.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from isseg.atomic import atomic_write
from isseg.data.synth import CLASS_NAMES, shape_mask, textured_background


@dataclass(frozen=True)
class VideoSpec:
    """What a synthetic sequence contains. Sizes are in pixels, speeds in pixels per frame."""

    height: int = 360
    """Frame height."""
    width: int = 640
    """Frame width."""
    frames: int = 300
    """Number of frames."""
    fps: float = 25.0
    """Frame rate; frame f has the timestamp f / fps seconds."""
    walkers: int = 10
    """Objects that cross the frame from one border to another."""
    crossing_pairs: int = 3
    """Pairs of same-class, similar-size objects whose paths cross at the same point at the same time."""
    dwellers: int = 2
    """Objects that walk into the zone, stop for ``dwell_frames`` and walk out."""
    pillars: int = 1
    """Static occluders drawn in front of all objects."""
    object_size: tuple[int, int] = (26, 56)
    """Range of the largest side of an object's shape."""
    speed: tuple[float, float] = (2.0, 5.0)
    """Range of object speeds."""
    dwell_frames: tuple[int, int] = (40, 80)
    """Range of the stop of a dweller."""
    edge_gap: int = 3
    """The edge line is this many pixels inside the right border."""
    classes: tuple[str, ...] = CLASS_NAMES
    """Class names; objects are shapes of the classes of :mod:`isseg.data.synth`."""


@dataclass
class SynthObject:
    """One object: ``label`` (class index), ``template`` bool [h, w] (its whole shape), ``colour`` BGR,
    ``path`` float64 [K, 3] rows (frame, cx, cy) of its centre, linearly interpolated, ``depth`` (larger is
    nearer: painted later), and ``foot`` (dx, dy) of its foot point from the centre."""

    id: int
    label: int
    template: np.ndarray
    colour: np.ndarray
    path: np.ndarray
    depth: float
    foot: tuple[float, float] = (0.0, 0.0)

    def centre(self, frame: float) -> tuple[float, float] | None:
        """(cx, cy) at ``frame``, or None before the path starts or after it ends."""
        t = self.path[:, 0]
        if frame < t[0] or frame > t[-1]:
            return None
        return float(np.interp(frame, t, self.path[:, 1])), float(np.interp(frame, t, self.path[:, 2]))


@dataclass
class FrameTruth:
    """Ground truth of one frame: ``ids`` int64 [K] (>= 1), ``labels`` int64 [K], ``boxes`` float32 [K, 4]
    of the visible masks, ``masks`` bool [K, H, W] (visible parts), ``visibility`` float32 [K] (visible
    share of the whole shape). Objects with no visible pixel are left out."""

    index: int
    timestamp: float
    ids: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    visibility: np.ndarray


@dataclass
class Scene:
    """A sequence's objects, pillars (x0, y0, x1, y1), lines ``{name: (x1, y1, x2, y2)}`` and zones
    ``{name: [[x, y], ...]}``. Lines run bottom to top, so that "in" is left to right, and reach 100 px
    beyond the frame, so that no object's foot passes near their ends."""

    spec: VideoSpec
    objects: list[SynthObject]
    pillars: list[tuple[int, int, int, int]]
    lines: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    zones: dict[str, list[list[float]]] = field(default_factory=dict)


def _template(rng: np.random.Generator, label: int, lo: int, hi: int) -> np.ndarray:
    """bool [h, w]: a whole shape of class ``label`` (not cut by its canvas) whose larger side is in [lo, hi]."""
    canvas = int(hi * 2.2)
    for _ in range(500):
        m = shape_mask(rng, label, canvas).astype(bool)
        ys, xs = np.nonzero(m)
        if ys.size == 0 or ys.min() == 0 or xs.min() == 0 or ys.max() == canvas - 1 or xs.max() == canvas - 1:
            continue
        crop = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        if lo <= max(crop.shape) <= hi and min(crop.shape) >= 8:
            return crop
    raise RuntimeError(f"no {CLASS_NAMES[label]} of size {lo}..{hi} in 500 tries")


def _foot(template: np.ndarray) -> tuple[float, float]:
    """(dx, dy) from the template's centre to its foot: the mean x of its lowest row, and that row."""
    h, w = template.shape
    xs = np.nonzero(template[h - 1])[0]
    return float(xs.mean() + 0.5 - w / 2), float(h - 0.5 - h / 2)


def _border_point(p: np.ndarray, direction: np.ndarray, spec: VideoSpec, margin: float) -> np.ndarray:
    """Where the ray from ``p`` along ``direction`` leaves the frame grown by ``margin`` on every side."""
    ts = []
    for axis, size in ((0, spec.width), (1, spec.height)):
        d = direction[axis]
        if abs(d) > 1e-9:
            ts.append(max((-margin - p[axis]) / d, (size + margin - p[axis]) / d))
    return p + direction * min(ts)


def _walk(points: list[np.ndarray], start: float, speed: float, stops: dict[int, int] | None = None) -> np.ndarray:
    """float64 [K, 3] (frame, x, y) through ``points`` at ``speed``, stopping ``stops[k]`` frames at point k."""
    rows, t = [], start
    for k, p in enumerate(points):
        if k:
            t += float(np.linalg.norm(p - points[k - 1])) / speed
        rows.append((t, p[0], p[1]))
        if stops and k in stops:
            t += stops[k]
            rows.append((t, p[0], p[1]))
    return np.array(rows)


def _object(rng: np.random.Generator, spec: VideoSpec, oid: int, label: int, size: tuple[int, int]) -> SynthObject:
    template = _template(rng, label, *size)
    colour = rng.uniform(30, 230, size=3)
    return SynthObject(oid, label, template, colour, np.zeros((0, 3)), float(rng.uniform()), _foot(template))


def _random_point(rng: np.random.Generator, spec: VideoSpec, avoid_x: list[float], pad: float) -> np.ndarray:
    """A point in the frame at least ``pad`` from its borders and from each x in ``avoid_x``."""
    points = (rng.uniform([pad, pad], [spec.width - pad, spec.height - pad]) for _ in range(1000))
    found = next((p for p in points if all(abs(p[0] - x) > pad for x in avoid_x)), None)
    if found is None:
        raise ValueError(f"VideoSpec: a {spec.width}x{spec.height} frame is too small for this scene")
    return found


def build_scene(spec: VideoSpec, seed: int = 0) -> Scene:
    """The objects, paths, pillars, lines and zone of a sequence (a pure function of spec and seed)."""
    rng = np.random.default_rng([seed, 9157])
    w, h, n_cls = spec.width, spec.height, len(spec.classes)
    mid, edge = w / 2, w - spec.edge_gap
    lines = {"middle": (mid, h + 100.0, mid, -100.0), "edge": (float(edge), h + 100.0, float(edge), -100.0)}
    zone = [[w * 0.08, h * 0.45], [w * 0.38, h * 0.45], [w * 0.38, h * 0.92], [w * 0.08, h * 0.92]]
    pillars = []
    for _ in range(spec.pillars):
        px = float(rng.uniform(w * 0.55, w * 0.85))
        pillars.append((int(px), int(h * 0.1), int(px + rng.uniform(24, 40)), int(h * 0.95)))
    avoid = [mid, edge] + [(p[0] + p[2]) / 2 for p in pillars]
    objects: list[SynthObject] = []
    margin = spec.object_size[1]
    for _ in range(spec.walkers):
        obj = _object(rng, spec, len(objects) + 1, int(rng.integers(n_cls)), spec.object_size)
        p = _random_point(rng, spec, [], 40)
        d = rng.normal(size=2)
        d[0] += math.copysign(1.0, d[0])  # mostly sideways, so that many cross the vertical lines
        d /= np.linalg.norm(d)
        a, b = _border_point(p, -d, spec, margin), _border_point(p, d, spec, margin)
        speed = float(rng.uniform(*spec.speed))
        dur = float(np.linalg.norm(b - a)) / speed
        obj.path = _walk([a, b], float(rng.uniform(-0.4 * dur, max(spec.frames - 0.6 * dur, 1 - 0.4 * dur))), speed)
        objects.append(obj)
    for _ in range(spec.crossing_pairs):
        label = int(rng.integers(n_cls))
        lo = int(rng.integers(spec.object_size[0], spec.object_size[1] - 7))
        p = _random_point(rng, spec, avoid, 50)
        tc = float(rng.uniform(0.2, 0.8) * spec.frames)
        angle = float(rng.uniform(0, 2 * math.pi))
        for turn in (0.0, float(rng.uniform(0.9, 2.2)) * rng.choice([-1, 1])):
            obj = _object(rng, spec, len(objects) + 1, label, (lo, lo + 8))
            d = np.array([math.cos(angle + turn), math.sin(angle + turn)])
            a, b = _border_point(p, -d, spec, margin), _border_point(p, d, spec, margin)
            speed = float(rng.uniform(*spec.speed))
            obj.path = _walk([a, p, b], tc - float(np.linalg.norm(p - a)) / speed, speed)
            objects.append(obj)
    for _ in range(spec.dwellers):
        obj = _object(rng, spec, len(objects) + 1, int(rng.integers(n_cls)), spec.object_size)
        zx = rng.uniform(zone[0][0] + 30, zone[1][0] - 30)
        zy = rng.uniform(zone[0][1] + 30, zone[2][1] - 30)
        stop = np.array([zx, zy])
        a = _border_point(stop, -np.array([1.0, rng.uniform(-0.3, 0.3)]), spec, margin)
        b = _border_point(stop, np.array([0.2, 1.0]), spec, margin)
        speed = float(rng.uniform(*spec.speed))
        obj.path = _walk([a, stop, b], float(rng.uniform(0, 0.4 * spec.frames)), speed,
                         {1: int(rng.integers(*spec.dwell_frames))})
        objects.append(obj)
    return Scene(spec, objects, pillars, lines, {"zone": zone})


class SynthVideo:
    """A rendered sequence: ``video.render(f)`` -> (uint8 [H, W, 3] BGR frame, :class:`FrameTruth`).

    Iterating yields every frame in order. ``line_crossings()`` and ``zone_visits()`` are the counting
    ground truth; ``analytics_config()`` is the lines and zone as an :mod:`isseg.track.zones` file's content.
    """

    def __init__(self, spec: VideoSpec | None = None, seed: int = 0) -> None:
        self.spec = spec or VideoSpec()
        self.seed = seed
        self.scene = build_scene(self.spec, seed)
        h, w = self.spec.height, self.spec.width
        self.background = textured_background(np.random.default_rng([seed, 4242]), max(h, w))[:h, :w].copy()
        self._order = sorted(range(len(self.scene.objects)), key=lambda k: self.scene.objects[k].depth)

    def __len__(self) -> int:
        return self.spec.frames

    def __iter__(self):
        return (self.render(f) for f in range(self.spec.frames))

    def render(self, f: int) -> tuple[np.ndarray, FrameTruth]:
        """Frame ``f`` (0-based) and its ground truth."""
        h, w = self.spec.height, self.spec.width
        rng = np.random.default_rng([self.seed, 77, f])
        image = self.background + rng.normal(0, 3, size=(h, w, 1)).astype(np.float32)
        owner = np.full((h, w), -1, np.int16)
        placed: dict[int, tuple[int, int, int, int]] = {}
        for k in self._order:
            obj = self.scene.objects[k]
            c = obj.centre(f)
            if c is None:
                continue
            th, tw = obj.template.shape
            x0, y0 = round(c[0] - tw / 2), round(c[1] - th / 2)
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + tw, w), min(y0 + th, h)
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            t = obj.template[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            ramp = np.linspace(-18, 18, cy1 - cy0, dtype=np.float32)[:, None, None]
            region = image[cy0:cy1, cx0:cx1]
            region[t] = (obj.colour[None, None, :] + ramp + rng.normal(0, 4, region.shape))[t]
            owner[cy0:cy1, cx0:cx1][t] = k
            placed[k] = (cx0, cy0, cx1, cy1)
        for x0, y0, x1, y1 in self.scene.pillars:
            image[y0:y1, x0:x1] = (90, 100, 110) + rng.normal(0, 6, (y1 - y0, x1 - x0, 3))
            owner[y0:y1, x0:x1] = -2
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), self._truth(f, owner, placed)

    def _truth(self, f: int, owner: np.ndarray, placed: dict[int, tuple[int, int, int, int]]) -> FrameTruth:
        ids, labels, boxes, masks, vis = [], [], [], [], []
        for k, (x0, y0, x1, y1) in sorted(placed.items()):
            obj, local = self.scene.objects[k], owner[y0:y1, x0:x1] == k
            if local.any():
                ys, xs = np.nonzero(local)
                masks.append(np.zeros(owner.shape, bool))
                masks[-1][y0:y1, x0:x1] = local
                ids.append(obj.id)
                labels.append(obj.label)
                boxes.append((x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1))
                vis.append(len(ys) / int(obj.template.sum()))
        h, w = owner.shape
        return FrameTruth(f, f / self.spec.fps, np.array(ids, np.int64), np.array(labels, np.int64),
                          np.array(boxes, np.float32).reshape(-1, 4),
                          np.stack(masks) if masks else np.zeros((0, h, w), bool), np.array(vis, np.float32))

    def _feet(self, obj: SynthObject) -> tuple[np.ndarray, np.ndarray]:
        """Frames (int [F]) of the sequence where ``obj`` exists and its true foot points (float [F, 2])."""
        t0, t1 = obj.path[0, 0], obj.path[-1, 0]
        frames = np.arange(max(0, math.ceil(t0)), min(self.spec.frames - 1, math.floor(t1)) + 1)
        xs = np.interp(frames, obj.path[:, 0], obj.path[:, 1]) + obj.foot[0]
        ys = np.interp(frames, obj.path[:, 0], obj.path[:, 2]) + obj.foot[1]
        return frames, np.stack([xs, ys], 1)

    def _rows_inside(self, obj: SynthObject, f: int) -> float:
        """The share of ``obj``'s shape at frame ``f`` that lies within the frame's rows (0 when absent)."""
        c = obj.centre(f)
        if c is None:
            return 0.0
        th = obj.template.shape[0]
        y0 = round(c[1] - th / 2)
        rows = obj.template[max(0, -y0):max(0, min(th, self.spec.height - y0))]
        return float(rows.sum()) / float(obj.template.sum())

    def line_crossings(self, min_rows_inside: float = 0.3) -> list[dict]:
        """Every crossing of a line by an object's true foot point, within the line's segment, by an object
        with at least ``min_rows_inside`` of its shape within the frame's rows (not above or below it) on
        the frame before or after the crossing:
        dicts with ``frame`` (the first frame on the new side), ``id``, ``line``, ``direction`` ("in": from
        the left to the right of the line's first-to-second point, as seen on screen) and ``class``."""
        out = []
        for obj in self.scene.objects:
            frames, feet = self._feet(obj)
            for name, (ax, ay, bx, by) in self.scene.lines.items():
                ux, uy = bx - ax, by - ay
                d = ux * (feet[:, 1] - ay) - uy * (feet[:, 0] - ax)
                t = ((feet[:, 0] - ax) * ux + (feet[:, 1] - ay) * uy) / (ux * ux + uy * uy)
                for i in np.nonzero((np.sign(d[1:]) != np.sign(d[:-1])) & (d[1:] != 0))[0]:
                    s = d[i] / (d[i] - d[i + 1])  # where between frames i and i+1 the foot is on the line
                    inside = max(self._rows_inside(obj, int(f)) for f in frames[i:i + 2]) >= min_rows_inside
                    if inside and 0 <= t[i] + s * (t[i + 1] - t[i]) <= 1:
                        out.append({"frame": int(frames[i + 1]), "id": obj.id, "line": name,
                                    "direction": "in" if d[i + 1] > 0 else "out",
                                    "class": self.spec.classes[obj.label]})
        return sorted(out, key=lambda c: (c["frame"], c["id"], c["line"]))

    def line_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """:meth:`line_crossings` counted as ``{line: {class: {"in": n, "out": n}}}`` (lines always there)."""
        counts: dict[str, dict[str, dict[str, int]]] = {name: {} for name in self.scene.lines}
        for c in self.line_crossings():
            counts[c["line"]].setdefault(c["class"], {"in": 0, "out": 0})[c["direction"]] += 1
        return counts

    def zone_visits(self) -> list[dict]:
        """Each stay of an object's true foot point in a zone: ``id``, ``zone``, ``class``, ``enter`` and
        ``exit`` frames (exit: the first frame outside, or None if still inside at the end)."""
        import cv2

        out = []
        for obj, (name, poly) in ((o, z) for o in self.scene.objects for z in self.scene.zones.items()):
            frames, feet = self._feet(obj)
            contour = np.array(poly, np.float32).reshape(-1, 1, 2)
            inside = np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) > 0 for x, y in feet])
            edges = np.flatnonzero(np.diff(np.r_[False, inside, False].astype(np.int8)))
            for enter, leave in zip(edges[::2], edges[1::2]):
                out.append({"id": obj.id, "zone": name, "class": self.spec.classes[obj.label],
                            "enter": int(frames[enter]), "exit": int(frames[leave]) if leave < len(frames) else None})
        return sorted(out, key=lambda v: (v["enter"], v["id"]))

    def analytics_config(self) -> dict:
        """The sequence's lines and zone in the format of an :mod:`isseg.track.zones` file."""
        return {"lines": [{"name": n, "points": [[p[0], p[1]], [p[2], p[3]]]} for n, p in self.scene.lines.items()],
                "zones": [{"name": n, "polygon": poly} for n, poly in self.scene.zones.items()]}


def write_sequence(output: str | os.PathLike, spec: VideoSpec | None = None, seed: int = 0,
                   video: bool = False, image_format: str = "jpg") -> dict[str, Path]:
    """Write a sequence into ``output``; return the paths written.

    ``img/000001.jpg``... (or ``video.mp4`` when ``video``), ``gt/gt.txt`` (MOT: frame from 1, id, left,
    top, width, height, 1, class index + 1, visibility, of the visible masks), ``gt/crossings.json``
    (lines, crossings, counts per line, class and direction; zone visits), ``zones.json`` (the lines and
    zone for ``isseg track --zones``) and ``seqinfo.ini``.
    """
    import cv2

    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    synth = SynthVideo(spec, seed)
    spec, out = synth.spec, Path(output)
    paths = {"gt": out / "gt" / "gt.txt", "crossings": out / "gt" / "crossings.json",
             "zones": out / "zones.json", "seqinfo": out / "seqinfo.ini"}
    paths["frames"] = out / "video.mp4" if video else out / "img"
    (out if video else paths["frames"]).mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(paths["frames"]), cv2.VideoWriter_fourcc(*"mp4v"), spec.fps,
                             (spec.width, spec.height)) if video else None
    if writer is not None and not writer.isOpened():
        raise OSError(f"{paths['frames']}: OpenCV cannot write mp4v video here; write frames instead")
    rows = []
    for image, truth in synth:
        if writer is not None:
            writer.write(image)
        elif not cv2.imwrite(str(paths["frames"] / f"{truth.index + 1:06d}.{image_format}"), image):
            raise OSError(f"could not write {paths['frames'] / f'{truth.index + 1:06d}.{image_format}'}")
        for i, box in enumerate(truth.boxes):
            x0, y0, x1, y1 = (float(v) for v in box)
            rows.append(f"{truth.index + 1},{truth.ids[i]},{x0:g},{y0:g},{x1 - x0:g},{y1 - y0:g},1,"
                        f"{truth.labels[i] + 1},{truth.visibility[i]:.3f}")
    if writer is not None:
        writer.release()
    atomic_write(paths["gt"], "\n".join(rows) + "\n")
    atomic_write(paths["crossings"], json.dumps({
        "classes": list(spec.classes), "lines": synth.scene.lines, "crossings": synth.line_crossings(),
        "counts": synth.line_counts(), "zone_visits": synth.zone_visits()}, indent=1))
    atomic_write(paths["zones"], json.dumps(synth.analytics_config(), indent=1))
    ext = ".mp4" if video else f".{image_format}"
    atomic_write(paths["seqinfo"], f"[Sequence]\nname={out.name}\nimDir=img\nframeRate={spec.fps:g}\n"
                                   f"seqLength={spec.frames}\nimWidth={spec.width}\nimHeight={spec.height}\n"
                                   f"imExt={ext}\nseed={seed}\n")
    return paths
