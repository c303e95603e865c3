"""The FastAPI app: the routers of :mod:`isseg.serve.routes_v2` (KServe v2), :mod:`isseg.serve.routes_predict`
(``POST /predict``) and :mod:`isseg.serve.routes_site` (the page at ``/``, ``/metrics``), over one
:class:`isseg.serve.state.ServerState`.

``create_app(models, settings)`` is the only entry point, so that uvicorn (``isseg serve``), a test or a Ray Serve
deployment (``@serve.ingress(create_app(...))``) wrap the same app. The models are built by the caller
(:func:`isseg.serve.specs.load_models`), which keeps the app free of loading and of command-line concerns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from isseg.serve import routes_predict, routes_site, routes_v2
from isseg.serve.admission import ServedModel
from isseg.serve.body import BodyLimit
from isseg.serve.protocol import ProtocolError
from isseg.serve.settings import ServeSettings
from isseg.serve.state import ServerState, error_response


async def _protocol_error(_: Request, exc: ProtocolError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    msg = exc.detail if exc.status_code != 404 else f"no such endpoint: {request.method} {request.url.path}"
    return error_response(exc.status_code, str(msg))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")


def create_app(models: Sequence[ServedModel], settings: ServeSettings | None = None,
               close_models: bool = True) -> FastAPI:
    """The server's app over already loaded ``models``. On shutdown it waits for admitted requests to finish and
    closes the models (``close_models``)."""
    from isseg import __version__

    state = ServerState(models, settings or ServeSettings())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for m in state.models.values():  # uvicorn has stopped accepting and waited for open requests
            await asyncio.to_thread(m.drain, 30.0)  # finish the admitted ones
            if close_models:
                await asyncio.to_thread(m.close)

    app = FastAPI(title="isseg serve", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, limit=state.settings.max_body_bytes)
    app.state.serve = state
    app.exception_handler(ProtocolError)(_protocol_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    for router in (routes_v2.router, routes_predict.router, routes_site.router):
        app.include_router(router)
    return app
