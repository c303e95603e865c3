"""Batch inference past one machine: ``isseg predict INPUT... --ray`` / :func:`predict_ray` on Ray Data.

Needs the ``ray`` extra (``pip install "isseg[ray]"``); importing this package does not import Ray.
"""

from __future__ import annotations

from isseg.lazy import lazy_exports

# lazy, so that `isseg predict` without --ray never imports Ray
__getattr__, __all__ = lazy_exports(__name__, {"predict_ray": "isseg.cluster.pipeline",
                                               "list_inputs": "isseg.cluster.pipeline",
                                               "ShardLayout": "isseg.cluster.shards"})
