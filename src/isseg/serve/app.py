"""The FastAPI app: the routers of :mod:`isseg.serve.routes_v2` (KServe v2), :mod:`isseg.serve.routes_predict`
(``POST /predict``), :mod:`isseg.serve.routes_live` (the live view of ``streams``, ``/v2/streams``) and
:mod:`isseg.serve.routes_site` (the page at ``/``, ``/metrics``), over one :class:`isseg.serve.state.ServerState`.

Middlewares, outermost first: CORS (only with ``settings.cors_origins``), the API-key check
(:mod:`isseg.serve.auth`, only with ``settings.api_keys``), the body limit.

``create_app(models, settings)`` is the only entry point, so that uvicorn (``isseg serve``), a test or a Ray Serve
deployment (``@serve.ingress(create_app(...))``) wrap the same app. The models are built by the caller
(:func:`isseg.serve.specs.load_models`), which keeps the app free of loading and of command-line concerns.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from isseg.serve import routes_live, routes_predict, routes_site, routes_v2
from isseg.serve.admission import ServedModel
from isseg.serve.auth import BearerAuth, document_keys
from isseg.serve.body import BodyLimit
from isseg.serve.live import LiveViews, StreamSpec
from isseg.serve.protocol import ProtocolError
from isseg.serve.routes_live import ViewTokens
from isseg.serve.settings import ServeSettings
from isseg.serve.state import ServerState, error_response


async def _protocol_error(_: Request, exc: ProtocolError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    msg = exc.detail if exc.status_code != 404 else f"no such endpoint: {request.method} {request.url.path}"
    return error_response(exc.status_code, str(msg), exc.headers)  # e.g. a 405's Allow


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")


def create_app(models: Sequence[ServedModel], settings: ServeSettings | None = None,
               close_models: bool = True, streams: Sequence[StreamSpec] = ()) -> FastAPI:
    """The server's app over already loaded ``models``, watching ``streams`` (:mod:`isseg.serve.live`, started
    with the app). On shutdown it stops the streams, waits for admitted requests to finish and closes the models
    (``close_models``)."""
    from isseg import __version__

    state = ServerState(models, settings or ServeSettings())
    live = LiveViews(streams, models, log=lambda m: print(f"isseg serve: {m}", file=sys.stderr))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        live.start()
        yield
        await asyncio.to_thread(live.stop)
        for m in state.models.values():  # uvicorn has stopped accepting and waited for open requests
            await asyncio.to_thread(m.drain, 30.0)  # finish the admitted ones
            if close_models:
                await asyncio.to_thread(m.close)

    app = FastAPI(title="isseg serve", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.serve = state
    app.state.live, app.state.view_tokens = live, ViewTokens()
    app.exception_handler(ProtocolError)(_protocol_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    for router in (routes_v2.router, routes_predict.router, routes_live.router, routes_site.router):
        app.include_router(router)
    _add_middlewares(app, state)
    return app


def _add_middlewares(app: FastAPI, state: ServerState) -> None:
    """Body limit, then the key check, then CORS (the last added runs first): a preflight is answered before the
    key check (browsers send it without credentials), a refused request costs no body read."""
    settings = state.settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.api_keys:
        app.add_middleware(BearerAuth, keys=settings.api_keys, open_metrics=settings.open_metrics,
                           on_refused=state.metrics.unauthorized.inc, admit=app.state.view_tokens.admit)
        plain_openapi = app.openapi

        def openapi() -> dict:
            if app.openapi_schema is None:
                app.openapi_schema = document_keys(plain_openapi(), settings.open_metrics)
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Content-Encoding",
                                          "Inference-Header-Content-Length"],
                           expose_headers=["Inference-Header-Content-Length", "Retry-After", "WWW-Authenticate"],
                           max_age=600)
