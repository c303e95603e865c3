"""Lazy public names of a package: ``import isseg`` (or a sub-package) stays light, and a name's module (with
its heavy imports: torch, OpenVINO, FastAPI, Ray) is imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], hints: dict[str, str] | None = None
                 ) -> tuple[Callable[[str], Any], list[str]]:
    """-> (the package's module-level ``__getattr__``, its ``__all__``) for ``exports``: public name -> the module
    that defines it. ``hints``: names that are not there (other libraries use them) -> what to call instead."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's __getattr__
        module = exports.get(name)
        if module is None:
            hint = f"; {hints[name]}" if hints and name in hints else ""
            raise AttributeError(f"module {package!r} has no attribute {name!r}{hint}")
        return getattr(importlib.import_module(module), name)

    return __getattr__, sorted(exports)
