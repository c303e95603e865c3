"""``predict_ray``: batch inference over a large image collection on Ray Data, resumable and loss-free.

    input list (sorted) -> shards still to compute -> Ray Data: decode (task) -> Predictor (actor pool)
                        -> the driver collects records per shard and writes each shard once it is complete

The driver holds only the records of shards in progress (Ray Data streams blocks roughly in input order, so
few shards are open at a time) and writes the output folder itself, so the workers need no shared file system:
inputs are read by the workers (local paths on a single machine or a shared mount, fsspec URIs anywhere), the
model's files travel through Ray's object store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from isseg.atomic import atomic_write
from isseg.cluster.actor import PredictActor, PredictorSpec, decode_batch, load_predictor, model_files
from isseg.cluster.quiet import quiet_ray
from isseg.cluster.shards import ShardLayout
from isseg.deploy.predictor import PredictorOptions, backend_for
from isseg.sources.decode import is_uri
from isseg.sources.inputs import expand_inputs
from isseg.stream.options import class_indices

DEFAULT_SHARD_SIZE = 256
# Images per actor call in throughput mode. Each call streams its batch with 2 requests in flight; the batch's last
# image runs alone on one of the two streams. Two concurrent calls per actor (Ray Data's
# max_concurrent_calls_per_actor, each with its own AsyncInferQueue) would remove that tail, but they deadlocked
# in OpenVINO 2026.4 with 1-CPU actors (both threads stuck in start_async), so the tail is made small instead.
THROUGHPUT_BATCH = 16
# Ray's retries of the actor pool: an actor that dies with its process (an out-of-memory kill, a crash), starting
# or mid-batch, is restarted by Ray and its unfinished calls retried, this many times (its batch is redone); an
# actor that has used its restarts up while starting is replaced by Ray Data, as many times in a row. So at most
# START_UP_DEATHS deaths in a row while actors start, RETRIES + 1 deaths of one running actor: one more ends the
# run with one line (the shards written are kept) instead of looping. A Python exception while the actor starts
# (a model that cannot load) is no restart: Ray Data replaces the actor RETRIES times, then the run ends.
RETRIES = 3
START_UP_DEATHS = (RETRIES + 1) ** 2


def _require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RuntimeError("--ray needs Ray Data: pip install 'isseg[ray]'") from None
    return ray


def connect(address: str | None = "auto", num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` ("auto": the running one if any, else a new local one; "local": always
    a new local one). -> True when this call started Ray (the caller shuts it down)."""
    ray = _require_ray()
    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray runs its workers at nice 15 by default; a Ray started here does the work in those workers, so on a
    # machine shared with other jobs they compete like any other process (as `isseg predict` does)
    os.environ.setdefault("RAY_worker_niceness", "0")
    if address in (None, "", "local"):
        ray.init(num_cpus=num_cpus, **common)
        return True
    if address == "auto":
        try:
            ray.init(address="auto", **common)
        except ConnectionError:
            ray.init(num_cpus=num_cpus, **common)
        return True
    try:
        ray.init(address=address, **common)
    except ConnectionError as exc:
        raise RuntimeError(f"--ray {address}: cannot reach a Ray cluster there ({exc})") from None
    return True


def list_inputs(inputs: list[str], recursive: bool = False) -> tuple[list[str], list[str]]:
    """-> (sorted, de-duplicated image paths / URIs of ``inputs``, one error line per input that gave nothing).

    The list must be deterministic, because the shard layout (fixed-size chunks of it) is what makes a resumed
    run exact: the same inputs always give the same list in the same order, whatever the file system returns.
    Paths are kept as written (``photos/a.jpg`` stays relative), so the records name files as ``isseg predict``
    does. Videos, cameras and streams are refused: ``--ray`` processes image collections.
    """
    sources, errors = expand_inputs(inputs, recursive)
    lines = [f"{raw}: {problem}" for raw, problem in errors]
    lines += [f"{s.location}: --ray processes images; run videos, cameras and streams without --ray"
              for s in sources if s.kind != "image"]
    return sorted({s.location for s in sources if s.kind == "image"}), lines


def _settings(spec: PredictorSpec) -> dict[str, Any]:
    """What a resumed run must share with the first one (the model by its resolved path)."""
    source = spec.source
    if not is_uri(source) and Path(source).exists():
        source = str(Path(source).resolve())
    o = spec.options
    return {"model": source, "backend": o.backend, "threshold": o.threshold, "masks": spec.masks,
            "classes": None if spec.classes is None else list(spec.classes), "preset": o.preset,
            "precision": o.precision}


