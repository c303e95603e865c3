"""``isseg predict INPUT...``: segment images, folders, globs, videos and cameras; write visualized images /
videos and COCO-format results.

    isseg predict photos/ clip.mp4 "shots/*.png" --model out/security-0002.xml --output runs/
    isseg predict 0 --weights model.pth --backend openvino --max-frames 300      # camera 0
    isseg predict photos/ --model out/security-0002.xml --output runs/ --resume   # finish an interrupted run

Writes into ``--output``: one drawn image per input image (same name), ``<video stem>.mp4`` per video or
camera, ``results.jsonl`` (one record per input image or frame, streamed as it is computed, bad inputs as error
records: :mod:`isseg.engine.records`), and from those records ``results.json`` (COCO results: image_id,
category_id, bbox [x, y, w, h], score, RLE segmentation) and ``images.json`` (image_id -> file, size; for a
video the image_id is the frame's). Options and the output folder are checked before the model is loaded. A
bad input is reported in one line and the rest of the batch still runs; the exit code is 1 when any input
failed. Ctrl-C (or a crash) keeps everything computed: ``results.json`` / ``images.json`` are written from the
records done so far, ``results.jsonl.partial`` stays for ``--resume``, and the exit code is 130.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from isseg.cli import checks

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
STAGES = ("decode", "preprocess", "infer", "postprocess", "draw", "write")
RECORDS_NAME = "results.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders, glob patterns, video files or camera indices (0, 1, ...)")
    src = p.add_argument_group("model (one of)")
    src.add_argument("--model", "-m", help="exported model: OpenVINO IR (.xml) or ONNX (.onnx)")
    src.add_argument("--weights", "-w", help="checkpoint path or registry name (PyTorch, or exported on the fly "
                     "with --backend openvino/onnx)")
    p.add_argument("--preset", help="preset of a foreign checkpoint (torchvision / detectron2 / mmdetection)")
    p.add_argument("--backend", choices=("torch", "openvino", "onnx"), help="default: from the model file type")
    p.add_argument("--device", help="CPU / GPU / AUTO (OpenVINO), cpu / cuda (PyTorch, ONNX Runtime); any case")
    p.add_argument("--precision", help="OpenVINO inference precision: f32, bf16, f16 (default: the device's)")
    p.add_argument("--threshold", "-t", type=float, default=0.5,
                   help="minimum score drawn and written, in [0, 1] (default 0.5; use 0.05 for COCO AP evaluation)")
    p.add_argument("--classes", help="comma-separated class names or indices to keep (default: all)")
    p.add_argument("--output", "-o", default="isseg_predictions", help="output folder (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help=f"skip the inputs already done in OUTPUT/{RECORDS_NAME} (or the .partial file of an "
                   "interrupted run) and add the rest; failed inputs are tried again")
    p.add_argument("--no-images", action="store_true", help="do not write drawn images / videos")
    p.add_argument("--no-json", action="store_true", help=f"do not write {RECORDS_NAME}, results.json, images.json")
    p.add_argument("--no-masks", action="store_true", help="boxes only (faster; no segmentation in the JSON)")
    p.add_argument("--max-frames", type=int, default=0, help="stop each video / camera after N frames")
    p.add_argument("--mode", choices=("auto", "latency", "throughput"), default="auto",
                   help="OpenVINO performance mode. throughput: several images / frames in flight on the CPU's "
                   "streams while the next ones are decoded and the finished ones written (results stay in input "
                   "order; no per-stage timings); latency: one at a time; auto (default): throughput for a "
                   "folder / several images / a video, latency for one image or a camera")
    p.add_argument("--async", dest="mode", action="store_const", const="throughput",
                   help="same as --mode throughput")
    p.add_argument("--recursive", "-r", action="store_true", help="look for images in sub-folders too")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    ray = p.add_argument_group("Ray (isseg[ray]): resumable sharded runs over large image collections")
    ray.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                     help="run on Ray Data (no ADDRESS: the running cluster, else a local one; host:port, ray://...); "
                     "inputs may also be manifests and fsspec URIs; writes OUTPUT/shard-*.jsonl records and resumes")
    ray.add_argument("--shard-size", type=int, help="--ray: images per shard (default 256)")
    ray.add_argument("--actors", type=int, help="--ray: Predictor actors (default: cluster CPUs / --cpus-per-actor)")
    ray.add_argument("--cpus-per-actor", type=float, help="--ray: CPUs (threads) per actor (default 2)")


# ------------------------------------------------------------------------------------------------ inputs
def expand_inputs(inputs: list[str], recursive: bool = False) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """-> ([(kind, value)], [(input, problem)]) with kind "image" (Path), "video" (Path) or "camera" (int)."""
    items: list[tuple[str, Any]] = []
    errors: list[tuple[str, str]] = []
    for raw in inputs:
        if raw.isdigit() and not Path(raw).exists():
            items.append(("camera", int(raw)))
            continue
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(f for f in path.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                errors.append((raw, "no images in this folder"))
            items.extend(("image", f) for f in files)
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                items.append(("video", path))
            else:  # unknown suffixes are tried as images; the decoder decides
                items.append(("image", path))
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            if not matches:
                errors.append((raw, "no file matches this pattern"))
            for m in matches:
                items.append(("video" if m.suffix.lower() in VIDEO_SUFFIXES else "image", m))
        else:
            errors.append((raw, "no such file, folder or camera"))
    return items, errors


# ------------------------------------------------------------------------------------------------ outputs
class ImageIds:
    """COCO file names (000000000139.jpg) give their numeric id; others a running number; never twice."""

    def __init__(self, used: Iterable[int] = ()) -> None:
        self.used = set(used)
        self.next = max(self.used, default=0) + 1

    def take(self, path: Path | None = None) -> int:
        if path is not None and path.stem.isdigit() and int(path.stem) not in self.used:
            i = int(path.stem)
        else:
            i = self.next
            while i in self.used:
                i += 1
        self.used.add(i)
        self.next = max(self.next, i + 1)
        return i


def _atomic_write(path: Path, data: bytes) -> None:
    """Temporary file in the same folder + rename: a reader (or an interrupted run) never sees half a file."""
    from isseg.atomic import atomic_write

    atomic_write(path, data)


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (file, frame): a later record (a resumed retry) replaces an earlier one, in first order."""
    by_key: dict[tuple[str, Any], dict[str, Any]] = {}
    for rec in records:
        by_key[(rec.get("file"), rec.get("frame"))] = rec
    return list(by_key.values())


