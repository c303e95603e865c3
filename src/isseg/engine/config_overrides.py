"""``--set section.field=value`` overrides of a preset, e.g. a smaller input or fewer RoIs for training.

Values are parsed as JSON (``128``, ``0.5``, ``[128,128]``, ``"gn"``; a bare word is taken as a string)
and checked against the current field's type, so a typo fails with the field name instead of silently
training another model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from isseg.config import ModelConfig


def apply_overrides(cfg: ModelConfig, items: Iterable[str]) -> ModelConfig:
    """Return ``cfg`` with each ``"a.b=value"`` applied (nested dataclasses are replaced, not mutated)."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. roi.batch_size_per_image=128")
        cfg = _replace_path(cfg, key.strip().split("."), _parse(raw.strip()), key.strip())
    return cfg


def _parse(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return tuple(value) if isinstance(value, list) else value


def _replace_path(obj: Any, path: list[str], value: Any, full: str) -> Any:
    fields = {f.name for f in dataclasses.fields(obj)}
    name = path[0]
    if name not in fields:
        raise ValueError(f"--set {full}: {type(obj).__name__} has no field {name!r}; expected one of "
                         f"{sorted(fields)}")
    current = getattr(obj, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"--set {full}: {name!r} is a value, not a section")
        return dataclasses.replace(obj, **{name: _replace_path(current, path[1:], value, full)})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"--set {full}: {name!r} is a section; set one of its fields, e.g. {full}.<field>")
    return dataclasses.replace(obj, **{name: _coerce(current, value, full)})


def _coerce(current: Any, value: Any, full: str) -> Any:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"--set {full}: expected true or false, got {value!r}")
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, tuple):
        if not isinstance(value, tuple):
            raise ValueError(f"--set {full}: expected a list like [1,2], got {value!r}")
        if current and isinstance(current[0], float):
            return tuple(float(v) for v in value)
        return value
    if current is not None and type(value) is not type(current):
        kind = type(current).__name__
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"--set {full}: expected {article} {kind}, got {value!r}")
    return value
