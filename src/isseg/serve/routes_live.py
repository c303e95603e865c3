"""The live view's routes (streams of :mod:`isseg.serve.live`):

- ``GET /v2/streams``: every stream: name, URL without credentials, state, frames, fps, lag, counts;
- ``GET /v2/streams/{name}/status``: the same with the track IDs, line counts, zone occupancy, last events;
- ``GET /v2/streams/{name}/mjpeg``: ``multipart/x-mixed-replace`` JPEG frames, each the newest privacy-masked
  drawn frame, as a browser's ``<img>`` shows them;
- ``POST /v2/streams/{name}/token``: a short-lived view token for the MJPEG URL.

Keys: with API keys, every one of them needs the key like the rest of the API. A page's ``<img>`` cannot send a
header, and the long-lived key must never be in a URL (servers, proxies and browser history keep URLs), so the
page asks ``POST .../token`` (with its key, in the header) for a :class:`ViewTokens` token and opens
``.../mjpeg?token=...``. A token is an HMAC (a secret made at start-up, never stored) of the stream's name and
an expiry :data:`TOKEN_TTL_S` seconds ahead: it opens that one stream's MJPEG view, checked when the answer
starts, and nothing else (no inference, no status, no other stream).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from isseg.serve.live import LiveStream, LiveViews
from isseg.serve.protocol import ProtocolError
from isseg.serve.state import error_docs

TOKEN_TTL_S = 60
MJPEG_BOUNDARY = "isseg-frame"
_POLL_S = 0.03  # how often an MJPEG answer looks for a newer frame

router = APIRouter(prefix="/v2/streams", tags=["live view"])


class ViewTokens:
    """Short-lived tokens that open one stream's MJPEG view (see the module docstring)."""

    def __init__(self, ttl_s: float = TOKEN_TTL_S) -> None:
        self._secret = secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._secret, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def make(self, name: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.ttl_s)
        payload = f"{expires}.{name}".encode()
        return f"{base64.urlsafe_b64encode(payload).decode().rstrip('=')}.{self._sign(payload)}"

    def valid(self, token: str, name: str, now: float | None = None) -> bool:
        body, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            expires, _, named = payload.decode().partition(".")
            fresh = int(expires) >= (now or time.time())
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(self._sign(payload), signature) and fresh and named == name

    def admit(self, scope: dict[str, Any]) -> bool:
        """For the key check (:class:`isseg.serve.auth.BearerAuth`): a GET of ``/v2/streams/NAME/mjpeg`` with a
        valid ``token`` for NAME in its query."""
        parts = scope.get("path", "").split("/")
        if scope.get("method") != "GET" or len(parts) != 5 or parts[:3] != ["", "v2", "streams"] \
                or parts[4] != "mjpeg":
            return False
        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        return len(tokens) == 1 and self.valid(tokens[0], parts[3])


def _live(request: Request) -> LiveViews:
    return request.app.state.live


def _stream(request: Request, name: str) -> LiveStream:
    live = _live(request)
    stream = live.streams.get(name)
    if stream is None:
        raise ProtocolError(404, f"unknown stream '{name}'; this server watches {', '.join(live.streams) or 'none'}"
                                 " (isseg serve --stream)")
    return stream


@router.get("", responses=error_docs())
async def streams(request: Request) -> JSONResponse:
    """Every watched stream: name, URL (without credentials), state, frames, fps, lag, tracks, counts."""
    return JSONResponse({"streams": [s.summary() for s in _live(request).streams.values()]})


@router.get("/{name}/status", responses=error_docs(404))
async def status(request: Request, name: str) -> JSONResponse:
    """A stream's state, track IDs, line counts, zone occupancy and last events."""
    return JSONResponse(_stream(request, name).status())


@router.post("/{name}/token", responses=error_docs(404))
async def token(request: Request, name: str) -> JSONResponse:
    """A token that opens this stream's MJPEG view for the next seconds (for an ``<img>``, which sends no
    header): ``{"token", "expires_s", "mjpeg"}``."""
    _stream(request, name)
    tokens: ViewTokens = request.app.state.view_tokens
    value = tokens.make(name)
    return JSONResponse({"token": value, "expires_s": tokens.ttl_s,
                         "mjpeg": f"/v2/streams/{name}/mjpeg?token={value}"})


async def _parts(live: LiveViews, stream: LiveStream) -> AsyncIterator[bytes]:
    """Each new frame as one part, until the client leaves, the stream stops or the server shuts down."""
    seen = -1
    while not live.closing and stream.state != "stopped":
        seq, jpeg = stream.newest()
        if jpeg is None or seq == seen:
            await asyncio.sleep(_POLL_S)
            continue
        seen = seq
        yield (f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
               + jpeg + b"\r\n")


@router.get("/{name}/mjpeg", responses={**error_docs(404), 200: {
    "content": {f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}": {}},
    "description": "JPEG frames, privacy-masked and drawn, one part each"}})
async def mjpeg(request: Request, name: str, token: str | None = None) -> StreamingResponse:
    """The stream's drawn, privacy-masked frames as MJPEG (``<img src=...>``). With API keys: the key in the
    header, or ``?token=`` from ``POST /v2/streams/{name}/token``."""
    stream = _stream(request, name)
    return StreamingResponse(_parts(_live(request), stream),
                             media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
