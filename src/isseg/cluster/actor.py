"""The two stages of the Ray Data pipeline, and the only place the cluster code calls isseg's ``Predictor``.

``decode_batch`` (a Ray Data task): bytes of each input (local file or fsspec URI) -> BGR uint8 image, or the
error of that input. ``PredictActor`` (a Ray Data actor, one ``Predictor`` each, loaded once): image ->
one ``isseg.engine.records`` record (a JSON string, so the rows stay plain Arrow strings).

Decoding is the same ``cv2.IMREAD_COLOR`` decode as ``isseg predict``'s ``cv2.imread`` and the actor calls the
same ``Predictor.predict_stream``, so a Ray run and ``isseg predict`` give identical detections.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isseg.cluster.inputs import read_bytes


@dataclass(frozen=True)
class PredictorSpec:
    """Everything an actor needs to build its ``Predictor``; plain data so Ray can ship it to any node."""

    source: str
    backend: str | None = None
    device: str | None = None
    threshold: float = 0.0
    precision: str | None = None
    preset: str | None = None
    masks: bool = True
    classes: tuple[int, ...] | None = None  # class indices to keep (None: all)
    num_threads: int = 0  # 0: the CPUs Ray gives the actor
    mode: str = "latency"  # OpenVINO: "throughput" streams each batch with several requests in flight


def image_id_of(path: str) -> int | None:
    """COCO-style numeric file names (``000000000139.jpg``) give their image id; other names none."""
    stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    return int(stem) if stem.isdigit() else None


def decode(path: str) -> np.ndarray:
    """One input as a BGR uint8 image; ValueError / OSError name the file."""
    import cv2

    data = read_bytes(path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read (corrupt or unsupported format)")
    return image


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Ray Data stage: decode each row's ``path``; a bad input keeps its row with ``error`` set."""
    images: list[np.ndarray] = []
    errors: list[str] = []
    started: list[float] = []
    for path in batch["path"]:
        started.append(time.time())
        try:
            images.append(decode(str(path)))
            errors.append("")
        except ValueError as exc:
            images.append(np.zeros((1, 1, 3), np.uint8))
            errors.append(str(exc))
        except OSError as exc:
            images.append(np.zeros((1, 1, 3), np.uint8))
            errors.append(f"{path}: {exc.strerror or exc}")
    return {"index": batch["index"], "path": batch["path"], "image": images, "error": errors, "started": started}


def model_files(source: str) -> dict[str, bytes] | None:
    """The bytes of a local model (an IR's .xml + .bin, an .onnx, a checkpoint), shipped to the actors through
    Ray's object store so that nodes without the file (or a shared file system) can load it; None for a
    registry name or a path that is not a local file."""
    path = Path(source)
    if not path.is_file():
        return None
    files = {path.name: path.read_bytes()}
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        files[path.with_suffix(".bin").name] = path.with_suffix(".bin").read_bytes()
    return files


def load_predictor(spec: PredictorSpec, files: dict[str, bytes] | None = None) -> tuple[Any, Any]:
    """-> (``isseg.Predictor`` for ``spec``, the temporary folder holding ``files`` (the model's bytes) or None:
    keep it as long as the predictor)."""
    from isseg.deploy.predictor import Predictor

    source = spec.source
    keep: Any = None
    if files:
        keep = tempfile.TemporaryDirectory(prefix="isseg-ray-model-")
        for name, data in files.items():
            Path(keep.name, name).write_bytes(data)
        source = str(Path(keep.name, Path(spec.source).name))
    try:
        predictor = Predictor(source, backend=spec.backend, device=spec.device, threshold=spec.threshold,
                              precision=spec.precision, preset=spec.preset, num_threads=spec.num_threads,
                              mode=spec.mode)
    except (ValueError, OSError, RuntimeError) as exc:  # name the user's file, not the actor's private copy
        raise type(exc)(str(exc).replace(source, spec.source)) from None
    return predictor, keep


def class_names_of(predictor: Any) -> tuple[str, ...]:
    return tuple(predictor.class_names)


def detections_to_record(det: Any, path: str, spec: PredictorSpec) -> dict[str, Any]:
    """One image's detections -> its record (the filter on ``spec.classes`` applied, as ``isseg predict
    --classes``)."""
    from isseg.engine.records import detections_record

    if spec.classes is not None:
        det = det.filter(np.isin(det.labels, list(spec.classes)))
    return detections_record(det, path, image_id_of(path), masks=spec.masks)


class PredictActor:
    """Ray Data callable class: one ``Predictor`` per actor, threads from the CPUs Ray assigned to it."""

    def __init__(self, spec: dict[str, Any], files: Any = None) -> None:
        import ray

        if files is not None and not isinstance(files, dict):
            files = ray.get(files)
        threads = int(spec.get("num_threads") or 0)
        if not threads:
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
            threads = max(1, int(cpus))
        spec = dict(spec, num_threads=threads)
        if spec.get("classes") is not None:
            spec["classes"] = tuple(spec["classes"])
        self.spec = PredictorSpec(**spec)
        self.predictor, self._model_dir = load_predictor(self.spec, files)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from isseg.engine.records import error_record

        out: list[str] = []
        done: list[float] = []
        paths = [str(p) for p in batch["path"]]
        good = [i for i, error in enumerate(batch["error"]) if not error]
        results = self._detect([np.asarray(batch["image"][i]) for i in good])
        for i, path in enumerate(paths):
            if batch["error"][i]:
                rec = error_record(path, str(batch["error"][i]), image_id_of(path))
            else:
                try:
                    det = next(results)
                    if isinstance(det, BaseException):
                        raise det
                    rec = detections_to_record(det, path, self.spec)
                except (ValueError, OSError, RuntimeError) as exc:
                    rec = error_record(path, f"{path}: {exc}" if path not in str(exc) else str(exc),
                                       image_id_of(path))
            out.append(json.dumps(rec, separators=(",", ":")))
            done.append(time.time())
        # wall-clock times of each row from its decode to its record: the steady rate, measured where the work is
        return {"index": batch["index"], "record": out, "started": batch["started"], "done": done}

    def _detect(self, images: list[np.ndarray]) -> Any:
        """Detections (or the error) of each image, in order, as ``isseg predict`` computes them: in throughput
        mode several requests in flight, in latency mode one after the other."""
        return self.predictor.predict_stream(images, errors="return", masks=self.spec.masks)


def spec_dict(spec: PredictorSpec) -> dict[str, Any]:
    d = asdict(spec)
    if d["classes"] is not None:
        d["classes"] = list(d["classes"])
    return d
