"""The KServe v2 (Open Inference Protocol) routes: server metadata and health, the model list, model metadata
and readiness, and inference (JSON or binary tensors, optionally gzip / deflate), as OpenVINO Model Server and
Triton answer them. Handlers read the models from ``request.app.state`` (:class:`isseg.serve.state.ServerState`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from isseg.serve.body import decompress
from isseg.serve.protocol import DATATYPES, encode_infer_response, parse_infer_request
from isseg.serve.state import error_docs, state_of

router = APIRouter(tags=["KServe v2"])


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelEntry(BaseModel):
    name: str
    version: str
    kind: str
    ready: bool
    platform: str


class ModelList(BaseModel):
    models: list[ModelEntry]


class RepositoryEntry(BaseModel):
    name: str
    version: str
    state: str


class ModelReady(BaseModel):
    name: str
    ready: bool


_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "enum": list(DATATYPES)},
    "parameters": {"type": "object", "description": "binary_data_size (binary form), content_type: base64 (BYTES)"},
    "data": {"type": "array", "description": "the elements, flat or nested (JSON form)"}}}
_INFER_JSON = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"}, "parameters": {"type": "object", "description": "e.g. threshold, binary_data_output"},
    "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}
_INFER_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": _INFER_JSON},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description":
                                                "binary tensor extension: the JSON header (its length in "
                                                "Inference-Header-Content-Length), then each binary input"}}}},
    "responses": {"200": {"description": "the outputs: JSON, or JSON + binary tensors", "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}}
_INFER = {"openapi_extra": _INFER_DOC, "response_class": Response,
          "responses": error_docs(400, 404, 413, 415, 500, 503, 504)}
HeaderLength = Annotated[str | None, Header(description="length of the JSON header before binary tensors",
                                            json_schema_extra={"pattern": "^[0-9]+$"})]
Encoding = Annotated[str | None, Header(description="gzip or deflate (compressed body)",
                                        json_schema_extra={"enum": ["gzip", "deflate", "identity", ""]})]


# ------------------------------------------------------------------------------------------- server level
@router.get("/v2", response_model=ServerMetadata)
async def server_metadata() -> dict[str, Any]:
    from isseg import __version__

    return {"name": "isseg", "version": __version__, "extensions": ["binary_tensor_data", "model_repository"]}


@router.get("/v2/health/live", response_model=Live)
async def live() -> dict[str, Any]:
    return {"live": True}


@router.get("/v2/health/ready", response_model=Ready, responses={503: {"model": Ready, "description": "not ready"}})
async def ready(request: Request) -> Response:
    ok = state_of(request).ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/v2/models", response_model=ModelList)
async def list_models(request: Request) -> dict[str, Any]:
    """Not part of v2 (Triton has POST /v2/repository/index): the page and curl users list models here."""
    return {"models": [{"name": m.name, "version": m.version, "kind": m.kind, "ready": m.ready,
                        "platform": m.platform} for m in state_of(request).models.values()]}


@router.post("/v2/repository/index", response_model=list[RepositoryEntry])
async def repository_index(request: Request) -> list[dict[str, Any]]:
    return [{"name": m.name, "version": m.version, "state": "READY" if m.ready else "UNAVAILABLE"}
            for m in state_of(request).models.values()]


# -------------------------------------------------------------------------------------------- model level
@router.get("/v2/models/{name}", responses=error_docs(404))
async def model_metadata(request: Request, name: str) -> dict[str, Any]:
    return state_of(request).model(name).metadata()


@router.get("/v2/models/{name}/versions/{version}", responses=error_docs(404))
async def model_version_metadata(request: Request, name: str, version: str) -> dict[str, Any]:
    return state_of(request).model(name, version).metadata()


def _ready(request: Request, name: str, version: str | None) -> Response:
    model = state_of(request).model(name, version)
    return JSONResponse({"name": model.name, "ready": model.ready}, status_code=200 if model.ready else 503)


_READY = {"response_model": ModelReady,
          "responses": {503: {"model": ModelReady, "description": "not ready"}, **error_docs(404)}}


@router.get("/v2/models/{name}/ready", **_READY)
async def model_ready(request: Request, name: str) -> Response:
    return _ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", **_READY)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return _ready(request, name, version)


async def _infer(request: Request, name: str, version: str | None, header_length: str | None,
                 encoding: str | None) -> Response:
    state = state_of(request)

    async def call() -> Response:
        model = state.model(name, version)
        body = decompress(await request.body(), encoding, state.settings.max_body_bytes)
        req = await asyncio.to_thread(parse_infer_request, body, header_length)
        outputs, params = await model.infer(req)
        content, headers = await asyncio.to_thread(encode_infer_response, model.name, model.version, outputs, req,
                                                   params, model.request_level_binary, model.outputs_default)
        return Response(content, headers=headers, media_type=headers["content-type"])

    return await state.observed("infer", name, call)


@router.post("/v2/models/{name}/infer", **_INFER)
async def infer(request: Request, name: str, inference_header_content_length: HeaderLength = None,
                content_encoding: Encoding = None) -> Response:
    return await _infer(request, name, None, inference_header_content_length, content_encoding)


@router.post("/v2/models/{name}/versions/{version}/infer", **_INFER)
async def infer_version(request: Request, name: str, version: str, inference_header_content_length: HeaderLength = None,
                        content_encoding: Encoding = None) -> Response:
    return await _infer(request, name, version, inference_header_content_length, content_encoding)
