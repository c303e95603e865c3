"""``isseg serve``: KServe v2 / OpenVINO Model Server-compatible HTTP serving, a detections API and a web page.

Needs the ``serve`` extra (``pip install "isseg[serve]"``). ``create_app(load_models(specs, settings), settings)``
is the app that ``isseg serve`` runs with uvicorn and that a Ray Serve deployment can wrap.

Modules: ``app`` (assembly), ``routes_v2`` / ``routes_predict`` / ``routes_site`` (the routes), ``state`` (what
the routes share), ``body`` (body limits), ``protocol`` (v2 tensors), ``settings``, ``admission`` (the served-model
base and its admission control), ``contract`` / ``detections`` (the two kinds of model), ``specs`` (model specs ->
loaded models), ``backends`` (the calls into isseg's inference code), ``metrics``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "load_models", "ModelSettings", "ServeSettings"]


def __getattr__(name: str) -> Any:  # lazy: importing isseg.serve must not need FastAPI until it is used
    if name == "create_app":
        from isseg.serve.app import create_app

        return create_app
    if name == "load_models":
        from isseg.serve.specs import load_models

        return load_models
    if name in ("ModelSettings", "ServeSettings"):
        from isseg.serve import settings

        return getattr(settings, name)
    raise AttributeError(name)
