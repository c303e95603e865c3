"""The process's one ``openvino.Core``, shared by every runtime, probe and benchmark of isseg.

OpenVINO recommends one Core per process. It is also what keeps asynchronous inference safe: with a Core per
model, deleting a model right after an asynchronous stream now and then aborted the process ("std::system_error:
Resource deadlock avoided"; reproduced by creating, streaming and deleting predictors in a row:
``benchmarks/stress_async.py``). Apparently an OpenVINO worker thread dropped the last reference to the plugin and
joined itself (inferred, not proven); the shared Core ended it.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def shared_core() -> Any:
    """The process's one ``openvino.Core``."""
    import openvino as ov

    return ov.Core()
