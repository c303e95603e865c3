"""The routes for people and monitoring: the page at ``/`` (drop an image, see masks, boxes, labels and timings)
and the Prometheus metrics at ``/metrics``."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from isseg.serve.state import state_of

router = APIRouter()


@router.get("/metrics", response_class=PlainTextResponse, tags=["monitoring"])
async def prometheus(request: Request) -> Response:
    metrics = state_of(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)


@router.get("/", response_class=HTMLResponse, tags=["page"])
async def page() -> HTMLResponse:
    return HTMLResponse(resources.files("isseg.serve").joinpath("static/index.html").read_text(encoding="utf-8"))
