"""ONNX Runtime backend for an exported ONNX file (or any ONNX model with the seed's contract)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from isseg.deploy.contract import OUTPUT_NAMES, read_metadata
from isseg.deploy.runtime import Outputs, StreamItem, stream_sequentially


class ONNXRuntime:
    name = "onnx"

    def __init__(self, path: str | Path, device: str = "cpu", num_threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        device = device.lower()
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("ONNX Runtime here has no CUDA provider; use device='cpu'")
            providers.insert(0, "CUDAExecutionProvider")
        elif device != "cpu":
            raise ValueError(f"unknown ONNX Runtime device {device!r}; expected 'cpu' or 'cuda'")
        self.device = device
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ValueError(f"{path}: not an ONNX model ONNX Runtime can load ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{path}: expected one [1, 3, H, W] image input")
        self.input_name = inputs[0].name
        dims = inputs[0].shape[2:]
        shape = (int(dims[0]), int(dims[1])) if all(isinstance(d, int) for d in dims) else None
        names = [o.name for o in self.session.get_outputs()]
        if not set(OUTPUT_NAMES) <= set(names):
            raise ValueError(f"{path}: expected outputs {OUTPUT_NAMES}, got {names}")
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.meta = read_metadata(lambda section, key: props.get(f"{section} {key}"), shape, str(path))
        self.num_requests = 1

    def infer(self, x: np.ndarray) -> Outputs:
        out = self.session.run(list(OUTPUT_NAMES), {self.input_name: x})
        return out[0], out[1], out[2]

    def stream(self, items: Iterable[Any], prepare: Callable[[Any], tuple[np.ndarray, Any]]) -> Iterator[StreamItem]:
        return stream_sequentially(self, items, prepare)
