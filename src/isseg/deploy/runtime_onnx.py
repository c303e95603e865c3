"""ONNX Runtime backend for the exported ONNX file (or any ONNX model with the seed's contract)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from isseg.config import COCO_CLASSES
from isseg.deploy.processing import to_nchw

OUTPUTS = ("labels", "boxes", "masks")


def read_metadata(meta: dict[str, str]) -> dict[str, Any]:
    names: tuple[str, ...] | None = None
    if "isseg class_names" in meta:
        names = tuple(json.loads(meta["isseg class_names"]))
    elif "model_info labels" in meta:
        parts = meta["model_info labels"].split()
        names = tuple(parts[1:] if parts and parts[0].lower() in ("background", "__background__") else parts)
    return {
        "class_names": names or COCO_CLASSES,
        "mask_paste": meta.get("isseg mask_paste", "torchvision"),
        "mask_threshold": float(meta.get("isseg mask_threshold", 0.5)),
        "preset": meta.get("isseg preset"),
        "precision": meta.get("isseg precision"),
    }


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
        if device.lower().startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("ONNX Runtime here has no CUDA provider; use device='cpu'")
            providers.insert(0, "CUDAExecutionProvider")
        self.device = device
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not all(isinstance(d, int) for d in inputs[0].shape):
            raise ValueError(f"{path}: expected one static [1, 3, H, W] image input")
        self.input_name = inputs[0].name
        self.input_size = (int(inputs[0].shape[2]), int(inputs[0].shape[3]))
        names = [o.name for o in self.session.get_outputs()]
        if not set(OUTPUTS) <= set(names):
            raise ValueError(f"{path}: expected outputs {OUTPUTS}, got {names}")
        self.metadata = read_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        self.num_requests = 1

    def infer(self, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.session.run(list(OUTPUTS), {self.input_name: to_nchw(canvas)})
        return out[0], out[1], out[2]
