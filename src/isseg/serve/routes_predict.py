"""``POST /predict``: an image upload (multipart field ``image``, or the raw body) -> the per-image detections
record of ``isseg predict``, with the model's name and the timings. The image is decoded by isseg's one decoder,
named by the uploaded file's name, so a bad upload gets a 400 (413 over the pixel limit) naming the file.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from isseg.serve.protocol import ProtocolError
from isseg.serve.state import error_docs, state_of

router = APIRouter(tags=["detections"])

RAW_BODY = "request body"  # the source that names a raw-body upload in decode errors

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, BMP, TIFF or WebP"}}}},
        "image/*": _BINARY, "application/octet-stream": _BINARY}},
    "responses": {"200": {"description": "the per-image record of `isseg predict`, with `model` and "
                                         "`timings_ms`", "content": {"application/json": {"schema": {
                                             "type": "object", "required": ["model", "file", "detections"]}}}}}}


async def read_upload(request: Request) -> tuple[bytes, str]:
    """-> (the image bytes of a /predict request, the uploaded file's name or ""): multipart field ``image``
    (or the first file), or the raw body."""
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


@router.post("/predict", response_class=Response, openapi_extra=_PREDICT_DOC,
             responses=error_docs(400, 404, 413, 415, 500, 503, 504))
async def predict(request: Request,
                  model: Annotated[str | None, Query(description="a detections model (default: the first)")] = None,
                  threshold: Annotated[float | None, Query(description="score threshold in [0, 1]", json_schema_extra={
                      "minimum": 0, "maximum": 1})] = None,
                  masks: Annotated[bool, Query(description="encode the masks (COCO RLE)")] = True) -> Response:
    """Multipart upload (field ``image``, or the first file) or a raw image body -> the detections record."""
    state = state_of(request)

    async def call() -> Response:
        target = state.detections_model(model)
        data, filename = await read_upload(request)
        out = await target.detect(data, threshold, masks, filename, source=filename or RAW_BODY)
        body = {"model": target.name, **out["record"], "timings_ms": out["timings"]}
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    return await state.observed("predict", state.default_label(model), call)
