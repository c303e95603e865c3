"""The contract model: the exported network served as it is, the way OpenVINO Model Server serves it.

``image`` f32 [1, 3, H, W] in, the network's ``labels`` / ``boxes`` / ``masks`` out. It is compiled by isseg's
OpenVINO runtime (:class:`isseg.deploy.runtime_openvino.OpenVINORuntime`, through :mod:`isseg.serve.backends`)
and runs on OpenVINO's ``AsyncInferQueue``: callbacks resolve asyncio futures, nothing blocks the event loop.
Its metadata carries the IR's ``rt_info``, so that Model API's OVMSAdapter configures itself from it.

Model API sends the original image ``[1, h, w, 3]`` instead of the network's tensor (OVMSAdapter cannot embed
the pre-processing); the model accepts that form and pre-processes it with isseg's one pre-processing
(:func:`isseg.model.transform.network_input`) under the ``InputConfig`` the caller gives: the Predictor's of the
same file, so Model API over HTTP sees what the local Predictor sees.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

import numpy as np

from isseg.serve import backends
from isseg.serve.admission import ServedModel
from isseg.serve.protocol import InferRequest, ProtocolError
from isseg.serve.settings import ModelSettings

_OV_TO_V2 = {"f32": "FP32", "f16": "FP16", "f64": "FP64", "i64": "INT64", "i32": "INT32", "i16": "INT16",
             "i8": "INT8", "u8": "UINT8", "u16": "UINT16", "u32": "UINT32", "u64": "UINT64", "boolean": "BOOL"}


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


def rt_info(path: Path) -> dict[str, Any]:
    """The model's runtime info as nested dicts of strings (the compiled model does not keep it: read the file)."""
    if path.suffix.lower() == ".onnx":
        return _onnx_rt_info(path)
    return _plain_rt_info(backends.read_network(path).get_rt_info())


def _tensor_meta(port: Any) -> dict[str, Any]:
    shape = port.get_partial_shape()
    dims = [d.get_length() if d.is_static else -1 for d in shape]
    return {"name": port.any_name, "datatype": _OV_TO_V2.get(port.get_element_type().get_type_name(), "FP32"),
            "shape": dims}


def _resolve(fut: asyncio.Future, result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


class ContractModel(ServedModel):
    """The exported network served as it is, like OpenVINO Model Server (KServe v2 + rt_info in metadata).

    ``input_config``: the ``InputConfig`` that pre-processes an image sent as ``[1, h, w, 3]`` (the Predictor's
    of the same file: :func:`isseg.serve.backends.input_config`).
    """

    kind = "contract"
    platform = "OpenVINO"
    # Outputs go back binary only when asked for by name: Model API's OVMSAdapter sends binary_data_output but its
    # MaskRCNN post-processing writes into the arrays, which tritonclient makes read-only from binary data.
    request_level_binary = False

    def __init__(self, name: str, path: str | Path, settings: ModelSettings, input_config: Any,
                 device: str = "CPU", precision: str | None = None) -> None:
        super().__init__(name, settings)
        import openvino as ov

        path = Path(path)
        self.runtime = backends.contract_runtime(path, device, precision, settings.workers)
        compiled = self.runtime.compiled
        self.rt_info = rt_info(path)
        self.inputs = [_tensor_meta(p) for p in compiled.inputs]
        self.outputs = [_tensor_meta(p) for p in compiled.outputs]
        for meta in self.inputs:
            if any(d < 0 for d in meta["shape"]):
                raise ValueError(f"{path}: input '{meta['name']}' has a dynamic shape {meta['shape']}; "
                                 "export with a fixed input size")
        self.path = path
        self.device = self.runtime.device
        self.input_config = input_config
        self._queue = ov.AsyncInferQueue(compiled, settings.workers)
        self._queue.set_callback(self._done)
        # one thread starts the requests: start_async waits there (never on the event loop) while all are busy
        self._starter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"isseg-{name}")
        self.ready = True

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
        """-> (data, is an image to pre-process). Two forms: the network's own tensor (exact shape and datatype,
        as OVMS takes it), or one image [1, h, w, 3] of any size (UINT8 / FP32, BGR): what OVMSAdapter sends."""
        spec = self.inputs[0]
        tensor = request.only_input(spec["name"], self.name)
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

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One BGR image [1, h, w, 3] (uint8, or float 0..255 as Model API casts it) -> the network's f32
        [1, 3, H, W]: :func:`isseg.model.transform.network_input` of the image as uint8 (float values are
        rounded and clipped to 0..255 first; Model API's are the uint8 image's own)."""
        img = np.asarray(image[0])
        if img.dtype != np.uint8:
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return backends.network_input(img, self.input_config)

    async def infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        data, is_image = self._check(request)
        loop = asyncio.get_running_loop()

        def start() -> asyncio.Future:
            fut = loop.create_future()
            # run_in_executor: start_async waits for a free request when all are busy; never on the loop
            launched = loop.run_in_executor(self._starter, self._start, data, is_image,
                                            (loop, fut, time.perf_counter()))

            def failed(f: asyncio.Future) -> None:
                if f.exception() is not None and not fut.done():
                    fut.set_exception(f.exception())  # type: ignore[arg-type]

            launched.add_done_callback(failed)
            return fut

        outputs = await self.run(start)
        return outputs, {}

    def _start(self, data: np.ndarray, is_image: bool, userdata: Any) -> None:
        if is_image:
            data = self.preprocess(data)
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
