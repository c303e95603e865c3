"""Explain: what a Mask R-CNN looked at (docs/explain.md).

- :func:`explain_image` / :class:`Explanation` (:mod:`isseg.explain.api`): per-class maps (score-weighted masks),
  per-detection maps (gradients: :mod:`isseg.explain.gradient`; masking: :mod:`isseg.explain.drise`) and the
  image's feature vector; :func:`save_explanation` draws them over the image (:mod:`isseg.explain.pictures`).
- :class:`ExplainModule` (:mod:`isseg.explain.graph`): the ``saliency_map`` and ``feature_vector`` outputs that
  ``isseg export --explain`` adds to the exported graph, for OpenVINO Model API.
"""

from __future__ import annotations

from isseg.lazy import lazy_exports

_EXPORTS = {
    "explain_image": "isseg.explain.api",
    "Explanation": "isseg.explain.api",
    "save_explanation": "isseg.explain.pictures",
    "heatmap_overlay": "isseg.explain.pictures",
    "ExplainModule": "isseg.explain.graph",
    "drise_maps": "isseg.explain.drise",
    "detection_gradients": "isseg.explain.gradient",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
