"""The models a server serves, with their admission control.

- :class:`ContractModel`: the exported network as it is (``image`` f32 [1,3,H,W] -> ``labels``/``boxes``/``masks``),
  the way OpenVINO Model Server serves it, on OpenVINO's ``AsyncInferQueue`` (callbacks resolve asyncio futures,
  nothing blocks the event loop); its metadata carries the IR's ``rt_info`` so Model API configures itself.
- :class:`DetectionsModel`: an encoded image (JPEG/PNG bytes) in, detections at the image's resolution out; a pool
  of Predictors, each used by one worker thread at a time.

Every model admits at most ``max_queue`` requests (waiting + running); one more is refused at once with 503 and
``Retry-After`` instead of queueing without bound, and a request that waits longer than ``timeout_s`` gets 504
(its work still finishes, and only then frees its place, so memory stays bounded).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from isseg.serve import backends
from isseg.serve.metrics import Metrics
from isseg.serve.protocol import InferRequest, ProtocolError

_OV_TO_V2 = {"f32": "FP32", "f16": "FP16", "f64": "FP64", "i64": "INT64", "i32": "INT32", "i16": "INT16",
             "i8": "INT8", "u8": "UINT8", "u16": "UINT16", "u32": "UINT32", "u64": "UINT64", "boolean": "BOOL"}


@dataclass
class ModelSettings:
    """Per-model concurrency: ``workers`` inferences at once, ``max_queue`` admitted (>= workers), ``timeout_s``
    of one request (0: none)."""

    workers: int = 1
    max_queue: int = 8
    timeout_s: float = 60.0
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_queue < self.workers:
            raise ValueError(f"max_queue ({self.max_queue}) must be >= workers ({self.workers})")
        if self.timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {self.timeout_s}")


@dataclass
class ServeSettings:
    """Server-wide limits and the defaults of every model (``models`` overrides them by model name)."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 50_000_000
    threshold: float = 0.5
    default: ModelSettings = field(default_factory=ModelSettings)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_model(self, name: str) -> ModelSettings:
        return replace(self.default, **self.models.get(name, {}))


