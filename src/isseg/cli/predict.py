"""``isseg predict INPUT...``: segment images, folders, globs, videos and cameras; write visualized images /
videos and COCO-format results.

    isseg predict photos/ clip.mp4 "shots/*.png" --model out/security-0002.xml --output runs/
    isseg predict 0 --weights model.pth --backend openvino --max-frames 300      # camera 0

Writes into ``--output``: one drawn image per input image (same name), ``<video stem>.mp4`` per video or
camera, ``results.json`` (COCO results: image_id, category_id, bbox [x, y, w, h], score, RLE segmentation)
and ``images.json`` (image_id -> file, size; for a video the image_id is the frame's). A bad input is
reported in one line and the rest of the batch still runs; the exit code is 1 when any input failed.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
STAGES = ("decode", "preprocess", "infer", "postprocess", "draw", "write")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders, glob patterns, video files or camera indices (0, 1, ...)")
    src = p.add_argument_group("model (one of)")
    src.add_argument("--model", "-m", help="exported model: OpenVINO IR (.xml) or ONNX (.onnx)")
    src.add_argument("--weights", "-w", help="checkpoint path or registry name (PyTorch, or exported on the fly "
                     "with --backend openvino/onnx)")
    p.add_argument("--preset", help="preset of a foreign checkpoint (torchvision / detectron2 / mmdetection)")
    p.add_argument("--backend", choices=("torch", "openvino", "onnx"), help="default: from the model file type")
    p.add_argument("--device", help="CPU / GPU / AUTO (OpenVINO), cpu / cuda (PyTorch, ONNX Runtime)")
    p.add_argument("--precision", help="OpenVINO inference precision: f32, bf16, f16 (default: the device's)")
    p.add_argument("--threshold", "-t", type=float, default=0.5,
                   help="minimum score drawn and written (default 0.5; use 0.05 for COCO AP evaluation)")
    p.add_argument("--classes", help="comma-separated class names or indices to keep (default: all)")
    p.add_argument("--output", "-o", default="isseg_predictions", help="output folder (default: %(default)s)")
    p.add_argument("--no-images", action="store_true", help="do not write drawn images / videos")
    p.add_argument("--no-json", action="store_true", help="do not write results.json / images.json")
    p.add_argument("--no-masks", action="store_true", help="boxes only (faster; no segmentation in the JSON)")
    p.add_argument("--max-frames", type=int, default=0, help="stop each video / camera after N frames")
    p.add_argument("--async", dest="use_async", action="store_true",
                   help="OpenVINO throughput mode: several images in flight (no per-stage timings)")
    p.add_argument("--recursive", "-r", action="store_true", help="look for images in sub-folders too")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


# ------------------------------------------------------------------------------------------------ inputs
def expand_inputs(inputs: list[str], recursive: bool = False) -> tuple[list[tuple[str, Any]], list[str]]:
    """-> ([(kind, value)], errors) with kind "image" (Path), "video" (Path) or "camera" (int)."""
    items: list[tuple[str, Any]] = []
    errors: list[str] = []
    for raw in inputs:
        if raw.isdigit() and not Path(raw).exists():
            items.append(("camera", int(raw)))
            continue
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(f for f in path.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                errors.append(f"{raw}: no images in this folder")
            items.extend(("image", f) for f in files)
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                items.append(("video", path))
            else:  # unknown suffixes are tried as images; OpenCV decides
                items.append(("image", path))
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            if not matches:
                errors.append(f"{raw}: no file matches this pattern")
            for m in matches:
                items.append(("video" if m.suffix.lower() in VIDEO_SUFFIXES else "image", m))
        else:
            errors.append(f"{raw}: no such file, folder or camera")
    return items, errors


# ------------------------------------------------------------------------------------------------ outputs
class Results:
    """COCO results records and the image table, written at the end."""

    def __init__(self, class_names: tuple[str, ...], masks: bool) -> None:
        from isseg.config import COCO_CATEGORY_IDS, COCO_CLASSES

        self.category_ids = list(COCO_CATEGORY_IDS) if tuple(class_names) == COCO_CLASSES else \
            list(range(1, len(class_names) + 1))
        self.class_names = class_names
        self.masks = masks
        self.records: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self._used: set[int] = set()

    def image_id(self, path: Path | None, fallback: int) -> int:
        """COCO file names (000000000139.jpg) give their numeric id; others a running number."""
        if path is not None and path.stem.isdigit() and int(path.stem) not in self._used:
            return int(path.stem)
        i = fallback
        while i in self._used:
            i += 1
        return i

    def add(self, image_id: int, file: str, det: Any, frame: int | None = None) -> None:
        from isseg.data.masks import masks_to_rles

        self._used.add(image_id)
        entry = {"id": image_id, "file_name": file, "height": det.image_size[0], "width": det.image_size[1]}
        if frame is not None:
            entry["frame"] = frame
        self.images.append(entry)
        rles = masks_to_rles(det.masks) if self.masks and det.masks is not None and len(det) else [None] * len(det)
        for box, score, label, rle in zip(det.boxes, det.scores, det.labels, rles):
            x0, y0, x1, y1 = (float(v) for v in box)
            rec = {"image_id": image_id, "category_id": self.category_ids[int(label)],
                   "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                   "score": round(float(score), 5)}
            if rle is not None:
                rec["segmentation"] = rle
            self.records.append(rec)

    def write(self, folder: Path) -> None:
        (folder / "results.json").write_text(json.dumps(self.records))
        categories = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names)]
        (folder / "images.json").write_text(json.dumps({"images": self.images, "categories": categories},
                                                       indent=1))


def _unique_path(folder: Path, name: str, taken: set[str]) -> Path:
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, i = name, 1
    while candidate in taken:
        candidate = f"{stem}_{i}{suffix}"
        i += 1
    taken.add(candidate)
    return folder / candidate


def _class_filter(spec: str | None, class_names: tuple[str, ...]) -> set[int] | None:
    if not spec:
        return None
    keep: set[int] = set()
    for part in (s.strip() for s in spec.split(",")):
        if not part:
            continue
        if part.isdigit():
            if int(part) >= len(class_names):
                raise ValueError(f"--classes: index {part} out of range (0..{len(class_names) - 1})")
            keep.add(int(part))
        elif part in class_names:
            keep.add(class_names.index(part))
        else:
            raise ValueError(f"--classes: unknown class {part!r}")
    return keep


def _frames(source: Any, max_frames: int) -> Iterator[Any]:
    import cv2

    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ValueError(f"{source}: cannot open this video / camera")
    try:
        n = 0
        while not max_frames or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
            n += 1
    finally:
        cap.release()


# ------------------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from tqdm import tqdm

    from isseg.deploy.predictor import Predictor
    from isseg.deploy.visualize import draw_detections

    if not args.model and not args.weights:
        raise ValueError("pass --model (an exported .xml / .onnx) or --weights (a checkpoint)")
    if args.model and args.weights:
        raise ValueError("pass either --model or --weights, not both")
    items, errors = expand_inputs(args.inputs, args.recursive)
    for e in errors:
        print(f"isseg predict: {e}", file=sys.stderr)
    if not items:
        print("isseg predict: nothing to process", file=sys.stderr)
        return 1
    t_load = time.perf_counter()
    predictor = Predictor(args.model or args.weights, backend=args.backend, device=args.device,
                          threshold=args.threshold, precision=args.precision, preset=args.preset,
                          mode="throughput" if args.use_async else "latency")
    t_load = time.perf_counter() - t_load
    keep = _class_filter(args.classes, predictor.class_names)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = Results(predictor.class_names, not args.no_masks)
    stage_totals = dict.fromkeys(STAGES, 0.0)
    taken: set[str] = set()
    done = failed = 0
    detections_total = 0
    t_start = time.perf_counter()

    def select(det: Any) -> Any:
        return det if keep is None else det.filter(np.isin(det.labels, list(keep)))

    def finish(det: Any, image: np.ndarray, image_id: int, name: str, writer: Any = None,
               frame: int | None = None, path_out: Path | None = None) -> None:
        nonlocal detections_total
        det = select(det)
        detections_total += len(det)
        if not args.no_json:
            results.add(image_id, name, det, frame)
        if not args.no_images:
            t0 = time.perf_counter()
            drawn = draw_detections(image, det, masks=not args.no_masks)
            t1 = time.perf_counter()
            if writer is not None:
                writer.write(drawn)
            elif path_out is not None:
                cv2.imwrite(str(path_out), drawn)
            t2 = time.perf_counter()
            stage_totals["draw"] += t1 - t0
            stage_totals["write"] += t2 - t1

    def timed_predict(image: np.ndarray) -> Any:
        det = predictor.predict(image, masks=not args.no_masks)
        for k, v in predictor.timings.items():
            stage_totals[k] += v
        return det

    images = [(k, v) for k, v in items if k == "image"]
    streams = [(k, v) for k, v in items if k != "image"]
    bar = tqdm(total=len(images), unit="img", disable=args.quiet or not images, desc="images")
    next_id = 1

    def read(path: Path) -> tuple[np.ndarray, Path]:
        t0 = time.perf_counter()
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        stage_totals["decode"] += time.perf_counter() - t0
        if image is None:
            raise ValueError(f"{path}: not an image OpenCV can read (corrupt or unsupported format)")
        return image, path

    if args.use_async and predictor.backend == "openvino":
        def prepare(item: tuple[str, Path]) -> tuple[np.ndarray, dict[str, Any]]:
            image, path = read(item[1])
            canvas, meta = predictor.preprocess(image)
            meta.update(image=image, path=path)
            return canvas, meta

        for meta, outputs, err in predictor.runtime.stream(images, prepare):
            bar.update(1)
            if err is not None:
                failed += 1
                tqdm.write(f"isseg predict: {err}", file=sys.stderr)
                continue
            det = predictor.postprocess(outputs, meta, with_masks=not args.no_masks)
            path = meta["path"]
            image_id = results.image_id(path, next_id)
            next_id = max(next_id, image_id) + 1
            finish(det, meta["image"], image_id, str(path), path_out=_unique_path(out_dir, path.name, taken))
            done += 1
    else:
        for _, path in images:
            try:
                image, _ = read(path)
                det = timed_predict(image)
                image_id = results.image_id(path, next_id)
                next_id = max(next_id, image_id) + 1
                finish(det, image, image_id, str(path), path_out=_unique_path(out_dir, path.name, taken))
                done += 1
            except (ValueError, OSError, cv2.error) as exc:
                failed += 1
                tqdm.write(f"isseg predict: {exc}", file=sys.stderr)
            bar.update(1)
    bar.close()

    frames_total = 0
    for kind, source in streams:
        name = f"camera{source}" if kind == "camera" else Path(source).name
        writer = None
        try:
            cap_total = 0
            if kind == "video":
                cap = cv2.VideoCapture(str(source))
                cap_total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
                cap.release()
            else:
                fps = 25.0
            total = min(cap_total, args.max_frames) if args.max_frames and cap_total else (args.max_frames or
                                                                                          cap_total or None)
            fbar = tqdm(total=total, unit="frame", desc=name, disable=args.quiet)
            n = 0
            src = int(source) if kind == "camera" else str(source)
            frame_iter = _frames(src, args.max_frames)
            while True:
                t0 = time.perf_counter()
                frame = next(frame_iter, None)
                stage_totals["decode"] += time.perf_counter() - t0
                if frame is None:
                    break
                if writer is None and not args.no_images:
                    stem = Path(name).stem
                    out_path = _unique_path(out_dir, f"{stem}.mp4", taken)
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                det = timed_predict(frame)
                finish(det, frame, next_id, name, writer=writer, frame=n)
                next_id += 1
                n += 1
                fbar.update(1)
            fbar.close()
            if n == 0:
                raise ValueError(f"{source}: no frames could be read")
            frames_total += n
            done += 1
        except (ValueError, OSError, cv2.error) as exc:
            failed += 1
            print(f"isseg predict: {exc}", file=sys.stderr)
        finally:
            if writer is not None:
                writer.release()

    if not args.no_json:
        results.write(out_dir)
    wall = time.perf_counter() - t_start
    count = sum(1 for _ in results.images) if not args.no_json else done + frames_total
    print(f"isseg predict: {done} input(s) processed, {failed} failed; {len(images)} image(s), "
          f"{frames_total} video frame(s); {detections_total} detection(s) >= {args.threshold}; "
          f"output in {out_dir}")
    n_img = max(1, count)
    parts = ", ".join(f"{k} {1000 * v / n_img:.1f}" for k, v in stage_totals.items() if v > 0)
    print(f"  model load {t_load:.2f} s ({predictor.backend}, {predictor.runtime.device}); per image ms: {parts}; "
          f"wall {wall:.2f} s = {n_img / wall if wall else 0:.2f} images/s")
    return 1 if failed or errors else 0
