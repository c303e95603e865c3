"""The detections model: an encoded image (JPEG/PNG/... bytes) in, detections at the image's resolution out.

A pool of ``workers`` Predictors, each used by one worker thread at a time; the thread decodes the image with
isseg's one decoder (:func:`isseg.sources.decode.decode_image`, which refuses an empty, truncated, corrupt or
oversized image with one line naming the upload), runs the Predictor and encodes the per-image record (COCO RLE
masks) that ``isseg predict`` writes too. Served by ``POST /predict`` and as a v2 model with a BYTES input.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isseg.serve import backends
from isseg.serve.admission import ServedModel
from isseg.serve.protocol import InferRequest, ProtocolError
from isseg.serve.settings import ModelSettings
from isseg.sources.decode import MAX_PIXELS, decode_image

INPUT = "image"  # the v2 input's name, and the source that names it in decode errors

_METADATA_OUTPUTS = [
    {"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
    {"name": "scores", "datatype": "FP32", "shape": [-1]},
    {"name": "labels", "datatype": "INT64", "shape": [-1]},
    {"name": "names", "datatype": "BYTES", "shape": [-1]},
    {"name": "masks", "datatype": "BYTES", "shape": [-1],
     "parameters": {"content": "COCO compressed RLE as JSON, image resolution"}},
    {"name": "image_size", "datatype": "INT64", "shape": [2]},
    {"name": "record", "datatype": "BYTES", "shape": [1],
     "parameters": {"content": "the per-image JSON record (asked for by name)"}},
]


def _objects(items: Sequence[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


class DetectionsModel(ServedModel):
    """Encoded image in, detections at the image's resolution out (boxes, scores, labels, names, RLE masks)."""

    kind = "detections"
    platform = "isseg_detections"
    outputs_default = ("boxes", "scores", "labels", "names", "masks", "image_size")  # "record" by name

    def __init__(self, name: str, source: str | Path, settings: ModelSettings, threshold: float | None = None,
                 max_pixels: int = MAX_PIXELS, backend: str | None = None, device: str | None = None,
                 precision: str | None = None, num_threads: int = 0, preset: str | None = None,
                 predictors: Sequence[Any] | None = None, tiling: Any = None) -> None:
        super().__init__(name, settings)
        self.source = str(source)
        self.max_pixels = int(max_pixels)
        made = list(predictors) if predictors is not None else [
            backends.load_predictor(source, backend, device, precision, num_threads, preset, tiling)
            for _ in range(settings.workers)]
        # None: the model's own threshold (its best-F1 one when training stored it, else 0.5)
        self.threshold = float(getattr(made[0], "default_threshold", 0.5) if threshold is None else threshold)
        self.class_names = backends.class_names(made[0])
        self.backend_info = backends.describe(made[0])
        self.input_config = backends.input_config(made[0])
        self.tiling = getattr(made[0], "tiling", None)  # TilingOptions of each image's tiles (None: whole)
        self._free: queue.Queue = queue.Queue()
        for p in made:
            self._free.put(p)
        self._pool = concurrent.futures.ThreadPoolExecutor(len(made), thread_name_prefix=f"isseg-{name}")
        self.ready = True

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [1],
                            "parameters": {"content": "encoded image: JPEG, PNG, BMP, TIFF or WebP bytes"}}],
                "outputs": _METADATA_OUTPUTS,
                "parameters": {"threshold": self.threshold, "class_names": list(self.class_names),
                               "source": Path(self.source).name, **self.backend_info}}

    def _work(self, data: bytes, threshold: float, masks: bool, file: str, source: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        image = decode_image(data, source, max_pixels=self.max_pixels)
        t1 = time.perf_counter()
        det, stages = self.detect_image(image, threshold, masks)
        t3 = time.perf_counter()
        rec = backends.record(det, file, masks)
        t4 = time.perf_counter()
        timings = {"decode": t1 - t0, **stages, "encode": t4 - t3}
        return {"det": det, "record": rec, "timings": {k: round(v * 1000, 2) for k, v in timings.items()}}

    def detect_image(self, image: np.ndarray, threshold: float, masks: bool = True) -> tuple[Any, dict[str, float]]:
        """HxWx3 uint8 BGR ``image`` -> (Detections, seconds per stage) on the next free Predictor of the pool,
        in the caller's thread (waits for one). The requests' workers use it, and so does the live view
        (:mod:`isseg.serve.live`), whose frames take their turn with the requests for the same Predictors."""
        predictor = self._free.get()
        try:
            if self.metrics:
                self.metrics.in_flight.labels(self.name).inc()
            t0 = time.perf_counter()
            det, stages = backends.detect(predictor, image, threshold, masks)
            t1 = time.perf_counter()
        finally:
            self._free.put(predictor)
            if self.metrics:
                self.metrics.in_flight.labels(self.name).dec()
        if self.metrics:
            self.metrics.inference.labels(self.name).observe(t1 - t0)
        return det, stages

    async def detect(self, data: bytes, threshold: float | None = None, masks: bool = True, file: str = "",
                     source: str | None = None) -> dict[str, Any]:
        """-> {"det", "record", "timings" (ms)} for one encoded image. ``file`` goes into the record; ``source``
        (default: ``file``, else "image") names the image in errors: ``ValueError("<source>: <problem>")`` for
        a bad image, :class:`isseg.sources.decode.ImageTooLarge` over ``max_pixels``."""
        thr = self.threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ProtocolError(400, f"threshold: expected a number in [0, 1], got {threshold!r}")
        loop = asyncio.get_running_loop()
        name = source or file or INPUT
        return await self.run(lambda: asyncio.wrap_future(
            self._pool.submit(self._work, data, thr, masks, file, name), loop=loop))

    async def infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        tensor = request.only_input(INPUT, self.name)
        if tensor.datatype != "BYTES":
            raise ProtocolError(400, f"input '{INPUT}': datatype {tensor.datatype}, expected BYTES (the encoded "
                                     "image file)")
        if tensor.data.size != 1:
            raise ProtocolError(400, f"input '{INPUT}': shape {tensor.shape}, expected [1] (one encoded image)")
        threshold = request.parameters.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise ProtocolError(400, f"parameter 'threshold': expected a number, got {threshold!r}")
        wanted = {o["name"] for o in request.outputs or []}
        masks = not wanted or "masks" in wanted or "record" in wanted
        out = await self.detect(bytes(tensor.data.reshape(-1)[0]), threshold, masks, source=INPUT)
        det, rec = out["det"], out["record"]
        outputs = {"boxes": np.asarray(det.boxes, np.float32).reshape(-1, 4),
                   "scores": np.asarray(det.scores, np.float32), "labels": np.asarray(det.labels, np.int64),
                   "names": _objects([n.encode() for n in det.names]),
                   "masks": _objects([json.dumps(d["mask"], separators=(",", ":")).encode()
                                      for d in rec["detections"]]),
                   "image_size": np.asarray(det.image_size, np.int64)}
        if "record" in wanted:
            outputs["record"] = _objects([json.dumps(rec, separators=(",", ":")).encode()])
        return outputs, {"timings_ms": out["timings"]}

    def close(self) -> None:
        super().close()
        self._pool.shutdown(wait=True)
