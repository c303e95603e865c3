"""OpenVINO backend: our IR, or an Open Model Zoo IR with the same contract (instance-segmentation-security-*).

The compiled model takes the pre-processed float32 [1, 3, H, W] input (fixed for a "fit" export, dynamic for a
"shortest_edge" one). ``infer`` is synchronous; ``stream`` keeps several requests in flight
(``AsyncInferQueue``) and yields results in input order. All runtimes share one ``ov.Core``
(:func:`isseg.deploy.ov_core.shared_core`: why it must be shared is told there).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from isseg.deploy.contract import OUTPUT_NAMES, read_metadata
from isseg.deploy.ov_core import shared_core
from isseg.deploy.runtime import Outputs, StreamItem, stream_sequentially

_END = object()  # the end of a stream's items

# device precision names accepted for ``precision``
_PRECISIONS = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}


def rt_value(model: Any, section: str, key: str) -> str | None:
    """The string at ``[section, key]`` of an OpenVINO model's runtime info (where the IR keeps the deploy
    contract's metadata), None when absent."""
    try:
        return str(model.get_rt_info([section, key]).astype(str))
    except RuntimeError:
        return None


def _output_index(model: Any) -> dict[str, int]:
    """Output positions of labels / boxes / masks: by name, else by rank (1, 2, 3) as Model API does."""
    found: dict[str, int] = {}
    for i, out in enumerate(model.outputs):
        names = out.get_names()
        for key in OUTPUT_NAMES:
            if key in names:
                found[key] = i
    if len(found) == 3:
        return found
    by_rank = {1: "labels", 2: "boxes", 3: "masks"}
    found = {}
    for i, out in enumerate(model.outputs):
        rank = out.get_partial_shape().rank.get_length()
        if rank in by_rank:
            found[by_rank[rank]] = i
    if len(found) != 3:
        raise ValueError("the model does not have the seed's outputs (labels [N], boxes [N,5], masks [N,28,28])")
    return found


def read_ir(path: str | Path) -> Any:
    """``ov.Model`` of an IR (``.xml`` + its ``.bin``) or ONNX file, read by the shared Core; a missing or
    unreadable file is one error that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise FileNotFoundError(f"weights of the IR not found: {path.with_suffix('.bin')}")
    try:
        return shared_core().read_model(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a model OpenVINO can read ({openvino_reason(exc)})") from None
    except UnicodeDecodeError:  # OpenVINO's reader hands a damaged name or rt_info value to Python undecoded
        raise ValueError(f"{path}: not a model OpenVINO can read (text that is not valid UTF-8: a damaged IR?)") \
            from None


def openvino_reason(exc: BaseException) -> str:
    """The reason in an OpenVINO exception, without its "Exception from <file>:<line>:" and "Check '...' failed
    at <file>:<line>:" headers (which name OpenVINO's sources, not the user's problem)."""
    lines = []
    for line in str(exc).splitlines():
        line = re.sub(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)\s*", "", line.strip())
        if line:
            lines.append(line)
    return "; ".join(lines) or type(exc).__name__


