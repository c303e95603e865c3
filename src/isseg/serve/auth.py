"""Access control of the server: API keys (bearer tokens), checked by an ASGI middleware before anything else.

Keys come from a file (one a line, ``#`` comments and blank lines skipped) and/or the ``ISSEG_API_KEYS``
environment variable (comma-separated), never from the command line, where ``ps`` would show them. With keys,
every request needs ``Authorization: Bearer <key>`` except the paths in :data:`OPEN_PATHS`: the health
endpoints (orchestrators probe them without credentials), the page at ``/`` (static HTML that asks for the key
and sends it with each call; a browser cannot send a header when it opens a URL) and the API description
(``/openapi.json``, ``/docs``: static, no model or data in it). ``/metrics`` is keyed unless the server opens
it (``ServeSettings.open_metrics``). A live view's MJPEG URL also opens with a short-lived view token instead of
the key (:mod:`isseg.serve.routes_live`). Anything else without a valid key gets 401 with ``WWW-Authenticate:
Bearer`` and the server's error body. Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`,
against every key, so neither the time nor the length of a guess tells anything about a key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from isseg.serve.state import error_response

ENV_VAR = "ISSEG_API_KEYS"
MIN_KEY_LENGTH = 16
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/", "/openapi.json", "/docs",
                        "/docs/oauth2-redirect"})
METRICS_PATH = "/metrics"
# RFC 6750's token68 characters: what fits in an Authorization header unquoted
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_HOW = "make one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\""


def _checked(key: str, where: str) -> str:
    if not _TOKEN.match(key):
        raise ValueError(f"{where}: a key may only hold letters, digits and - . _ ~ + / (then = padding); {_HOW}")
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"{where}: a key of {len(key)} characters is too easy to guess (at least "
                         f"{MIN_KEY_LENGTH}); {_HOW}")
    return key


def read_keys_file(path: str | os.PathLike) -> list[str]:
    """The keys of a keys file: one a line; blank lines and ``#`` comments (whole lines or line ends) skipped."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--api-keys-file {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--api-keys-file {p}: cannot be read ({exc})") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.split("#", 1)[0].strip()
        if key:
            keys.append(_checked(key, f"--api-keys-file {p}, line {number}"))
    if not keys:
        raise ValueError(f"--api-keys-file {p}: no key in it (one a line; # starts a comment)")
    return keys


def load_api_keys(keys_file: str | os.PathLike | None = None,
                  environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The server's keys: those of ``keys_file`` and of ``$ISSEG_API_KEYS`` (comma-separated), de-duplicated;
    () when neither is set (the server is then open). One clear ``ValueError`` for a bad key or file."""
    env = os.environ if environ is None else environ
    keys = read_keys_file(keys_file) if keys_file is not None else []
    raw = env.get(ENV_VAR)
    if raw is not None:
        from_env = [k.strip() for k in raw.split(",") if k.strip()]
        if not from_env:
            raise ValueError(f"${ENV_VAR} is set but holds no key (comma-separated keys expected)")
        keys += [_checked(k, f"${ENV_VAR}") for k in from_env]
    return tuple(dict.fromkeys(keys))


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class KeyCheck:
    """Tells a valid key from anything else in constant time (every key is compared, digests of equal length)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k.encode()) for k in keys]
        if not self._digests:
            raise ValueError("KeyCheck needs at least one key")

    def __call__(self, token: bytes) -> bool:
        seen = _digest(token)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(seen, digest)
        return found


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case), or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


class BearerAuth:
    """ASGI middleware: 401 for a request without a valid key, except on the open paths.

    ``on_refused`` is called (no arguments) for each refused request (the app counts them); ``admit(scope)``, if
    given, lets in a request without a key that it vouches for (the live view's short-lived MJPEG tokens,
    :class:`isseg.serve.routes_live.ViewTokens`)."""

    def __init__(self, app: Any, keys: Iterable[str], open_metrics: bool = False, on_refused: Any = None,
                 admit: Any = None) -> None:
        self.app = app
        self.check = KeyCheck(keys)
        self.open = OPEN_PATHS | ({METRICS_PATH} if open_metrics else set())
        self.on_refused = on_refused
        self.admit = admit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open or scope.get("method") == "OPTIONS":
            # OPTIONS: a CORS preflight carries no credentials; CORSMiddleware (outside) answers it, and an
            # OPTIONS that reaches the routes gets 405
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers") or [])
        if (token is not None and self.check(token)) or (token is None and self.admit and self.admit(scope)):
            await self.app(scope, receive, send)
            return
        if self.on_refused is not None:
            self.on_refused()
        if token is None:
            message = "this server needs an API key: send the header 'Authorization: Bearer <key>'"
            challenge = 'Bearer realm="isseg"'
        else:
            message = "the API key is not valid"
            challenge = 'Bearer realm="isseg", error="invalid_token"'
        await error_response(401, message, {"WWW-Authenticate": challenge})(scope, receive, send)


def document_keys(schema: dict[str, Any], open_metrics: bool = False) -> dict[str, Any]:
    """The app's OpenAPI ``schema`` with the bearer scheme: every keyed operation lists it and its 401 answer
    (so that clients generated from the schema, ``/docs``'s Authorize button and schema-based tests know)."""
    open_paths = OPEN_PATHS | ({METRICS_PATH} if open_metrics else set())
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["apiKey"] = {
        "type": "http", "scheme": "bearer", "description": f"an API key of the server (--api-keys-file or ${ENV_VAR})"}
    unauthorized = {"description": "no API key, or not a valid one (WWW-Authenticate: Bearer)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for path, operations in schema.get("paths", {}).items():
        if path in open_paths:
            continue
        for operation in operations.values():
            operation["security"] = [{"apiKey": []}]
            operation.setdefault("responses", {})["401"] = unauthorized
    return schema