def write_coco(out_dir: Path, records_file: Path, class_names: tuple[str, ...]) -> tuple[Path, Path]:
    """``results.json`` + ``images.json`` from the records file, each written atomically."""
    from isseg.engine.records import category_ids_for, read_records, records_to_coco

    category_ids = category_ids_for(class_names)
    records = latest_records(read_records(records_file, tolerate_partial=True)) if records_file.is_file() else []
    good = [r for r in records if r.get("error") is None]
    results, _ = records_to_coco(good, category_ids)
    for r in results:
        r["bbox"] = [round(v, 2) for v in r["bbox"]]
        r["score"] = round(r["score"], 5)
    images = []
    for r in good:
        entry = {"id": int(r["image_id"]), "file_name": r["file"], "height": r["height"], "width": r["width"]}
        if r.get("frame") is not None:
            entry["frame"] = r["frame"]
        images.append(entry)
    categories = [{"id": c, "name": n} for c, n in zip(category_ids, class_names)]
    results_path, images_path = out_dir / "results.json", out_dir / "images.json"
    _atomic_write(results_path, json.dumps(results).encode())
    _atomic_write(images_path, json.dumps({"images": images, "categories": categories}, indent=1).encode())
    return results_path, images_path


def _unique_path(folder: Path, name: str, taken: set[str]) -> Path:
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, i = name, 1
    while candidate in taken:
        candidate = f"{stem}_{i}{suffix}"
        i += 1
    taken.add(candidate)
    return folder / candidate


