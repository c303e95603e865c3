"""Batch inference past one machine: ``isseg predict INPUT... --ray`` / :func:`predict_ray` on Ray Data.

Needs the ``ray`` extra (``pip install "isseg[ray]"``); importing this package does not import Ray.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ShardLayout", "list_inputs", "predict_ray"]


def __getattr__(name: str) -> Any:  # lazy, so that `isseg predict` without --ray never imports Ray
    if name == "predict_ray":
        from isseg.cluster.pipeline import predict_ray

        return predict_ray
    if name == "list_inputs":
        from isseg.cluster.pipeline import list_inputs

        return list_inputs
    if name == "ShardLayout":
        from isseg.cluster.shards import ShardLayout

        return ShardLayout
    raise AttributeError(f"module 'isseg.cluster' has no attribute {name!r}")
