"""What every served model shares: a name, a version, v2 metadata, ``async infer``, and admission control.

A model admits at most ``max_queue`` requests (waiting + running); one more is refused at once with 503 and
``Retry-After`` instead of queueing without bound, and a request that waits longer than ``timeout_s`` gets 504
(its work still finishes, and only then frees its place, so memory stays bounded). Subclasses
(:class:`isseg.serve.contract.ContractModel`, :class:`isseg.serve.detections.DetectionsModel`) do the work and
start it through :meth:`ServedModel.run`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from isseg.serve.metrics import Metrics
from isseg.serve.protocol import InferRequest, ProtocolError
from isseg.serve.settings import ModelSettings


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
        self.metrics: Metrics | None = None  # set by the app that serves the model
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
        """The v2 model metadata: name, versions, platform, inputs, outputs (and what the subclass adds)."""
        raise NotImplementedError

    async def infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """-> (output tensors by name, response parameters)."""
        raise NotImplementedError

    def close(self) -> None:
        self.ready = False
