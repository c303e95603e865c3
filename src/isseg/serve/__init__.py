"""``isseg serve``: KServe v2 / OpenVINO Model Server-compatible HTTP serving, a detections API and a web page.

Needs the ``serve`` extra (``pip install "isseg[serve]"``). ``create_app(load_models(specs, settings), settings)``
is the app that ``isseg serve`` runs with uvicorn and that a Ray Serve deployment can wrap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "load_models", "ModelSettings", "ServeSettings"]


def __getattr__(name: str) -> Any:  # lazy: importing isseg.serve must not need FastAPI until it is used
    if name == "create_app":
        from isseg.serve.app import create_app

        return create_app
    if name in ("load_models", "ModelSettings", "ServeSettings"):
        from isseg.serve import models

        return getattr(models, name)
    raise AttributeError(name)
