"""The server's settings: server-wide limits and access control (:class:`ServeSettings`) and each model's
concurrency (:class:`ModelSettings`), checked when they are made so that a bad value fails before any model
loads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from isseg.sources.decode import MAX_PIXELS

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


@dataclass
class ModelSettings:
    """Per-model concurrency: ``workers`` inferences at once, ``max_queue`` admitted (>= workers), ``timeout_s``
    of one request (0: none), ``retry_after_s`` the ``Retry-After`` of a 503."""

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
    """Server-wide limits, access control and the defaults of every model (``models`` overrides them by model
    name): ``max_body_bytes`` of a request (413 above), ``max_pixels`` of a decoded image (413 above),
    ``threshold`` the default score threshold of the detections models; ``api_keys`` the bearer tokens every
    request but the open paths needs (none: an open server; see :mod:`isseg.serve.auth`), ``open_metrics``
    serves ``/metrics`` without a key, ``cors_origins`` the browser origins allowed to call the API from their
    pages (none: CORS off; ``"*"``: any)."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    threshold: float | None = None  # None: each model's own (Predictor.default_threshold)
    default: ModelSettings = field(default_factory=ModelSettings)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never in a log line
    open_metrics: bool = False
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.api_keys = tuple(self.api_keys)
        self.cors_origins = tuple(self.cors_origins)
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"--cors-origins {origin!r}: expected an origin such as https://example.com or "
                                 "http://localhost:3000 (scheme, host, optional port; no path), or *")

    def for_model(self, name: str) -> ModelSettings:
        """The settings of model ``name``: the defaults with its overrides."""
        return replace(self.default, **self.models.get(name, {}))
