"""The FastAPI app: KServe v2 endpoints, ``POST /predict``, ``/metrics`` and the page at ``/``.

``create_app(models, settings)`` is the only entry point, so that uvicorn (``isseg serve``), a test or a Ray Serve
deployment (``@serve.ingress(create_app(...))``) wrap the same app. The models are built by the caller
(:func:`isseg.serve.models.load_models`), which keeps the app free of loading and of command-line concerns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from isseg.serve.metrics import Metrics
from isseg.serve.models import DetectionsModel, ServedModel, ServeSettings
from isseg.serve.protocol import HEADER_LENGTH, ProtocolError, encode_infer_response, parse_infer_request

log = logging.getLogger("isseg.serve")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, from Content-Length or while it streams in."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = _error(413, f"request body over the limit of {self.limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_big(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await too_big(scope, receive, send)


class _TooLarge(ProtocolError):
    """Raised from ``receive`` once the streamed body passes the limit; a ProtocolError, so handlers answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """gzip / deflate request bodies (tritonclient's request_compression_algorithm), never past ``limit``."""
    if not encoding or encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise ProtocolError(415, f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(400, f"the body is not valid {encoding} data: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ProtocolError(413, f"decompressed request body over the limit of {limit} bytes")
    return out


def create_app(models: Sequence[ServedModel], settings: ServeSettings | None = None,
               close_models: bool = True) -> FastAPI:
    """The server's app over already loaded ``models``. On shutdown it waits for admitted requests to finish and
    closes the models (``close_models``)."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    by_name: dict[str, ServedModel] = {}
    for m in models:
        if m.name in by_name:
            raise ValueError(f"two models are named '{m.name}'")
        by_name[m.name] = m
        m.metrics = metrics
    detectors = [m for m in models if isinstance(m, DetectionsModel)]

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for m in models:  # uvicorn has stopped accepting and waited for open requests; finish the admitted ones
            await asyncio.to_thread(m.drain, 30.0)
            if close_models:
                await asyncio.to_thread(m.close)

    from isseg import __version__

    app = FastAPI(title="isseg serve", version=__version__, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.state.models = by_name
    app.state.settings = settings
    app.state.metrics = metrics

    @app.exception_handler(ProtocolError)
    async def protocol_error(_: Request, exc: ProtocolError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if exc.status_code != 404 else f"no such endpoint: {request.method} {request.url.path}"
        return _error(exc.status_code, str(msg))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    def model_of(name: str, version: str | None = None) -> ServedModel:
        model = by_name.get(name)
        if model is None:
            raise ProtocolError(404, f"unknown model '{name}'; this server has {', '.join(by_name) or 'none'}")
        if version not in (None, "", model.version):
            raise ProtocolError(404, f"model '{name}' has no version '{version}' (versions: {model.version})")
        return model

    async def observed(endpoint: str, model: str, call: Any) -> Response:
        """Run a handler body with request metrics; unexpected exceptions become a 500 for this request only."""
        t0 = time.perf_counter()
        try:
            response = await call()
        except ProtocolError as exc:
            response = _error(exc.status, exc.message, exc.headers)
            if exc.status != 503:
                metrics.errors.labels(model, "client" if exc.status < 500 else "server").inc()
        except ValueError as exc:  # a bad input the backend refused
            response = _error(400, str(exc))
            metrics.errors.labels(model, "client").inc()
        except Exception as exc:  # noqa: BLE001 - one failed inference must not take the server down
            log.exception("%s of model '%s' failed", endpoint, model)
            response = _error(500, f"inference failed: {type(exc).__name__}: {exc}")
            metrics.errors.labels(model, "server").inc()
        metrics.requests.labels(model, endpoint, str(response.status_code)).inc()
        metrics.latency.labels(model, endpoint).observe(time.perf_counter() - t0)
        return response

    # ------------------------------------------------------------------------------------ server level
    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "isseg", "version": __version__, "extensions": ["binary_tensor_data", "model_repository"]}

    @app.get("/v2/health/live")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        ok = bool(by_name) and all(m.ready for m in by_name.values())
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models")
    async def list_models() -> dict[str, Any]:
        """Not part of v2 (Triton has POST /v2/repository/index): the page and curl users list models here."""
        return {"models": [{"name": m.name, "version": m.version, "kind": m.kind, "ready": m.ready,
                            "platform": m.platform} for m in by_name.values()]}

    @app.post("/v2/repository/index")
    async def repository_index() -> list[dict[str, Any]]:
        return [{"name": m.name, "version": m.version, "state": "READY" if m.ready else "UNAVAILABLE"}
                for m in by_name.values()]

    # ------------------------------------------------------------------------------------- model level
    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return model_of(name, version).metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        model = model_of(name, version)
        return JSONResponse({"name": model.name, "ready": model.ready}, status_code=200 if model.ready else 503)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        async def call() -> Response:
            model = model_of(name, version)
            body = _decompress(await request.body(), request.headers.get("content-encoding"),
                               settings.max_body_bytes)
            req = await asyncio.to_thread(parse_infer_request, body, request.headers.get(HEADER_LENGTH))
            outputs, params = await model.infer(req)
            content, headers = await asyncio.to_thread(encode_infer_response, model.name, model.version,
                                                       outputs, req, params, model.request_level_binary,
                                                       model.outputs_default)
            return Response(content, headers=headers, media_type=headers["content-type"])

        return await observed("infer", name, call)

    # --------------------------------------------------------------------------------------- for people
    @app.post("/predict")
    async def predict(request: Request, model: str | None = None, threshold: float | None = None,
                      masks: bool = True) -> Response:
        """Multipart upload (field ``image``, or the first file) or a raw image body -> the detections record."""
        label = model or (detectors[0].name if detectors else "")

        async def call() -> Response:
            if model is None and not detectors:
                raise ProtocolError(404, "this server has no detections model")
            target = model_of(model) if model else detectors[0]
            if not isinstance(target, DetectionsModel):
                raise ProtocolError(400, f"model '{target.name}' takes tensors (POST /v2/models/{target.name}/"
                                         f"infer); /predict needs a detections model: "
                                         f"{', '.join(d.name for d in detectors)}")
            data, filename = await _upload(request)
            out = await target.detect(data, threshold, masks, filename)
            body = {"model": target.name, **out["record"], "timings_ms": out["timings"]}
            return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

        return await observed("predict", label, call)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page())

    return app


async def _upload(request: Request) -> tuple[bytes, str]:
    """The image bytes of a /predict request: multipart field ``image`` (or the first file), or the raw body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form()
        except ProtocolError:
            raise
        except Exception as exc:  # noqa: BLE001 - python-multipart's errors vary by version
            raise ProtocolError(400, f"the multipart body cannot be parsed: {exc}") from None
        item = form.get("image")
        if item is None or isinstance(item, str):
            item = next((v for v in form.values() if not isinstance(v, str)), None)
        if item is None:
            raise ProtocolError(400, "field 'image': missing; send the image as a file, e.g. "
                                     "curl -F image=@photo.jpg")
        return await item.read(), str(item.filename or "")
    if ctype.startswith(("application/x-www-form-urlencoded", "application/json", "text/")):
        raise ProtocolError(415, f"Content-Type {ctype.split(';')[0]!r}: send multipart/form-data with a field "
                                 "'image', or the image bytes themselves")
    return await request.body(), ""


def _page() -> str:
    return resources.files("isseg.serve").joinpath("static/index.html").read_text(encoding="utf-8")
