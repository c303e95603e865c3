"""Request bodies within limits: the ASGI middleware that answers 413 for a body over the server's limit, and
the decompression of gzip / deflate bodies (tritonclient's ``request_compression_algorithm``), never past it."""

from __future__ import annotations

import zlib
from typing import Any

from isseg.serve.protocol import ProtocolError
from isseg.serve.state import error_response


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
        too_big = error_response(413, f"request body over the limit of {self.limit} bytes")
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


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
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