# ------------------------------------------------------------------------------------------------ images
def decode_image(data: bytes, max_pixels: int, field_name: str = "image") -> np.ndarray:
    """JPEG/PNG/... bytes -> HxWx3 uint8 BGR; 400 for anything that is not an image, 413 for too many pixels
    (checked from the header, before decoding, so a small file cannot expand into gigabytes)."""
    import cv2
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ProtocolError(400, f"{field_name}: empty; expected the bytes of a JPEG/PNG/BMP/TIFF/WebP image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError):
        w = h = 0  # let OpenCV decide (formats PIL does not know)
    except Image.DecompressionBombError:
        w = h = max_pixels + 1
    if w * h > max_pixels:
        raise ProtocolError(413, f"{field_name}: {w}x{h} pixels is more than the limit of {max_pixels}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ProtocolError(400, f"{field_name}: {len(data)} bytes that are not an image OpenCV can decode; "
                                 "expected JPEG/PNG/BMP/TIFF/WebP bytes")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ProtocolError(413, f"{field_name}: {image.shape[1]}x{image.shape[0]} pixels is more than the "
                                 f"limit of {max_pixels}")
    return image


# ------------------------------------------------------------------------------------------------ base
class ServedModel:
    """A named model with v2 metadata, an admission gate and ``async infer``. Subclasses do the work."""

    kind = "model"
    platform = "isseg"
    request_level_binary = True  # honour the request's binary_data_output (Triton's behaviour)
    outputs_default: tuple[str, ...] | None = None  # the outputs of a request that names none (None: all)

    def __init__(self, name: str, settings: ModelSettings, version: str = "1") -> None:
        self.name = name
        self.version = version
        self.settings = settings
        self.ready = False
        self.metrics: Metrics | None = None
        self._admitted = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    # ------------------------------------------------------------------------------------- admission
    @property
    def queue_depth(self) -> int:
        return self._admitted

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.settings.max_queue:
                if self.metrics:
                    self.metrics.rejected.labels(self.name).inc()
                raise ProtocolError(503, f"model '{self.name}' is busy: {self._admitted} requests admitted, the "
                                         f"limit is {self.settings.max_queue}; retry later",
                                    {"Retry-After": str(self.settings.retry_after_s)})
            self._admitted += 1
            if self.metrics:
                self.metrics.queue_depth.labels(self.name).set(self._admitted)

    def _release(self, *_: Any) -> None:
        with self._lock:
            self._admitted -= 1
            if self.metrics:
                self.metrics.queue_depth.labels(self.name).set(self._admitted)
            self._idle.notify_all()

    async def run(self, work: Callable[[], asyncio.Future]) -> Any:
        """Admit (or 503), start ``work()`` and wait for it up to the timeout (504); the place is freed when the
        work really ends, not when the client stops waiting."""
        self._admit()
        try:
            fut = work()
        except BaseException:
            self._release()
            raise
        fut.add_done_callback(self._release)
        timeout = self.settings.timeout_s or None
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            if self.metrics:
                self.metrics.errors.labels(self.name, "timeout").inc()
            raise ProtocolError(504, f"model '{self.name}': no answer within the request timeout of "
                                     f"{self.settings.timeout_s:g} s") from None

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until no request is admitted (shutdown); False if some are still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._admitted:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # ---------------------------------------------------------------------------------------- protocol
    def metadata(self) -> dict[str, Any]:
        raise NotImplementedError

    async def infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """-> (output tensors by name, response parameters)."""
        raise NotImplementedError

    def close(self) -> None:
        self.ready = False


def _input(request: InferRequest, name: str, model: str) -> Any:
    if name not in request.inputs:
        raise ProtocolError(400, f"model '{model}' has input '{name}'; the request has "
                                 f"{', '.join(repr(k) for k in request.inputs)}")
    extra = [k for k in request.inputs if k != name]
    if extra:
        raise ProtocolError(400, f"model '{model}' has no input {extra[0]!r} (its only input is '{name}')")
    return request.inputs[name]


# ------------------------------------------------------------------------------------------------ contract
def _plain_rt_info(value: Any) -> Any:
    """OpenVINO rt_info (RTMap / dict of OVAny) -> nested dict of str, as OpenVINO Model Server returns it."""
    if hasattr(value, "keys"):
        keys = list(value.keys())  # RTMap is not iterable like a dict
        return {str(k): _plain_rt_info(value[k]) for k in keys}
    if hasattr(value, "astype"):
        inner = getattr(value, "value", None)
        if isinstance(inner, dict):
            return _plain_rt_info(inner)
        try:
            return str(value.astype(str))
        except (RuntimeError, TypeError):
            return str(inner)
    return str(value)


def _onnx_rt_info(path: Path) -> dict[str, Any]:
    """rt_info of an ONNX file from its metadata (``"model_info <key>"`` -> {"model_info": {key: value}})."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in proto.metadata_props:
        section, _, key = prop.key.partition(" ")
        if key:
            out.setdefault(section, {})[key] = prop.value
    return out


class ContractModel(ServedModel):
    """The exported network served as it is, like OpenVINO Model Server (KServe v2 + rt_info in metadata)."""

    kind = "contract"
    platform = "OpenVINO"
    # Outputs go back binary only when asked for by name: Model API's OVMSAdapter sends binary_data_output but its
    # MaskRCNN post-processing writes into the arrays, which tritonclient makes read-only from binary data.
    request_level_binary = False

    def __init__(self, name: str, path: str | Path, settings: ModelSettings, device: str = "CPU",
                 precision: str | None = None,
                 preprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__(name, settings)
        self._preprocess = preprocess  # image -> network input, e.g. the Predictor's own (see _embedded_preprocess)
        import openvino as ov

        from isseg.deploy.runtime_openvino import read_ir, shared_core

        path = Path(path)
        core = shared_core()
        model = read_ir(path)
        self.rt_info = _onnx_rt_info(path) if path.suffix == ".onnx" else _plain_rt_info(model.get_rt_info())
        self.inputs = [self._tensor_meta(p) for p in model.inputs]
        self.outputs = [self._tensor_meta(p) for p in model.outputs]
        for meta in self.inputs:
            if any(d < 0 for d in meta["shape"]):
                raise ValueError(f"{path}: input '{meta['name']}' has a dynamic shape {meta['shape']}; "
                                 "export with a fixed input size")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT" if settings.workers > 1 else "LATENCY"}
        if settings.workers > 1:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = settings.workers
        if precision:
            config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "fp16": "f16"}.get(precision, precision)
        self.path = path
        self.device = device
        self.compiled = core.compile_model(model, device, config)
        self._queue = ov.AsyncInferQueue(self.compiled, settings.workers)
        self._queue.set_callback(self._done)
        # one thread starts the requests: start_async waits there (never on the event loop) while all are busy
        self._starter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"isseg-{name}")
        self.ready = True

    @staticmethod
    def _tensor_meta(port: Any) -> dict[str, Any]:
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else -1 for d in shape]
        return {"name": port.any_name, "datatype": _OV_TO_V2.get(port.get_element_type().get_type_name(), "FP32"),
                "shape": dims}

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": self.inputs, "outputs": self.outputs, "rt_info": self.rt_info}

    def _done(self, request: Any, userdata: tuple[asyncio.AbstractEventLoop, asyncio.Future, float]) -> None:
        loop, fut, t0 = userdata
        if self.metrics:
            self.metrics.in_flight.labels(self.name).dec()
        try:  # an exception must not escape into OpenVINO's thread
            result: Any = {meta["name"]: request.get_output_tensor(i).data.copy()
                           for i, meta in enumerate(self.outputs)}
            if self.metrics:
                self.metrics.inference.labels(self.name).observe(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001
            result = exc
        loop.call_soon_threadsafe(_resolve, fut, result)

    def _check(self, request: InferRequest) -> tuple[np.ndarray, bool]:
        """-> (data, needs the embedded preprocessing). Two forms: the network's own tensor (exact shape and
        datatype, as OVMS takes it), or one image [1, h, w, 3] of any size (UINT8 / FP32, BGR), which gets the
        resize + pad that Model API embeds into a model (``rt_info/model_info``): what OVMSAdapter sends."""
        spec = self.inputs[0]
        tensor = _input(request, spec["name"], self.name)
        shape = list(tensor.shape)
        if shape == spec["shape"]:
            if tensor.datatype != spec["datatype"]:
                raise ProtocolError(400, f"input '{spec['name']}': datatype {tensor.datatype}, the model expects "
                                         f"{spec['datatype']}")
            return tensor.data, False
        if len(shape) == 4 and shape[0] == 1 and shape[3] == 3 and len(spec["shape"]) == 4 and shape[1] * shape[2]:
            if tensor.datatype not in ("UINT8", "FP32"):
                raise ProtocolError(400, f"input '{spec['name']}': an NHWC image must be UINT8 or FP32, got "
                                         f"{tensor.datatype}")
            return tensor.data, True
        raise ProtocolError(400, f"input '{spec['name']}': shape {shape}, the model expects {spec['shape']} "
                                 f"({spec['datatype']}) or one BGR image [1, height, width, 3]")

    def _embedded_preprocess(self, image: np.ndarray) -> np.ndarray:
        """[1, h, w, 3] -> the network's [1, 3, H, W] f32. With the Predictor of the same file at hand (the usual
        case: ``load_models`` passes it), its own pre-processing, so Model API over HTTP sees what the local
        Predictor sees; otherwise the resize + pad that ``rt_info/model_info`` describes (fit_to_window ...)."""
        import cv2

        img = np.asarray(image[0])
        if img.dtype != np.uint8 and np.all((img >= 0) & (img <= 255) & (img == np.round(img))):
            img = img.astype(np.uint8)  # Model API casts the uint8 image to FP32: resize it as the uint8 it was
        if self._preprocess is not None and img.dtype == np.uint8:
            return self._preprocess(img)
        info = self.rt_info.get("model_info", {}) if isinstance(self.rt_info.get("model_info"), dict) else {}
        _, _, H, W = self.inputs[0]["shape"]
        h, w = img.shape[:2]
        mode = info.get("resize_type", "fit_to_window")
        interp = {"NEAREST": cv2.INTER_NEAREST, "CUBIC": cv2.INTER_CUBIC}.get(
            str(info.get("interpolation_mode", "LINEAR")).upper(), cv2.INTER_LINEAR)
        pad = float(info.get("pad_value", 0) or 0)
        if mode in ("fit_to_window", "fit_to_window_letterbox"):
            scale = min(H / h, W / w)
            nh, nw = min(H, max(1, round(h * scale))), min(W, max(1, round(w * scale)))
            resized = cv2.resize(img, (nw, nh), interpolation=interp)
            canvas = np.full((H, W, 3), pad, np.float32)
            top, left = ((H - nh) // 2, (W - nw) // 2) if mode == "fit_to_window_letterbox" else (0, 0)
            canvas[top:top + nh, left:left + nw] = resized
        else:  # "standard" and anything else: stretch
            canvas = cv2.resize(img, (W, H), interpolation=interp).astype(np.float32)
        if str(info.get("reverse_input_channels", "False")).lower() in ("true", "yes", "1"):
            canvas = canvas[..., ::-1]
        for key, op in (("mean_values", np.subtract), ("scale_values", np.divide)):
            values = str(info.get(key, "")).split()
            if len(values) in (1, 3):
                canvas = op(canvas, np.asarray([float(v) for v in values], np.float32))
        return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)

    async def infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        data, embedded = self._check(request)
        loop = asyncio.get_running_loop()

        def start() -> asyncio.Future:
            fut = loop.create_future()
            # run_in_executor: start_async waits for a free request when all are busy; never on the loop
            launched = loop.run_in_executor(self._starter, self._start, data, embedded,
                                            (loop, fut, time.perf_counter()))

            def failed(f: asyncio.Future) -> None:
                if f.exception() is not None and not fut.done():
                    fut.set_exception(f.exception())  # type: ignore[arg-type]

            launched.add_done_callback(failed)
            return fut

        outputs = await self.run(start)
        return outputs, {}

    def _start(self, data: np.ndarray, embedded: bool, userdata: Any) -> None:
        if embedded:
            data = self._embedded_preprocess(data)
        if self.metrics:
            self.metrics.in_flight.labels(self.name).inc()
        try:
            self._queue.start_async({0: np.ascontiguousarray(data)}, userdata)
        except Exception:
            if self.metrics:
                self.metrics.in_flight.labels(self.name).dec()
            raise

    def close(self) -> None:
        super().close()
        self._starter.shutdown(wait=True)
        self._queue.wait_all()


def _resolve(fut: asyncio.Future, result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


# ------------------------------------------------------------------------------------------------ detections
class DetectionsModel(ServedModel):
    """Encoded image in, detections at the image's resolution out (boxes, scores, labels, names, RLE masks)."""

    kind = "detections"
    platform = "isseg_detections"
    outputs_default = ("boxes", "scores", "labels", "names", "masks", "image_size")  # "record" by name

    def __init__(self, name: str, source: str | Path, settings: ModelSettings, threshold: float = 0.5,
                 max_pixels: int = 50_000_000, backend: str | None = None, device: str | None = None,
                 precision: str | None = None, num_threads: int = 0, preset: str | None = None,
                 predictors: Sequence[Any] | None = None) -> None:
        super().__init__(name, settings)
        self.source = str(source)
        self.threshold = float(threshold)
        self.max_pixels = int(max_pixels)
        made = list(predictors) if predictors is not None else [
            backends.load_predictor(source, backend, device, precision, num_threads, preset)
            for _ in range(settings.workers)]
        self.class_names = backends.class_names(made[0])
        self.backend_info = backends.describe(made[0])
        self._first = made[0]
        self._free: queue.Queue = queue.Queue()
        for p in made:
            self._free.put(p)
        self._pool = concurrent.futures.ThreadPoolExecutor(len(made), thread_name_prefix=f"isseg-{name}")
        self.ready = True

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                            "parameters": {"content": "encoded image: JPEG, PNG, BMP, TIFF or WebP bytes"}}],
                "outputs": [{"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
                            {"name": "scores", "datatype": "FP32", "shape": [-1]},
                            {"name": "labels", "datatype": "INT64", "shape": [-1]},
                            {"name": "names", "datatype": "BYTES", "shape": [-1]},
                            {"name": "masks", "datatype": "BYTES", "shape": [-1],
                             "parameters": {"content": "COCO compressed RLE as JSON, image resolution"}},
                            {"name": "image_size", "datatype": "INT64", "shape": [2]},
                            {"name": "record", "datatype": "BYTES", "shape": [1],
                             "parameters": {"content": "the per-image JSON record (asked for by name)"}}],
                "parameters": {"threshold": self.threshold, "class_names": list(self.class_names),
                               "source": Path(self.source).name, **self.backend_info}}

    def network_input(self, image: np.ndarray) -> np.ndarray:
        """The Predictor's pre-processing alone (thread-safe: no inference state): for the contract model."""
        return backends.network_input(self._first, image)

    def _work(self, data: bytes, threshold: float, masks: bool, file: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        image = decode_image(data, self.max_pixels)
        t1 = time.perf_counter()
        predictor = self._free.get()
        try:
            if self.metrics:
                self.metrics.in_flight.labels(self.name).inc()
            t2 = time.perf_counter()
            det, stages = backends.detect(predictor, image, threshold, masks)
            t3 = time.perf_counter()
        finally:
            self._free.put(predictor)
            if self.metrics:
                self.metrics.in_flight.labels(self.name).dec()
        if self.metrics:
            self.metrics.inference.labels(self.name).observe(t3 - t2)
        rec = backends.record(det, file, masks)
        t4 = time.perf_counter()
        timings = {"decode": t1 - t0, **stages, "encode": t4 - t3}
        return {"det": det, "record": rec, "timings": {k: round(v * 1000, 2) for k, v in timings.items()}}

    async def detect(self, data: bytes, threshold: float | None = None, masks: bool = True,
                     file: str = "") -> dict[str, Any]:
        """-> {"det", "record", "timings" (ms)} for one encoded image."""
        thr = self.threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ProtocolError(400, f"threshold: expected a number in [0, 1], got {threshold!r}")
        loop = asyncio.get_running_loop()
        return await self.run(lambda: asyncio.wrap_future(self._pool.submit(self._work, data, thr, masks, file),
                                                          loop=loop))

    async def infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        tensor = _input(request, "image", self.name)
        if tensor.datatype != "BYTES":
            raise ProtocolError(400, f"input 'image': datatype {tensor.datatype}, expected BYTES (the encoded "
                                     "image file)")
        if tensor.data.size != 1:
            raise ProtocolError(400, f"input 'image': shape {tensor.shape}, expected [1] (one encoded image)")
        threshold = request.parameters.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise ProtocolError(400, f"parameter 'threshold': expected a number, got {threshold!r}")
        wanted = {o["name"] for o in request.outputs or []}
        masks = not wanted or "masks" in wanted or "record" in wanted
        out = await self.detect(bytes(tensor.data.reshape(-1)[0]), threshold, masks)
        det, rec = out["det"], out["record"]
        rles = np.empty(len(det), dtype=object)
        rles[:] = [json.dumps(d["mask"], separators=(",", ":")).encode() for d in rec["detections"]]
        names = np.empty(len(det), dtype=object)
        names[:] = [n.encode() for n in det.names]
        outputs = {"boxes": np.asarray(det.boxes, np.float32).reshape(-1, 4),
                   "scores": np.asarray(det.scores, np.float32), "labels": np.asarray(det.labels, np.int64),
                   "names": names, "masks": rles, "image_size": np.asarray(det.image_size, np.int64)}
        if "record" in wanted:
            outputs["record"] = np.array([json.dumps(rec, separators=(",", ":")).encode()], dtype=object)
        return outputs, {"timings_ms": out["timings"]}

    def close(self) -> None:
        super().close()
        self._pool.shutdown(wait=True)


# ------------------------------------------------------------------------------------------------ loading
def split_spec(spec: str) -> tuple[str, str]:
    """``NAME=SOURCE`` or ``SOURCE`` (name: the file's stem, or the registry name)."""
    name, sep, source = spec.partition("=")
    if sep and name and "/" not in name and not Path(spec).exists():
        return name, source
    return Path(spec).stem if Path(spec).suffix else spec, spec


def plan_models(specs: Sequence[str], contract: bool = True) -> list[tuple[list[str], str, bool]]:
    """-> (served names, source, exported) of each ``[NAME=]SOURCE``, checked (files exist, names unique)
    without loading anything: an IR / ONNX file gives the contract model NAME and the detections model
    NAME-detections; a checkpoint or registry name gives the detections model NAME."""
    plan: list[tuple[list[str], str, bool]] = []
    seen: set[str] = set()
    for spec in specs:
        name, source = split_spec(spec)
        exported = Path(source).suffix.lower() in (".xml", ".onnx")
        if exported and not Path(source).is_file():
            raise FileNotFoundError(f"model file not found: {source}")
        names = [name, f"{name}-detections"] if exported and contract else [name]
        for n in names:
            if n in seen:
                raise ValueError(f"two models are named '{n}'; name them with NAME=SOURCE")
            seen.add(n)
        plan.append((names, source, exported))
    return plan


def load_models(specs: Sequence[str], settings: ServeSettings, backend: str | None = None,
                device: str | None = None, precision: str | None = None, num_threads: int = 0,
                preset: str | None = None, contract: bool = True) -> list[ServedModel]:
    """The served models of :func:`plan_models`, loaded."""
    models: list[ServedModel] = []
    for names, source, exported in plan_models(specs, contract):
        det_name = names[-1]
        det = DetectionsModel(det_name, source, settings.for_model(det_name), settings.threshold,
                              settings.max_pixels, backend, device, precision, num_threads, preset)
        if exported and contract:
            ov_device = device if device and device.isupper() else "CPU"
            models.append(ContractModel(names[0], source, settings.for_model(names[0]), ov_device, precision,
                                        det.network_input))
        models.append(det)
    return models