def class_names_of(spec: PredictorSpec) -> tuple[str, ...]:
    """The model's class list (a one-thread Predictor, loaded once here on the driver)."""
    options = PredictorOptions(backend=spec.options.backend, preset=spec.options.preset, num_threads=1)
    predictor, _ = load_predictor(PredictorSpec(spec.source, options))
    with predictor:
        return tuple(predictor.class_names)


def _checked_spec(model: str, mode: str, masks: bool, **options: Any) -> PredictorSpec:
    """The actors' :class:`PredictorSpec` after checking the model file and ``mode``; "auto" mode is throughput
    for OpenVINO (as ``isseg predict`` on a folder), else latency. ``options``: :class:`PredictorOptions` fields."""
    _check_model(model)
    if mode not in ("auto", "latency", "throughput"):
        raise ValueError(f"mode must be 'auto', 'latency' or 'throughput', got {mode!r}")
    if mode == "auto":
        mode = "throughput" if (options.get("backend") or backend_for(model)) == "openvino" else "latency"
    return PredictorSpec(model, PredictorOptions(mode=mode, **options), bool(masks))

def predict_ray(inputs: list[str] | str, model: str, output: str | os.PathLike, *, address: str | None = "auto",
                actors: int | None = None, cpus_per_actor: float | None = None, gpus_per_actor: float = 0,
                shard_size: int | None = None, batch_size: int | None = None, backend: str | None = None,
                device: str | None = None, threshold: float = 0.5, precision: str | None = None,
                preset: str | None = None, masks: bool = True, classes: str | list | None = None,
                recursive: bool = False, coco: bool = False, ship_model: bool = True, num_cpus: int | None = None,
                progress: bool = False, mode: str = "auto") -> dict[str, Any]:
    """Segment every image of ``inputs`` on Ray, writing record shards to ``output``; resumes a run there.

    Args:
        inputs: folders, globs, manifest files, image files, fsspec URIs (see :mod:`isseg.sources.inputs`).
        model: an exported model (.xml / .onnx) or a checkpoint / registry name, as ``isseg.Predictor``.
        address: Ray cluster ("auto": the running one, else a local one started here; "local"; "host:port";
            "ray://host:10001").
        actors: size of the Predictor actor pool (default: the cluster's CPUs / ``cpus_per_actor``, or its GPUs
            / ``gpus_per_actor``).
        cpus_per_actor: CPUs Ray reserves for each actor; its Predictor runs that many threads (default 2, or 1
            on a 1-CPU cluster).
        gpus_per_actor: GPUs for each actor (use with ``device="cuda"`` / ``"GPU"``).
        shard_size: images per shard (default 256; a resumed run keeps its own).
        batch_size: images per Ray Data batch (default: 1 in latency mode, which balances the actors best;
            16 in throughput mode (at most a block: shards then still complete one after the other), whose actors
            stream each batch with several requests in flight: at a batch's end one request runs alone, so the
            larger the batch the less of that idle tail).
        mode: "auto" (throughput for OpenVINO, as ``isseg predict`` on a folder), "latency" or "throughput".
        threshold, masks, classes, backend, device, precision, preset: as ``isseg predict``.
        coco: also write ``results.json`` (COCO results of the images with a numeric image id).
        ship_model: send a local model's files to the actors through the object store (nodes need no copy).
        num_cpus: CPUs of a local Ray started here (default: all).

    Returns: a summary: images, errors, detections, shards, how many were computed now / found done, seconds
    (Ray start, first result, total), images per second of this run, and the output paths.
    """
    t0 = time.perf_counter()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    paths, input_errors = list_inputs([str(i) for i in inputs], recursive)
    if not paths:
        raise ValueError("nothing to process: " + ("; ".join(input_errors) or "no inputs"))
    spec = _checked_spec(str(model), mode, masks, backend=backend, device=device, threshold=float(threshold),
                         precision=precision, preset=preset)
    names = class_names_of(spec) if coco or (classes is not None and classes != "") else ()
    spec = replace(spec, classes=class_indices(classes, names) if names else None)
    layout = ShardLayout.open(output, paths, shard_size, _settings(spec), DEFAULT_SHARD_SIZE)
    todo = layout.pending()
    summary: dict[str, Any] = {"output": str(layout.folder), "input_errors": input_errors,
                               "shards_done_before": layout.count - len(todo), "shards_computed": 0,
                               "images_computed": 0}
    t_ray = t_first = t_last = None
    started = False
    if todo:
        ray = _require_ray()
        with quiet_ray():  # Ray's lines that mean nothing to the user (isseg.cluster.quiet)
            started = connect(address, num_cpus)
            t_ray = time.perf_counter() - t0
            try:
                t_first, t_last = _run(ray, layout, todo, spec, summary, actors, cpus_per_actor, gpus_per_actor,
                                       batch_size, ship_model, progress)
            finally:
                if started:
                    ray.shutdown()
    t_pipeline = time.perf_counter() - t0
    summary.update(layout.summarize())
    if coco:
        summary.update(_write_coco(layout, names))
    wall = time.perf_counter() - t0
    n = summary["images_computed"]
    summary["seconds"] = {"ray_start": t_ray, "first_image_started": summary.pop("seconds_first_image_started", None),
                          "first_result": t_first, "last_result": t_last, "pipeline": t_pipeline, "total": wall}
    summary["images_per_s"] = n / t_pipeline if n and t_pipeline else 0.0
    summary.setdefault("steady_images_per_s", 0.0)
    atomic_write(layout.folder / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _write_coco(layout: ShardLayout, class_names: tuple[str, ...]) -> dict[str, Any]:
    """``results.json`` and ``images.json`` from every record with an image id, as ``isseg predict`` writes them
    (category ids from the model's class list: COCO's ids for the COCO classes)."""
    from isseg.engine.records import write_coco_files

    records = list(layout.records())
    with_id = [r for r in records if r.get("image_id") is not None]
    results, _ = write_coco_files(with_id, class_names, layout.folder)
    count = sum(len(r["detections"]) for r in with_id if r.get("error") is None)
    return {"results_file": str(results), "coco_results": count, "images_without_id": len(records) - len(with_id)}


def _check_model(source: str) -> None:
    """A missing local model fails here in one line, not in every actor."""
    path = Path(source)
    if is_uri(source) or path.suffix.lower() not in (".xml", ".onnx", ".pth", ".pt", ".pkl", ".bin"):
        return  # a registry name: the Predictor resolves it
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {source}")
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise FileNotFoundError(f"weights of the IR not found: {path.with_suffix('.bin')}")


def root_cause(exc: BaseException) -> str:
    """The user-facing line of an error raised inside Ray (a task's or an actor's), without Ray's traceback: the
    last ``SomeError: message`` line of the error chain's texts."""
    import re

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        lines = [line.strip() for line in str(seen).splitlines()]
        found = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): \S", line)]
        if found:
            return found[-1]
        seen = getattr(seen, "cause", None) or seen.__cause__ or seen.__context__
    return type(exc).__name__


