"""``isseg serve``: KServe v2 / OpenVINO Model Server-compatible HTTP serving, a detections API and a web page.

Needs the ``serve`` extra (``pip install "isseg[serve]"``). ``create_app(load_models(specs, settings), settings)``
is the app that ``isseg serve`` runs with uvicorn and that a Ray Serve deployment can wrap.

Modules: ``app`` (assembly), ``routes_v2`` / ``routes_predict`` / ``routes_site`` (the routes), ``state`` (what
the routes share), ``body`` (body limits), ``protocol`` (v2 tensors), ``settings``, ``admission`` (the served-model
base and its admission control), ``contract`` / ``detections`` (the two kinds of model), ``specs`` (model specs ->
loaded models), ``backends`` (the calls into isseg's inference code), ``metrics``.
"""

from __future__ import annotations

from isseg.lazy import lazy_exports

# lazy: importing isseg.serve must not need FastAPI until it is used
__getattr__, __all__ = lazy_exports(__name__, {"create_app": "isseg.serve.app", "load_models": "isseg.serve.specs",
                                               "ModelSettings": "isseg.serve.settings",
                                               "ServeSettings": "isseg.serve.settings"})
