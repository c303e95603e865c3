"""``Predictor``: one API over PyTorch, OpenVINO and ONNX Runtime, with the model's result type.

    predictor = isseg.Predictor("out/security-0002.xml")          # backend from the file type
    det = predictor.predict(image_bgr)                            # Detections, original image pixels
    dets = predictor.predict_batch(images)                        # several requests in flight (OpenVINO)

Every backend runs the seed's contract on the same input: the image is resized to fit the network input
(768x1024 for the seed) keeping its aspect ratio (cv2 INTER_LINEAR) and padded right/bottom with 0; the
network returns up to 100 detections (score >= the preset's 0.05); boxes are mapped back to the original
image and the 28x28 masks pasted at full resolution (bool, mask threshold 0.5).

``threshold`` (default 0.0: every detection the network returns, as ``model.predict``) drops lower scores.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from isseg.deploy.processing import letterbox, postprocess
from isseg.model.detections import Detections
from isseg.model.images import read_image

BACKENDS = ("torch", "openvino", "onnx")
ImageInput = np.ndarray | str | Path


def _backend_for(source: Any) -> str:
    if isinstance(source, nn.Module):
        return "torch"
    suffix = Path(str(source)).suffix.lower()
    return {".xml": "openvino", ".onnx": "onnx"}.get(suffix, "torch")


class Predictor:
    """Instance segmentation with a deployed (or PyTorch) Mask R-CNN.

    Args:
        model_or_path: a ``MaskRCNN``; an OpenVINO IR (``.xml``: ours or an Open Model Zoo
            instance-segmentation-security model); an ONNX file; or a checkpoint path / registry name.
        backend: "torch", "openvino" or "onnx"; default from the file type. A ``MaskRCNN`` or checkpoint with
            backend "openvino" / "onnx" is exported (fp32) to a temporary folder first.
        device: "CPU" / "GPU" / "AUTO" (OpenVINO), "cpu" / "cuda" (PyTorch, ONNX Runtime).
        threshold: minimum score of the returned detections (default 0: all the network returns).
        precision: OpenVINO inference precision ("f32", "bf16", "f16"); default: the device's
            (bf16 on CPUs with AVX512-BF16 / AMX, f32 otherwise).
        mode: OpenVINO performance hint, "latency" (one image at a time) or "throughput" (several
            requests in flight for ``predict_batch``).
        num_requests: requests in flight in ``predict_batch`` (0: the device's optimum).
        preset: preset of a foreign checkpoint (torch backend).
        input_size: network input (H, W) for the torch backend (the exports fix their own).
    """

    def __init__(self, model_or_path: nn.Module | str | Path, backend: str | None = None,
                 device: str | None = None, threshold: float = 0.0, precision: str | None = None,
                 mode: str = "latency", num_requests: int = 0, num_threads: int = 0, preset: str | None = None,
                 input_size: tuple[int, int] = (768, 1024)) -> None:
        backend = backend or _backend_for(model_or_path)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        if mode not in ("latency", "throughput"):
            raise ValueError(f"unknown mode {mode!r}; expected 'latency' or 'throughput'")
        self.backend = backend
        self.threshold = float(threshold)
        self._tmp: tempfile.TemporaryDirectory | None = None
        source: Any = model_or_path
        suffix = "" if isinstance(source, nn.Module) else Path(str(source)).suffix.lower()
        if backend in ("openvino", "onnx") and suffix not in (".xml", ".onnx"):
            from isseg.deploy.export import export, resolve_model

            self._tmp = tempfile.TemporaryDirectory(prefix="isseg-predictor-")
            source = export(resolve_model(source, preset), self._tmp.name, format=backend, input_size=input_size)
            suffix = source.suffix
        if backend == "openvino":
            if suffix != ".xml":
                raise ValueError(f"backend 'openvino' needs an IR (.xml) file, got {model_or_path}")
            from isseg.deploy.runtime_openvino import OpenVINORuntime

            self.runtime: Any = OpenVINORuntime(source, device or "CPU", precision, mode, num_requests, num_threads)
        elif backend == "onnx":
            if suffix != ".onnx":
                raise ValueError(f"backend 'onnx' needs an .onnx file, got {model_or_path}")
            from isseg.deploy.runtime_onnx import ONNXRuntime

            self.runtime = ONNXRuntime(source, device or "cpu", num_threads)
        else:
            if suffix in (".xml", ".onnx"):
                raise ValueError(f"backend 'torch' needs a model or a checkpoint, got {model_or_path}")
            from isseg.deploy.export import resolve_model
            from isseg.deploy.runtime_torch import TorchRuntime

            if num_threads:
                import torch

                torch.set_num_threads(int(num_threads))
            self.runtime = TorchRuntime(resolve_model(source, preset), device or "cpu", input_size)
        meta = self.runtime.metadata
        self.class_names: tuple[str, ...] = tuple(meta["class_names"])
        self.mask_paste: str = meta["mask_paste"]
        self.mask_threshold: float = float(meta["mask_threshold"])
        self.input_size: tuple[int, int] = tuple(self.runtime.input_size)  # type: ignore[assignment]
        self.timings: dict[str, float] = {}  # seconds of the last predict(): preprocess, infer, postprocess

    def __repr__(self) -> str:
        return (f"Predictor(backend={self.backend!r}, device={self.runtime.device!r}, "
                f"input={self.input_size[0]}x{self.input_size[1]}, classes={len(self.class_names)})")

    # ------------------------------------------------------------------------------------------------ steps
    def preprocess(self, image: ImageInput) -> tuple[np.ndarray, dict[str, Any]]:
        """-> (uint8 canvas of the input size, meta with the original and resized sizes)."""
        image = read_image(image)
        canvas, resized = letterbox(image, self.input_size)
        return canvas, {"original": image.shape[:2], "resized": resized}

    def postprocess(self, outputs: tuple[np.ndarray, np.ndarray, np.ndarray], meta: dict[str, Any],
                    threshold: float | None = None, with_masks: bool = True) -> Detections:
        labels, boxes, masks = outputs
        return postprocess(labels, boxes, masks, meta["resized"], meta["original"], self.class_names,
                           self.threshold if threshold is None else threshold, self.mask_paste,
                           self.mask_threshold, with_masks)

    # -------------------------------------------------------------------------------------------- inference
    def predict(self, image: ImageInput, threshold: float | None = None, masks: bool = True) -> Detections:
        """Detections in one BGR image (HxWx3 uint8, HxW grayscale, or an image file path);
        ``masks=False`` skips pasting the masks (``Detections.masks`` is None)."""
        t0 = time.perf_counter()
        canvas, meta = self.preprocess(image)
        t1 = time.perf_counter()
        outputs = self.runtime.infer(canvas)
        t2 = time.perf_counter()
        det = self.postprocess(outputs, meta, threshold, masks)
        t3 = time.perf_counter()
        self.timings = {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2}
        return det

    __call__ = predict

    def predict_stream(self, images: Iterable[ImageInput], threshold: float | None = None,
                       errors: str = "raise") -> Iterator[Detections | Exception]:
        """Detections for each image of an iterable, in order; OpenVINO keeps several requests in flight.

        ``errors="raise"`` stops at the first bad image; ``"return"`` yields the exception in its place.
        """
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        if hasattr(self.runtime, "stream") and self.runtime.num_requests > 1:
            for meta, outputs, err in self.runtime.stream(images, self.preprocess):
                if err is not None:
                    if errors == "raise":
                        raise err
                    yield err
                else:
                    yield self.postprocess(outputs, meta, threshold)
            return
        for image in images:
            try:
                yield self.predict(image, threshold)
            except (ValueError, FileNotFoundError, OSError) as exc:
                if errors == "raise":
                    raise
                yield exc

    def predict_batch(self, images: Sequence[ImageInput], threshold: float | None = None) -> list[Detections]:
        """``predict`` over a list (asynchronously with OpenVINO: use ``mode="throughput"``)."""
        return list(self.predict_stream(images, threshold))  # type: ignore[arg-type]