def _pool_size(ray: Any, actors: int | None, cpus: float | None, gpus: float) -> tuple[int, float]:
    resources = ray.cluster_resources()
    total_cpus = float(resources.get("CPU", 0))
    if cpus is None:
        cpus = 2.0 if total_cpus >= 2 else max(1.0, total_cpus)
    if actors is None:
        if gpus:
            actors = int(float(resources.get("GPU", 0)) // gpus)
        else:
            actors = int(total_cpus // cpus)
    if actors < 1 or actors * cpus > total_cpus or (gpus and actors * gpus > float(resources.get("GPU", 0))):
        raise ValueError(f"--actors {actors} x {cpus:g} CPU{f' x {gpus:g} GPU' if gpus else ''} does not fit the "
                         f"Ray cluster ({total_cpus:g} CPUs, {resources.get('GPU', 0):g} GPUs)")
    return int(actors), float(cpus)


def _rows(ds: Any) -> Any:
    """The pipeline's output rows, each block as soon as it is done (``iter_rows`` prefetches a block ahead,
    which holds every finished record back until the next block is done too: with a few large blocks, no
    shard would be written until the end)."""
    for batch in ds.iter_batches(batch_size=None, prefetch_batches=0):
        for j in range(len(batch["index"])):
            yield {key: batch[key][j] for key in ("index", "record", "started", "done")}


def _dataset(ray: Any, rows: list[dict[str, Any]], spec: PredictorSpec, actors: int, cpus: float, gpus: float,
             batch_size: int, block: int, ship_model: bool) -> Any:
    """The Ray Data pipeline over ``rows``: decode tasks, then the Predictor actor pool, both retried within
    :data:`RETRIES` (an actor that dies, at start-up or mid-batch, is replaced and its batch redone)."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.max_consecutive_actor_init_deaths = RETRIES  # Ray Data's default, 0, ends the run at the first one
    ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / block))
    restarts = {"max_restarts": RETRIES, "max_task_retries": RETRIES}
    files = model_files(spec.source) if ship_model else None
    kwargs = {"spec": spec, "files": ray.put(files) if files else None}
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for an actor pool's restarts yet and warns about the generic ones (its
        # default is unbounded restarts): our choice, not the user's concern
        warnings.filterwarnings("ignore", message=".*`ray_remote_args` is deprecated")
        # On CPUs the actor decodes its rows itself (in its own process: no decoded image through the object
        # store; a separate decode stage needing every CPU the actor holds would wait for ever, and Ray Data fuses
        # the two only for equal remote arguments, which a task cannot take). With GPUs, decode runs as CPU
        # tasks, so a GPU actor does not wait on JPEG decoding (Ray's default for tasks: 3 retries).
        if gpus:
            ds = ds.map_batches(decode_batch, batch_size=batch_size, num_cpus=1)
        return ds.map_batches(PredictActor, fn_constructor_kwargs=kwargs, batch_size=batch_size,
                              compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus, num_gpus=gpus or None,
                              **restarts)


def _run(ray: Any, layout: ShardLayout, todo: list[int], spec: PredictorSpec, summary: dict[str, Any],
         actors: int | None, cpus: float | None, gpus: float, batch_size: int | None, ship_model: bool,
         progress: bool) -> tuple[float | None, float | None]:
    """Run the pipeline over the pending shards; -> seconds from the start to the first and the last result."""
    t0 = time.perf_counter()
    actors, cpus = _pool_size(ray, actors, cpus, gpus)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    rows = [{"index": i, "path": layout.paths[i]} for k in todo for i in layout.chunk(k)]
    # blocks small enough to keep every actor busy and shards completing in order, large enough to be cheap
    block = max(1, min(layout.shard_size, math.ceil(len(rows) / (4 * actors)), 64))
    batch_size = batch_size or (min(THROUGHPUT_BATCH, block) if spec.options.mode == "throughput" else 1)
    ds = _dataset(ray, rows, spec, actors, cpus, gpus, batch_size, block, ship_model)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), unit="img", desc="images", file=sys.stderr)
    collector = _Collector(layout, todo, summary, bar)
    wall0 = time.time()
    t_first = t_last = None
    rows_iter = _rows(ds)
    while True:
        try:
            row = next(rows_iter)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - Ray wraps the workers' errors: one line; written shards are kept
            raise RuntimeError(f"the Ray pipeline failed ({root_cause(exc)}); the shards written are kept: run "
                               "again to resume") from None
        t_last = time.perf_counter() - t0
        t_first = t_last if t_first is None else t_first
        collector.add(row)
    if bar is not None:
        bar.close()
    collector.finish()
    summary["pool"] = {"actors": actors, "cpus_per_actor": cpus, "gpus_per_actor": gpus, "mode": spec.options.mode,
                       "batch_size": batch_size, "retries": RETRIES}
    if collector.first_start is not None:
        # from the first image's start to the last one's end in the actors: actor start-up and model loading excluded
        summary["steady_images_per_s"] = len(rows) / max(1e-9, collector.last_done - collector.first_start)
        summary["seconds_first_image_started"] = collector.first_start - wall0
    return t_first, t_last


class _Collector:
    """The driver's side: records by shard; a shard is written once all its images are in. A record that
    arrives twice (a batch redone after an actor died having answered part of it) is counted and ignored, so
    each image is written exactly once."""

    def __init__(self, layout: ShardLayout, todo: list[int], summary: dict[str, Any], bar: Any) -> None:
        self.layout, self.summary, self.bar = layout, summary, bar
        self.shard_of = {i: k for k in todo for i in layout.chunk(k)}
        self.open: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.written: set[int] = set()
        self.first_start: float | None = None
        self.last_done: float | None = None
        summary["duplicates_ignored"] = 0

    def add(self, row: dict[str, Any]) -> None:
        import json

        i = int(row["index"])
        k = self.shard_of[i]
        if k in self.written or i in self.open[k]:
            self.summary["duplicates_ignored"] += 1
            return
        self.first_start = row["started"] if self.first_start is None else min(self.first_start, row["started"])
        self.last_done = row["done"] if self.last_done is None else max(self.last_done, row["done"])
        self.open[k][i] = json.loads(row["record"])
        if self.bar is not None:
            self.bar.update(1)
        if len(self.open[k]) == len(self.layout.chunk(k)):
            done = self.open.pop(k)
            self.layout.write(k, [done[j] for j in self.layout.chunk(k)])
            self.written.add(k)
            self.summary["shards_computed"] += 1
            self.summary["images_computed"] += len(done)

    def finish(self) -> None:
        missing = sum(len(self.layout.chunk(k)) - len(v) for k, v in self.open.items() if v)
        if missing:
            raise RuntimeError(f"the pipeline returned no record for {missing} input(s); run again to complete them")
