"""``Predictor``: one API over PyTorch, OpenVINO and ONNX Runtime, with the model's result type.

    predictor = isseg.Predictor("out/security-0002.xml")          # backend from the file type
    det = predictor.predict(image_bgr)                            # Detections, original image pixels
    dets = predictor.predict_batch(images)                        # several requests in flight (OpenVINO)

Every backend computes the model's preset function, the same as ``model.predict``: the image is pre-processed
as the preset says (:func:`isseg.model.transform.prepare_image`: the seed's letterbox into 768x1024, or
torchvision's / detectron2's / mmdetection's own resize), the network (the eager model's inference, or the
exported graph traced from it) returns up to 100 detections, and :mod:`isseg.model.postprocess` maps them back
to the original image and pastes the masks. The preset comes from the model: a ``MaskRCNN``'s config, a
checkpoint's, or the ``isseg/config`` metadata of an export.

``threshold`` (default 0.0: every detection the network returns, as ``model.predict``) drops lower scores.

``tiling`` (:class:`isseg.tiling.TilingOptions`) cuts each frame into tiles run at the model's own scale and
merges their detections (:mod:`isseg.tiling`): small objects in large frames. A model exported with tiling
(``isseg export --tile``) tiles by default.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from isseg.config import ModelConfig
from isseg.deploy.runtime import Outputs, Runtime
from isseg.model.detections import Detections
from isseg.model.postprocess import RawDetections, paste_detections, raw_detections
from isseg.model.transform import PreparedImage, network_input
from isseg.tiling.options import TilingOptions

BACKENDS = ("torch", "openvino", "onnx")
MODES = ("latency", "throughput")
ImageInput = np.ndarray | str | Path


def backend_for(source: Any) -> str:
    """The backend a model source needs: "openvino" for ``.xml``, "onnx" for ``.onnx``, else "torch"."""
    if isinstance(source, nn.Module):
        return "torch"
    suffix = Path(str(source)).suffix.lower()
    return {".xml": "openvino", ".onnx": "onnx"}.get(suffix, "torch")


@dataclass(frozen=True)
class PredictorOptions:
    """How a :class:`Predictor` runs its model; every field has a default, each is checked on construction.

    Attributes:
        backend: "torch", "openvino" or "onnx"; None: from the file type. A ``MaskRCNN`` or checkpoint with
            backend "openvino" / "onnx" is exported (fp32) to a temporary folder that the Predictor owns.
        device: "CPU" / "GPU" / "AUTO" (OpenVINO), "cpu" / "cuda" (PyTorch, ONNX Runtime); any case.
        threshold: minimum score of the returned detections (0: all the network returns, as ``model.predict``).
        precision: OpenVINO inference precision ("f32", "bf16", "f16"); None: the device's (bf16 on CPUs
            with AVX512-BF16 / AMX, f32 otherwise), except where f32 runs a float IR's convolutions faster on
            this CPU, measured once per machine (:func:`isseg.deploy.rate_probe.faster_precision`).
        mode: OpenVINO performance hint, "latency" (one image at a time) or "throughput" (several
            requests in flight for ``predict_stream``).
        num_requests: requests in flight in ``predict_stream`` (0: the device's optimum).
        num_threads: inference threads (0: the runtime's default).
        preset: preset of a foreign checkpoint (torchvision / detectron2 / mmdetection files).
        input_size: run a PyTorch model or checkpoint at another inference size than its preset's; exported
            models keep the size they were exported at.
        tiling: tiled inference (:class:`isseg.tiling.TilingOptions`); True: with the default options; False:
            never; None: as the model says (an export with tiling in its metadata tiles, as does a checkpoint
            trained on tiles, which stores it; others do not).
    """

    backend: str | None = None
    device: str | None = None
    threshold: float = 0.0
    precision: str | None = None
    mode: str = "latency"
    num_requests: int = 0
    num_threads: int = 0
    preset: str | None = None
    input_size: tuple[int, int] | None = None
    tiling: TilingOptions | bool | None = None

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {BACKENDS}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected 'latency' or 'throughput'")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.num_requests < 0 or self.num_threads < 0:
            raise ValueError("num_requests and num_threads must be >= 0 (0: the runtime's choice)")
        if self.tiling is not None and not isinstance(self.tiling, TilingOptions | bool):
            raise ValueError(f"tiling must be TilingOptions, True, False or None, got {type(self.tiling).__name__}")


def open_runtime(model_or_path: nn.Module | str | Path, options: PredictorOptions,
                 resources: contextlib.ExitStack) -> tuple[Runtime, Path | None]:
    """-> (the runtime that runs ``model_or_path`` as ``options`` say, the model file it runs or None for
    PyTorch); a temporary export is entered into ``resources`` (closed with the Predictor)."""
    if isinstance(model_or_path, str | Path) and Path(model_or_path).suffix.lower() == ".bin":
        xml = Path(model_or_path).with_suffix(".xml")
        raise ValueError(f"{model_or_path}: the weights file of an OpenVINO IR; pass the model's .xml"
                         + (f" ({xml})" if xml.is_file() else ""))
    backend = options.backend or backend_for(model_or_path)
    source: Any = model_or_path
    exported = backend_for(source) != "torch"
    if exported and backend == "torch":
        raise ValueError(f"backend 'torch' needs a model or a checkpoint, got {model_or_path}")
    if exported and options.input_size is not None:
        raise ValueError(f"{model_or_path}: an exported model runs at the input size it was exported at; "
                         "export it again with another input_size instead")
    if backend != "torch" and not exported:
        from isseg.deploy.export import at_size, export, resolve_model

        folder = resources.enter_context(tempfile.TemporaryDirectory(prefix="isseg-predictor-"))
        source = export(at_size(resolve_model(source, options.preset), options.input_size), folder, format=backend,
                        tiling=_stored_tiling(source))
    elif backend != backend_for(source):
        raise ValueError(f"backend {backend!r} cannot run {model_or_path}; it needs backend {backend_for(source)!r}")
    if backend == "openvino":
        from isseg.deploy.runtime_openvino import OpenVINORuntime

        return OpenVINORuntime(source, options.device or "CPU", options.precision, options.mode,
                               options.num_requests, options.num_threads), Path(source)
    if backend == "onnx":
        from isseg.deploy.runtime_onnx import ONNXRuntime

        return ONNXRuntime(source, options.device or "cpu", options.num_threads), Path(source)
    from isseg.deploy.export import at_size, resolve_model
    from isseg.deploy.runtime_torch import TorchRuntime

    if options.num_threads:
        torch.set_num_threads(int(options.num_threads))
    runtime = TorchRuntime(at_size(resolve_model(source, options.preset), options.input_size),
                           (options.device or "cpu").lower())
    if isinstance(source, str | Path):  # a training checkpoint stores its best-F1 threshold (and tiling)
        from isseg.engine.threshold import checkpoint_threshold

        runtime.meta = replace(runtime.meta, confidence_threshold=checkpoint_threshold(source),
                               tiling=_stored_tiling(source))
    return runtime, None


def _stored_tiling(source: Any) -> TilingOptions | None:
    """The tiling a checkpoint file trained on tiles stores (``isseg train --tile``), else None: it is what
    "the model says" for a checkpoint, as an export's metadata is for an IR."""
    if not isinstance(source, str | Path):
        return None
    from isseg.weights.checkpoint import checkpoint_tiling

    return checkpoint_tiling(source)


def _raise(error: BaseException) -> Any:
    raise error


class _Closed:
    """The runtime of a closed Predictor: any use is one clear error."""

    name = "closed"

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("this Predictor is closed; create a new one")


class Predictor:
    """Instance segmentation with a deployed (or PyTorch) Mask R-CNN.

    ``Predictor(model_or_path, options=None, **fields)``: ``model_or_path`` is a ``MaskRCNN``; an OpenVINO IR
    (``.xml``: ours or an Open Model Zoo instance-segmentation-security model); an ONNX file; or a checkpoint
    path / registry name. ``options`` (:class:`PredictorOptions`) says how it runs; keyword ``fields`` override
    single options (``Predictor(path, device="GPU", threshold=0.5)``).

    The Predictor owns what it opens (a temporary export, the compiled model): ``close()`` or a ``with`` block
    releases it, as does garbage collection. ``model_file``: the file the runtime runs (for a model exported on
    the fly, the temporary export), None on PyTorch.
    """

    runtime: Runtime
    model_file: Path | None

    def __init__(self, model_or_path: nn.Module | str | Path, options: PredictorOptions | None = None,
                 **fields: Any) -> None:
        self.options = replace(options or PredictorOptions(), **fields)
        self._resources = contextlib.ExitStack()
        try:
            self.runtime, self.model_file = open_runtime(model_or_path, self.options, self._resources)
        except BaseException:
            self._resources.close()
            raise
        self._finalizer = weakref.finalize(self, self._resources.close)
        self.backend: str = self.runtime.name
        self.threshold = float(self.options.threshold)
        self.config: ModelConfig = self.runtime.meta.config
        self.class_names: tuple[str, ...] = tuple(self.config.class_names)
        tiling = self.options.tiling
        self.tiling: TilingOptions | None = (self.runtime.meta.tiling if tiling is None else
                                             TilingOptions() if tiling is True else tiling or None)
        self.timings: dict[str, float] = {}  # seconds of the last predict(): preprocess, infer, postprocess
        # (tiled: infer = the tiles pre-processed and inferred, merge, paste)

    def close(self) -> None:
        """Release the runtime and any temporary export (idempotent); using the Predictor afterwards is an
        error."""
        self.runtime = _Closed()  # type: ignore[assignment]
        self._finalizer()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def default_threshold(self) -> float:
        """The model's own score threshold, for when the user gives none (``isseg predict``): an export's
        ``model_info/confidence_threshold``, a training checkpoint's best-F1 threshold, else 0.5."""
        return self.runtime.meta.default_threshold

    @property
    def input_size(self) -> tuple[int, int]:
        """The preset's inference size: the canvas (H, W) of a "fit" model, (short, long) otherwise."""
        return tuple(self.config.input.size)  # type: ignore[return-value]

    def __repr__(self) -> str:
        kind = "canvas" if self.config.input.resize == "fit" else "short/long"
        tiles = "" if self.tiling is None else f", tiles={'x'.join(map(str, self.tiling.tile_hw(self.input_size)))}"
        return (f"Predictor(backend={self.backend!r}, device={self.runtime.device!r}, preset={self.config.name!r}, "
                f"{kind}={self.input_size[0]}x{self.input_size[1]}, classes={len(self.class_names)}{tiles})")

    # ------------------------------------------------------------------------------------------------ steps
    def preprocess(self, image: ImageInput) -> tuple[np.ndarray, PreparedImage]:
        """-> (the network input float32 [1, 3, h, w], the sizes to map the results back)."""
        return network_input(image, self.config.input)

    def raw(self, outputs: Outputs, prepared: PreparedImage, threshold: float | None = None) -> RawDetections:
        """The contract's outputs (padded with score-0 rows) -> raw detections of the original image (scores at
        least ``threshold``, by descending score; masks not pasted yet)."""
        labels, boxes5, masks = (np.asarray(o) for o in outputs)
        boxes5 = boxes5.reshape(-1, 5).astype(np.float32)
        threshold = self.threshold if threshold is None else threshold
        scores = boxes5[:, 4]
        keep = np.nonzero((scores > 0) & (scores >= threshold))[0]
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        t = torch.from_numpy
        return raw_detections(t(boxes5[keep, :4]), t(scores[keep]), t(labels.reshape(-1)[keep].astype(np.int64)),
                              t(masks[keep].astype(np.float32)), prepared.content_size, prepared.original_size,
                              self.config.roi)

    def postprocess(self, outputs: Outputs, prepared: PreparedImage, threshold: float | None = None,
                    with_masks: bool = True) -> Detections:
        """The contract's outputs (padded with score-0 rows) -> ``Detections`` of the original image."""
        return paste_detections(self.raw(outputs, prepared, threshold), prepared.original_size, self.config.roi,
                                self.class_names, with_masks)

    # -------------------------------------------------------------------------------------------- inference
    def predict(self, image: ImageInput, threshold: float | None = None, masks: bool = True) -> Detections:
        """Detections in one BGR image (HxWx3 uint8, HxW grayscale, or an image file path);
        ``masks=False`` skips pasting the masks (``Detections.masks`` is None)."""
        if self.tiling is not None:
            from isseg.tiling.infer import predict_tiled

            timings: dict[str, float] = {}
            result = next(predict_tiled(self, [image], self.tiling, threshold, masks, timings))
            self.timings = timings
            if isinstance(result, Exception):
                raise result
            return result
        t0 = time.perf_counter()
        x, prepared = self.preprocess(image)
        t1 = time.perf_counter()
        outputs = self.runtime.infer(x)
        t2 = time.perf_counter()
        det = self.postprocess(outputs, prepared, threshold, masks)
        t3 = time.perf_counter()
        self.timings = {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2}
        return det

    __call__ = predict

    def _prepare_item(self, item: ImageInput | BaseException) -> tuple[np.ndarray, PreparedImage]:
        return _raise(item) if isinstance(item, BaseException) else self.preprocess(item)

    def predict_stream(self, images: Iterable[ImageInput | BaseException], threshold: float | None = None,
                       errors: str = "raise", masks: bool = True) -> Iterator[Detections | Exception]:
        """Detections for each image of an iterable, in order; OpenVINO in throughput mode keeps several
        requests in flight. An exception in ``images`` (an input that could not be read) takes its place in
        the order as that input's error. ``errors="raise"`` stops at the first bad image; ``"return"`` yields
        the exception in its place and goes on."""
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        if self.tiling is not None:
            from isseg.tiling.infer import predict_tiled

            results: Iterator[Detections | Exception] = predict_tiled(self, images, self.tiling, threshold, masks)
        else:
            results = self._untiled_stream(images, threshold, masks)
        for result in results:
            if isinstance(result, Exception) and errors == "raise":
                raise result
            yield result

    def _untiled_stream(self, images: Iterable[ImageInput | BaseException], threshold: float | None,
                        masks: bool) -> Iterator[Detections | Exception]:
        for prepared, outputs, err in self.runtime.stream(images, self._prepare_item):
            if err is None:
                try:
                    det = self.postprocess(outputs, prepared, threshold, masks)  # type: ignore[arg-type]
                except (ValueError, OSError, RuntimeError) as exc:  # this image's error, as an inference one
                    err = exc
                else:
                    yield det
                    continue
            yield err

    def predict_batch(self, images: Sequence[ImageInput], threshold: float | None = None) -> list[Detections]:
        """``predict`` over a list (asynchronously with OpenVINO: use ``mode="throughput"``)."""
        return list(self.predict_stream(images, threshold))  # type: ignore[arg-type]