def _write_image(path: Path, image: Any) -> None:
    """Encode by the file's suffix (PNG when OpenCV has no writer for it) and write atomically."""
    import cv2

    suffix = path.suffix.lower() if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff",
                                                             ".webp"} else ".png"
    try:
        ok, encoded = cv2.imencode(suffix, image)
    except cv2.error:
        ok, encoded = False, None
    if not ok:
        raise OSError(f"{path}: cannot encode the drawn image")
    try:
        _atomic_write(path, encoded.tobytes())
    except OSError as exc:
        raise OSError(f"{path}: cannot write the drawn image ({exc.strerror or exc})") from None


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


def check_options(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model is loaded (one clear line for the first problem)."""
    if not args.model and not args.weights:
        raise ValueError("pass --model (an exported .xml / .onnx) or --weights (a checkpoint)")
    if args.model and args.weights:
        raise ValueError("pass either --model or --weights, not both")
    checks.in_range(args.threshold, "--threshold", 0.0, 1.0)
    checks.at_least(args.max_frames, "--max-frames", 0)
    if args.resume and args.no_json:
        raise ValueError(f"--resume reads OUTPUT/{RECORDS_NAME}, which --no-json does not write")
    if args.no_json and args.no_images:
        raise ValueError("--no-json and --no-images together would write nothing")
    checks.output_dir(args.output, "--output")
    partial = Path(args.output) / f"{RECORDS_NAME}.partial"
    if partial.is_file() and not args.resume and not args.no_json:  # never wipe an interrupted run's results
        raise ValueError(f"{partial} holds the results of an interrupted run: pass --resume to finish it, or "
                         "delete the file to start over")


# ------------------------------------------------------------------------------------------------ main
def choose_mode(mode: str, backend: str, items: list[tuple[str, Any]]) -> str:
    """``--mode auto``: throughput where it wins, i.e. OpenVINO on more than one image or on a video file
    (measured: see docs/deploy.md, "Latency and throughput mode"); latency for a single image (nothing to
    overlap) and for a camera (the newest frame matters, not the rate). Other backends run one at a time."""
    if mode != "auto":
        return mode
    if backend != "openvino":
        return "latency"
    images = sum(1 for kind, _ in items if kind == "image")
    return "throughput" if images > 1 or any(kind == "video" for kind, _ in items) else "latency"


def run(args: argparse.Namespace) -> int:
    if getattr(args, "ray", None):  # the Ray path: isseg.cluster (resumable shards)
        from isseg.cluster.cli import run as run_ray

        return run_ray(args)
    check_options(args)
    out_dir = Path(args.output)
    items, input_errors = expand_inputs(args.inputs, args.recursive)
    for raw, problem in input_errors:
        print(f"isseg predict: {raw}: {problem}", file=sys.stderr)
    if not items:
        print(f"isseg predict: nothing to process ({len(input_errors)} input(s) failed)", file=sys.stderr)
        return 1
    backend = checks.backend_of(args.model or args.weights, args.backend)
    device = checks.device_for(backend, args.device)
    from isseg.deploy.predictor import Predictor

    mode = args.mode = choose_mode(args.mode, backend, items)
    t_load = time.perf_counter()
    predictor = Predictor(args.model or args.weights, backend=args.backend, device=device,
                          threshold=args.threshold, precision=args.precision, preset=args.preset, mode=mode)
    t_load = time.perf_counter() - t_load
    keep = _class_filter(args.classes, predictor.class_names)
    return _Run(args, predictor, out_dir, items, input_errors, t_load, device, keep).execute()


class _VideoOut:
    """The drawn copy of one video (``<stem>.mp4`` in the output folder), opened at its first frame, when its size
    is known."""

    def __init__(self, folder: Path, stem: str, taken: set[str]) -> None:
        self.folder, self.stem, self.taken = folder, stem, taken
        self.writer: Any = None

    def open(self, frame: Any, fps: float) -> None:
        import cv2

        if self.writer is not None:
            return
        path = _unique_path(self.folder, f"{self.stem}.mp4", self.taken)
        h, w = frame.shape[:2]
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not self.writer.isOpened():
            raise OSError(f"{path}: cannot write the drawn video")

    def write(self, frame: Any) -> None:
        self.writer.write(frame)

    def release(self) -> None:
        if self.writer is not None:
            self.writer.release()


class _Run:
    """One ``isseg predict`` run: the loop over the inputs, the streamed records, and the final summary."""

    def __init__(self, args: argparse.Namespace, predictor: Any, out_dir: Path, items: list[tuple[str, Any]],
                 input_errors: list[tuple[str, str]], t_load: float, device: str | None,
                 keep: set[int] | None) -> None:
        from isseg.engine.records import RecordWriter, error_record

        self.args, self.predictor, self.out_dir = args, predictor, out_dir
        # OpenVINO in throughput mode: several requests in flight (results still come back in input order)
        self.streaming = predictor.backend == "openvino" and args.mode == "throughput"
        self.t_load, self.device, self.keep = t_load, device, keep
        self.images = [v for k, v in items if k == "image"]
        self.streams = [(k, v) for k, v in items if k != "image"]
        self.total = len(items) + len(input_errors)
        self.stage_totals = dict.fromkeys(STAGES, 0.0)
        self.done = self.failed = self.skipped = self.frames_total = self.detections_total = 0
        self.writer = None if args.no_json else RecordWriter(out_dir / RECORDS_NAME, resume=args.resume)
        previous = self.writer.done if self.writer is not None else []
        # inputs already done (a failed one is tried again); frames: the records of each video
        self.done_images = {r["file"] for r in previous if r.get("error") is None and r.get("frame") is None}
        self.done_frames: dict[str, dict[int, dict[str, Any]]] = {}
        for r in previous:
            if r.get("error") is None and r.get("frame") is not None:
                self.done_frames.setdefault(r["file"], {})[int(r["frame"])] = r
        self.ids = ImageIds(int(r["image_id"]) for r in previous if r.get("image_id") is not None)
        for raw, problem in input_errors:
            self.failed += 1
            self._record(error_record(raw, f"{raw}: {problem}"))

    # -- helpers -------------------------------------------------------------------------------------------
    def _record(self, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(record)

    def _fail(self, file: str, exc: BaseException, frame: int | None = None, log: Any = None) -> None:
        from isseg.engine.records import error_record

        message = str(exc) if str(file) in str(exc) else f"{file}: {exc}"
        self.failed += 1
        (log or print)(f"isseg predict: {message}", file=sys.stderr)
        self._record(error_record(str(file), message, frame=frame))

    def _select(self, det: Any) -> Any:
        import numpy as np

        return det if self.keep is None else det.filter(np.isin(det.labels, list(self.keep)))

    def _emit(self, det: Any, image: Any, file: str, image_id: int, frame: int | None = None,
              path_out: Path | None = None, video: Any = None) -> None:
        """Record first (nothing computed is lost), then draw; a drawing that cannot be written fails the input
        in one line but keeps its record."""
        import cv2

        from isseg.engine.records import detections_record

        det = self._select(det)
        self.detections_total += len(det)
        self._record(detections_record(det, file, image_id, frame, masks=not self.args.no_masks))
        try:
            self._draw(det, image, path_out, video)
        except (OSError, cv2.error) as exc:
            self.failed += 1
            kept = f" (its detections are in {RECORDS_NAME})" if self.writer is not None else ""
            print(f"isseg predict: {exc}{kept}", file=sys.stderr)
            return
        if frame is None:
            self.done += 1

    def _draw(self, det: Any, image: Any, path_out: Path | None, video: Any) -> None:
        if self.args.no_images:
            return
        from isseg.deploy.visualize import draw_detections

        t0 = time.perf_counter()
        drawn = draw_detections(image, det, masks=not self.args.no_masks and det.masks is not None)
        t1 = time.perf_counter()
        if video is not None:
            video.write(drawn)
        elif path_out is not None:
            _write_image(path_out, drawn)
        self.stage_totals["draw"] += t1 - t0
        self.stage_totals["write"] += time.perf_counter() - t1

    def _read(self, path: Path) -> Any:
        from isseg.sources.decode import read_image

        t0 = time.perf_counter()
        try:
            return read_image(path)
        finally:
            self.stage_totals["decode"] += time.perf_counter() - t0

    def _predict(self, image: Any) -> Any:
        det = self.predictor.predict(image, masks=not self.args.no_masks)
        for k, v in self.predictor.timings.items():
            if k in self.stage_totals:
                self.stage_totals[k] += v
        return det

    def _predict_stream(self, images: Iterator[Any]) -> Iterator[Any]:
        """Throughput mode: detections (or the error) of each image, in order, several in flight."""
        return self.predictor.predict_stream(images, errors="return", masks=not self.args.no_masks)

    # -- images --------------------------------------------------------------------------------------------
    def _image_jobs(self) -> list[tuple[Path, Path]]:
        """(input, drawn output) of every image, names given in input order (the same on a resumed run)."""
        taken: set[str] = set()
        return [(path, _unique_path(self.out_dir, path.name, taken)) for path in self.images]

    def _run_images(self, bar: Any) -> None:
        import cv2

        jobs = []
        for path, out in self._image_jobs():
            if str(path) in self.done_images:
                self.skipped += 1
                bar.update(1)
            else:
                jobs.append((path, out))
        if self.streaming:
            self._run_images_async(jobs, bar)
            return
        for path, path_out in jobs:
            try:
                image = self._read(path)
                det = self._predict(image)
                self._emit(det, image, str(path), self.ids.take(path), path_out=path_out)
            except (ValueError, OSError, cv2.error) as exc:
                self._fail(str(path), exc, log=bar.write)
            bar.update(1)

    def _run_images_async(self, jobs: list[tuple[Path, Path]], bar: Any) -> None:
        """Several images in flight through ``Predictor.predict_stream``; results come back in input order."""
        import cv2

        pending: deque[tuple[Path, Path, Any, BaseException | None]] = deque()

        def feed() -> Iterator[Any]:
            for path, path_out in jobs:
                try:
                    image = self._read(path)
                except (ValueError, OSError) as exc:
                    pending.append((path, path_out, None, exc))
                    yield str(path)  # the predictor fails on it in turn: its place in the order is kept
                else:
                    pending.append((path, path_out, image, None))
                    yield image

        for result in self._predict_stream(feed()):
            path, path_out, image, err = pending.popleft()
            if err is None and isinstance(result, BaseException):
                err = result
            try:
                if err is not None:
                    raise err
                self._emit(result, image, str(path), self.ids.take(path), path_out=path_out)
            except (ValueError, OSError, cv2.error) as exc:
                self._fail(str(path), exc, log=bar.write)
            bar.update(1)

    # -- videos and cameras --------------------------------------------------------------------------------
    def _run_stream(self, kind: str, source: Any, taken: set[str]) -> None:
        import cv2
        from tqdm import tqdm

        from isseg.engine.records import record_to_detections

        name = f"camera{source}" if kind == "camera" else Path(source).name
        file = name if kind == "camera" else str(source)
        done_frames = self.done_frames.get(file, {}) if kind == "video" else {}
        video = None if self.args.no_images else _VideoOut(self.out_dir, Path(name).stem, taken)
        fbar = None
        try:
            cap_total, fps = 0, 25.0
            if kind == "video":
                cap = cv2.VideoCapture(str(source))
                cap_total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
                cap.release()
            mf = self.args.max_frames
            total = min(cap_total, mf) if mf and cap_total else (mf or cap_total or None)
            fbar = tqdm(total=total, unit="frame", desc=name, disable=self.args.quiet)

            def frames() -> Iterator[tuple[int, Any]]:
                frame_iter = _frames(int(source) if kind == "camera" else str(source), mf)
                for n in itertools.count():
                    t0 = time.perf_counter()
                    frame = next(frame_iter, None)
                    self.stage_totals["decode"] += time.perf_counter() - t0
                    if frame is None:
                        return
                    if video is not None:
                        video.open(frame, fps)
                    yield n, frame

            def finish(n: int, frame: Any, det: Any) -> None:
                if det is None:  # resumed: redraw from the record, no inference
                    self._draw(record_to_detections(done_frames[n], self.predictor.class_names), frame, None, video)
                else:
                    self._emit(det, frame, file, self.ids.take(), frame=n, video=video)
                fbar.update(1)

            count = self._stream_frames(frames(), done_frames, finish) if self.streaming else \
                self._sync_frames(frames(), done_frames, finish)
            if count == 0:
                raise ValueError(f"{source}: no frames could be read")
            self.frames_total += count
            self.done += 1
        except (ValueError, OSError, cv2.error) as exc:
            self._fail(file, exc)
        finally:
            if fbar is not None:
                fbar.close()
            if video is not None:
                video.release()

    def _sync_frames(self, frames: Iterator[tuple[int, Any]], done: dict[int, Any], finish: Any) -> int:
        count = 0
        for n, frame in frames:
            finish(n, frame, None if n in done else self._predict(frame))
            count += 1
        return count

    def _stream_frames(self, frames: Iterator[tuple[int, Any]], done: dict[int, Any], finish: Any) -> int:
        """Frames through ``predict_stream`` (several in flight); frames already done (``--resume``) are not
        inferred but drawn in their place, so the drawn video keeps the frame order."""
        waiting: deque[tuple[int, Any, bool]] = deque()  # (frame number, frame, inferred) in frame order
        count = 0

        def drain_done() -> None:
            while waiting and not waiting[0][2]:
                n, frame, _ = waiting.popleft()
                finish(n, frame, None)

        def feed() -> Iterator[Any]:
            nonlocal count
            for n, frame in frames:
                count += 1
                waiting.append((n, frame, n not in done))
                if n in done:
                    drain_done()
                else:
                    yield frame

        for result in self._predict_stream(feed()):
            drain_done()
            n, frame, _ = waiting.popleft()
            if isinstance(result, BaseException):
                raise result
            finish(n, frame, result)
            drain_done()
        drain_done()
        return count

    # -- the run -------------------------------------------------------------------------------------------
    def execute(self) -> int:
        from tqdm import tqdm

        t_start = time.perf_counter()
        bar = tqdm(total=len(self.images), unit="img", disable=self.args.quiet or not self.images, desc="images")
        interrupted = False
        try:
            try:
                self._run_images(bar)
            finally:
                bar.close()
            taken = {p.name for _, p in self._image_jobs()}
            for kind, source in self.streams:
                self._run_stream(kind, source, taken)
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            written = self._finalize(interrupted=True)  # a crash keeps what was computed, then says where
            if written:
                print(f"isseg predict: stopped after {self.done + self.failed + self.skipped} of {self.total} "
                      f"input(s); what was done is in {', '.join(str(p) for p in written)} (--resume continues)",
                      file=sys.stderr)
            raise
        written = self._finalize(interrupted)
        if interrupted:
            where = ", ".join(str(p) for p in written) or "nothing was written (--no-json)"
            finished = self.done + self.failed + self.skipped
            print(f"isseg predict: interrupted after {finished} of {self.total} input(s); partial results in "
                  f"{where}; run the same command with --resume to finish", file=sys.stderr)
            return 130
        self._summary(time.perf_counter() - t_start)
        return 1 if self.failed else 0

    def _finalize(self, interrupted: bool) -> list[Path]:
        """Close the records (kept as ``.partial`` when interrupted) and write the COCO files from them."""
        if self.writer is None:
            return []
        records = self.writer.close(finalize=not interrupted)
        results, images = write_coco(self.out_dir, records, self.predictor.class_names)
        return [results, images, records]

    def _summary(self, wall: float) -> None:
        args = self.args
        skipped = f"; {self.skipped} already done (--resume)" if self.skipped else ""
        print(f"isseg predict: {self.done} input(s) processed, {self.failed} failed{skipped}; "
              f"{len(self.images)} image(s), {self.frames_total} video frame(s); {self.detections_total} "
              f"detection(s) >= {args.threshold}; output in {self.out_dir}")
        n_img = max(1, len(self.images) - self.skipped + self.frames_total)
        parts = ", ".join(f"{k} {1000 * v / n_img:.1f}" for k, v in self.stage_totals.items() if v > 0)
        device = f", {self.device}" if self.device else ""
        print(f"  model load {self.t_load:.2f} s ({self.predictor.backend}{device}); per image ms: {parts}; "
              f"wall {wall:.2f} s = {n_img / wall if wall else 0:.2f} images/s")
