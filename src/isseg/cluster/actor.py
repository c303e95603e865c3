"""The two stages of the Ray Data pipeline, and the only place the cluster code runs isseg's inference.

``decode_batch`` (a Ray Data task with GPU actors, else called by the actor itself): bytes of each input (local
file or fsspec URI) -> BGR uint8 image through the one decoder (:func:`isseg.sources.decode.decode_image`), or the
error of that input. ``PredictActor`` (a Ray Data actor, one ``Predictor`` each, loaded once): images -> one
``isseg.engine.records`` record each (a JSON string, so the rows stay plain Arrow strings), through the one
streaming engine (:meth:`isseg.stream.StreamEngine.process`).

Decoding and inference are those of ``isseg predict``, so a Ray run and ``isseg predict`` give identical
detections and the same one-line error for a bad image.

Fault injection, for the tests only: with ``$ISSEG_TEST_ACTOR_FAULTS`` set to a folder, an actor that can claim
(rename away) a file ``init-*`` there kills its own process with SIGKILL while it starts, and one that claims
``call-N-*`` kills itself at its N-th call, before answering it: the deaths of an out-of-memory kill, where and
when a test wants them. Unset (always, outside the tests), nothing is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from isseg.deploy.predictor import PredictorOptions
from isseg.sources.decode import decode_image, read_bytes
from isseg.sources.frames import Frame
from isseg.sources.inputs import Source


@dataclass(frozen=True)
class PredictorSpec:
    """Everything an actor needs to build its ``Predictor``; plain data so Ray can ship it to any node.

    ``source``: the model (path or registry name); ``options``: how it runs (``num_threads`` 0: the CPUs Ray
    gives the actor); ``masks`` and ``classes`` (indices to keep, None: all) as ``isseg predict``."""

    source: str
    options: PredictorOptions = PredictorOptions()
    masks: bool = True
    classes: tuple[int, ...] | None = None


def image_id_of(path: str) -> int | None:
    """COCO-style numeric file names (``000000000139.jpg``) give their image id; other names none."""
    stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    return int(stem) if stem.isdigit() else None


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Ray Data stage: decode each row's ``path``; a bad input keeps its row with ``error`` set."""
    images: list[np.ndarray] = []
    errors: list[str] = []
    started: list[float] = []
    for path in batch["path"]:
        started.append(time.time())
        try:
            images.append(decode_image(read_bytes(str(path)), str(path)))
            errors.append("")
        except (ValueError, OSError) as exc:
            images.append(np.zeros((1, 1, 3), np.uint8))
            errors.append(str(exc))
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


_COPY_PREFIX = "isseg-ray-model-"  # + the actor's pid + "-" + a random part


def sweep_dead_copies(root: str | None = None) -> list[Path]:
    """Remove the model copies (:func:`load_predictor`) of actor processes that are gone: an actor that Ray kills
    (SIGKILL, out of memory) cannot remove its own, and each is the model's size. -> the folders removed."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{_COPY_PREFIX}*-*"):
        pid = folder.name[len(_COPY_PREFIX):].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except OSError:  # alive, another user's
            continue
    return removed


def load_predictor(spec: PredictorSpec, files: dict[str, bytes] | None = None) -> tuple[Any, Any]:
    """-> (``isseg.Predictor`` for ``spec``, the temporary folder holding ``files`` (the model's bytes) or None:
    keep it as long as the predictor)."""
    from isseg.deploy.predictor import Predictor

    source = spec.source
    keep: Any = None
    if files:
        sweep_dead_copies()
        keep = tempfile.TemporaryDirectory(prefix=f"{_COPY_PREFIX}{os.getpid()}-")
        for name, data in files.items():
            Path(keep.name, name).write_bytes(data)
        source = str(Path(keep.name, Path(spec.source).name))
    try:
        predictor = Predictor(source, spec.options)
    except (ValueError, OSError, RuntimeError) as exc:  # name the user's file, not the actor's private copy
        raise type(exc)(str(exc).replace(source, spec.source)) from None
    return predictor, keep


FAULTS_ENV = "ISSEG_TEST_ACTOR_FAULTS"


def _injected_death(prefix: str) -> None:
    """Tests only (module docstring): SIGKILL this process if a fault file ``<prefix>*`` can be claimed."""
    folder = os.environ.get(FAULTS_ENV)
    if not folder or not os.path.isdir(folder):
        return
    for name in sorted(os.listdir(folder)):
        if name.startswith(prefix) and not name.endswith(".done"):
            try:  # a rename succeeds for one process only: each file is one death
                os.rename(os.path.join(folder, name), os.path.join(folder, f"{name}.{os.getpid()}.done"))
            except OSError:
                continue
            os.kill(os.getpid(), signal.SIGKILL)


class PredictActor:
    """Ray Data callable class: one ``Predictor`` per actor, threads from the CPUs Ray assigned to it."""

    def __init__(self, spec: PredictorSpec, files: Any = None) -> None:
        import ray

        _injected_death("init-")
        self.calls = 0
        from isseg.stream import StreamEngine, StreamOptions

        if files is not None and not isinstance(files, dict):
            files = ray.get(files)
        if not spec.options.num_threads:
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
            spec = replace(spec, options=replace(spec.options, num_threads=max(1, int(cpus))))
        self.spec = spec
        self.predictor, self._model_dir = load_predictor(spec, files)
        self.engine = StreamEngine(self.predictor, StreamOptions(output=None, masks=spec.masks,
                                                                 classes=spec.classes), log=lambda _: None)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch of rows (decoded by ``decode_batch``, or decoded here when they hold only ``index`` and
        ``path``) -> their records, in order (in throughput mode several in flight)."""
        self.calls += 1
        _injected_death(f"call-{self.calls}-")
        if "image" not in batch:
            batch = decode_batch(batch)
        paths = [str(p) for p in batch["path"]]
        frames = (Frame(Source("image", path), None, None if error else np.asarray(image),
                        ValueError(str(error)) if error else None)
                  for path, image, error in zip(paths, batch["image"], batch["error"]))
        out: list[str] = []
        done: list[float] = []
        for result in self.engine.process(frames):
            path = result.frame.source.location
            out.append(json.dumps(result.record(image_id_of(path), self.spec.masks), separators=(",", ":")))
            done.append(time.time())
        # wall-clock times of each row from its decode to its record: the steady rate, measured where the work is
        return {"index": batch["index"], "record": out, "started": batch["started"], "done": done}
