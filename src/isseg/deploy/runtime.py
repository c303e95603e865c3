"""The one interface the ``Predictor`` (and ``isseg predict``, the server, the cluster actors) uses to run a
model, whatever executes it: PyTorch (:mod:`runtime_torch`), OpenVINO (:mod:`runtime_openvino`), ONNX Runtime
(:mod:`runtime_onnx`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np

from isseg.deploy.contract import ModelMeta

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # labels [100], boxes [100, 5], masks [100, 28, 28]
StreamItem = tuple[Any, Outputs | None, Exception | None]  # (meta, outputs, error) of one input


class Runtime(Protocol):
    name: str  # "torch", "openvino", "onnx"
    device: str
    meta: ModelMeta  # the preset the model computes (pre- and post-processing follow it)
    num_requests: int  # inferences ``stream`` keeps in flight

    def infer(self, x: np.ndarray) -> Outputs:
        """The contract's outputs for one pre-processed input, float32 [1, 3, H, W] BGR 0..255."""
        ...

    def stream(self, items: Iterable[Any], prepare: Callable[[Any], tuple[np.ndarray, Any]]) -> Iterator[StreamItem]:
        """``infer`` over ``prepare(item) -> (input, meta)`` of each item, results in input order; an error of
        ``prepare`` or of the inference is passed through in its place, the stream goes on."""
        ...


def stream_sequentially(runtime: Runtime, items: Iterable[Any], prepare: Callable[[Any], tuple[np.ndarray, Any]]
                        ) -> Iterator[StreamItem]:
    """``Runtime.stream`` for runtimes that run one inference at a time."""
    for item in items:
        try:
            x, meta = prepare(item)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the stream goes on
            yield item, None, exc
            continue
        try:
            outputs = runtime.infer(x)
        except Exception as exc:  # noqa: BLE001
            yield meta, None, exc
            continue
        yield meta, outputs, None