def _quantized(model: Any) -> bool:
    """Whether an ``ov.Model`` is quantized (NNCF's FakeQuantize nodes): its convolutions run in int8 whatever
    the inference precision, which only sets the rest (where OpenVINO's default measured no slower)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


class OpenVINORuntime:
    name = "openvino"

    def __init__(self, path: str | Path, device: str = "CPU", precision: str | None = None,
                 mode: str = "latency", num_requests: int = 0, num_threads: int = 0) -> None:
        path = Path(path)
        core = shared_core()
        model = read_ir(path)
        if len(model.inputs) != 1:
            raise ValueError(f"{path}: expected one image input, got {len(model.inputs)} inputs")
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or len(shape) != 4:
            raise ValueError(f"{path}: expected a [1, 3, H, W] image input, got {shape}")
        static = None if shape[2].is_dynamic or shape[3].is_dynamic else (shape[2].get_length(),
                                                                            shape[3].get_length())
        try:
            self.meta = read_metadata(lambda section, key: rt_value(model, section, key), static, str(path))
        except UnicodeDecodeError:
            raise ValueError(f"{path}: its rt_info metadata is not valid UTF-8 (a damaged IR?)") from None
        self.outputs = _output_index(model)
        device = device.upper()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT" if mode == "throughput" else "LATENCY"}
        if precision is not None:
            if precision not in _PRECISIONS:
                raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(_PRECISIONS)}")
            config["INFERENCE_PRECISION_HINT"] = _PRECISIONS[precision]
        elif device == "CPU" and not _quantized(model):
            from isseg.deploy.rate_probe import faster_precision

            try:
                choice = faster_precision(device)
            except RuntimeError:  # the probe could not run here: OpenVINO's default, as without it
                choice = None
            if choice is not None and choice.precision != choice.openvino_default:  # the default is slower here
                config["INFERENCE_PRECISION_HINT"] = choice.precision
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        if num_requests and mode == "throughput":
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = int(num_requests)
        self.device = device
        self.core = core
        try:
            self.compiled = core.compile_model(model, device, config)
        except RuntimeError:
            if device.split(".")[0].split(":")[0] not in {d.split(".")[0] for d in core.available_devices} | {
                    "AUTO", "MULTI", "HETERO"}:
                raise ValueError(f"unknown OpenVINO device {device!r}; available: {core.available_devices}") from None
            raise
        self.request = self.compiled.create_infer_request()
        self._idle_queues: list[Any] = []  # AsyncInferQueues of finished streams, for the next ones
        self._queues_lock = threading.Lock()
        self.num_requests = int(num_requests) or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() \
            if device.startswith("CPU") else None

    def _unpack(self, request: Any) -> Outputs:
        return tuple(request.get_output_tensor(self.outputs[k]).data.copy() for k in OUTPUT_NAMES)  # type: ignore

    def infer(self, x: np.ndarray) -> Outputs:
        """float32 [1, 3, H, W] input -> (labels, boxes, masks) as the network gives them."""
        self.request.infer({0: x})
        return self._unpack(self.request)

    def stream(self, items: Iterable[Any], prepare: Callable[[Any], tuple[np.ndarray, Any]]) -> Iterator[StreamItem]:
        """Asynchronous inference of ``prepare(item) -> (input, meta)`` over ``items`` with up to
        ``num_requests`` in flight; yields ``(meta, outputs, error)`` in input order (``prepare`` errors
        are passed through as ``error`` without stopping the stream). With one request (latency mode) nothing
        overlaps anyway, so the stream runs on the synchronous request: no second request's buffers."""
        if self.num_requests <= 1:
            yield from stream_sequentially(self, items, prepare)
            return
        queue = self._take_queue()
        done: dict[int, Any] = {}

        def callback(request: Any, idx: int) -> None:
            try:  # an exception must not escape into OpenVINO's thread
                done[idx] = self._unpack(request)
            except Exception as exc:  # noqa: BLE001
                done[idx] = exc

        def emit(idx: int) -> tuple[Any, Any, Exception | None]:
            meta, err = pending.pop(idx)
            out = done.pop(idx)
            if isinstance(out, Exception):
                return meta, None, out
            return meta, out, err

        queue.set_callback(callback)
        pending: dict[int, tuple[Any, Exception | None]] = {}
        next_out = 0
        items = iter(items)
        try:
            for idx in itertools.count():
                # The next item is taken only once a request is free: a live source's newest frame is read when
                # it can be inferred at once, not one inference earlier (which would double its latency).
                queue.get_idle_request_id()
                while next_out in done:
                    yield emit(next_out)
                    next_out += 1
                item = next(items, _END)
                if item is _END:
                    break
                try:
                    x, meta = prepare(item)
                except Exception as exc:  # noqa: BLE001 - reported to the caller, the stream goes on
                    pending[idx] = (item, exc)
                    done[idx] = None
                else:
                    pending[idx] = (meta, None)
                    queue.start_async({0: x}, idx)
            queue.wait_all()
            while next_out in done:
                yield emit(next_out)
                next_out += 1
        finally:
            queue.wait_all()  # never reuse or destroy the queue with requests in flight (early exit, errors)
            with self._queues_lock:
                self._idle_queues.append(queue)

    def _take_queue(self) -> Any:
        """An idle ``AsyncInferQueue`` of an earlier stream, else a new one. Its infer requests keep their
        memory between streams: a new queue per call (per ``Predictor.predict`` of a tiled frame) allocated
        and freed the requests' buffers every frame (docs/tiling.md, "Memory since compact masks")."""
        with self._queues_lock:
            if self._idle_queues:
                return self._idle_queues.pop()
        import openvino as ov

        return ov.AsyncInferQueue(self.compiled, max(1, self.num_requests))
