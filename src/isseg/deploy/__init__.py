"""Deployment: export to OpenVINO IR / ONNX with the seed's contract, runtimes, ``Predictor``, benchmark.

Heavy imports (torch tracing, OpenVINO, ONNX Runtime, NNCF) happen inside the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export": "isseg.deploy.export",
    "Predictor": "isseg.deploy.predictor",
    "ExportModule": "isseg.deploy.graph",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'isseg.deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
