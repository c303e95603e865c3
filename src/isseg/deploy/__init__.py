"""Deployment: export to OpenVINO IR / ONNX with the seed's contract, runtimes, ``Predictor``, benchmark.

Heavy imports (torch tracing, OpenVINO, ONNX Runtime, NNCF) happen inside the functions that need them.
"""

from __future__ import annotations

from isseg.lazy import lazy_exports

_EXPORTS = {
    "export": "isseg.deploy.export",
    "Predictor": "isseg.deploy.predictor",
    "ExportModule": "isseg.deploy.graph",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
