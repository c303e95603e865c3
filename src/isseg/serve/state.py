"""What the routes share, kept on ``app.state.serve``: the models by name, the settings and the metrics, with
the lookups and the request accounting every route uses.

:meth:`ServerState.observed` runs a handler's body and turns its failures into the server's one error form,
``{"error": "<one line>"}``: a :class:`ProtocolError` keeps its status; :class:`ImageTooLarge` (the decoder's
pixel limit) is 413 and any other ``ValueError`` (a bad input the decoder or the backend refused) 400, both with
the message as it was raised; anything else is a 500 for that request only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from isseg.serve.admission import ServedModel
from isseg.serve.detections import DetectionsModel
from isseg.serve.metrics import Metrics
from isseg.serve.protocol import ProtocolError
from isseg.serve.settings import ServeSettings
from isseg.sources.decode import ImageTooLarge

log = logging.getLogger("isseg.serve")


_STATUS = {400: "bad request: the message names the field and what was expected", 404: "unknown model or version",
           413: "body or image too large", 415: "unsupported Content-Type or Content-Encoding",
           422: "a query or path parameter of the wrong type", 500: "the inference failed (this request only)",
           503: "the model's queue is full (see Retry-After)", 504: "no answer within the request timeout"}


class ErrorBody(BaseModel):
    """The body of every 4xx / 5xx answer."""

    error: str


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The body of every 4xx / 5xx answer: ``{"error": message}`` (what a client sent and the message repeats, such
    as a lone surrogate of a JSON string, is escaped: the answer is always valid UTF-8)."""
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": text}, status_code=status, headers=headers)


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route's error answers (all ``{"error": ...}``; 422 replaces FastAPI's own)."""
    return {status: {"model": ErrorBody, "description": _STATUS[status]} for status in (*statuses, 422)}


class ServerState:
    """The served models (names unique; each gets the app's ``metrics``), the settings and the metrics."""

    def __init__(self, models: Sequence[ServedModel], settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        for m in models:
            if m.name in self.models:
                raise ValueError(f"two models are named '{m.name}'")
            self.models[m.name] = m
            m.metrics = self.metrics
        self.detectors = [m for m in models if isinstance(m, DetectionsModel)]

    @property
    def ready(self) -> bool:
        """Every model is ready (and there is one)."""
        return bool(self.models) and all(m.ready for m in self.models.values())

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The model ``name`` (404 for an unknown name or version)."""
        model = self.models.get(name)
        if model is None:
            raise ProtocolError(404, f"unknown model '{name}'; this server has {', '.join(self.models) or 'none'}")
        if version not in (None, "", model.version):
            raise ProtocolError(404, f"model '{name}' has no version '{version}' (versions: {model.version})")
        return model

    def detections_model(self, name: str | None) -> DetectionsModel:
        """The detections model ``name``, or the first one (404 when there is none, 400 for a contract model)."""
        if name is None and not self.detectors:
            raise ProtocolError(404, "this server has no detections model")
        target = self.model(name) if name else self.detectors[0]
        if not isinstance(target, DetectionsModel):
            raise ProtocolError(400, f"model '{target.name}' takes tensors (POST /v2/models/{target.name}/"
                                     f"infer); /predict needs a detections model: "
                                     f"{', '.join(d.name for d in self.detectors)}")
        return target

    def default_label(self, name: str | None) -> str:
        """The ``model`` label of a /predict request's metrics."""
        return name or (self.detectors[0].name if self.detectors else "")

    async def observed(self, endpoint: str, model: str, call: Callable[[], Awaitable[Response]]) -> Response:
        """Run a handler body with request metrics; failures become the error answer (module docstring)."""
        t0 = time.perf_counter()
        errors = self.metrics.errors
        try:
            response = await call()
        except ProtocolError as exc:
            response = error_response(exc.status, exc.message, exc.headers)
            if exc.status != 503:
                errors.labels(model, "client" if exc.status < 500 else "server").inc()
        except ImageTooLarge as exc:  # the decoder's pixel limit, read from the header
            response = error_response(413, str(exc))
            errors.labels(model, "client").inc()
        except ValueError as exc:  # a bad input the decoder or the backend refused
            response = error_response(400, str(exc))
            errors.labels(model, "client").inc()
        except Exception as exc:  # noqa: BLE001 - one failed inference must not take the server down
            log.exception("%s of model '%s' failed", endpoint, model)
            response = error_response(500, f"inference failed: {type(exc).__name__}: {exc}")
            errors.labels(model, "server").inc()
        self.metrics.requests.labels(model, endpoint, str(response.status_code)).inc()
        self.metrics.latency.labels(model, endpoint).observe(time.perf_counter() - t0)
        return response


def state_of(request: Request) -> ServerState:
    """The app's :class:`ServerState` (set by :func:`isseg.serve.app.create_app`)."""
    return request.app.state.serve
