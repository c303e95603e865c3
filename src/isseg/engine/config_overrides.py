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

# field names of earlier versions, and what replaced them
_RENAMED = {
    "input.fit_size": "input.size (the inference size: (height, width) of a fit canvas, (short, long) otherwise)",
    "input.min_size": "input.size (the inference size: [short, long])",
    "input.max_size": "input.size (the inference size: [short, long])",
    "input.train_min_sizes": "input.train_sizes",
    "input.train_max_size": "input.size (training keeps the inference long side)",
    "input.pad_to": "input.resize (fit: a fixed canvas; shortest_edge: padded to input.size_divisor)",
    "roi.clip_to_original": "roi.final_clip",
}


def apply_overrides(cfg: ModelConfig, items: Iterable[str]) -> ModelConfig:
    """Return ``cfg`` with each ``"a.b=value"`` applied (nested dataclasses are replaced, not mutated).

    ``input.size`` (the inference size) and ``input.train_sizes`` (the training scales) are applied together:
    ``input.size`` alone scales the training scales with it, so that a model is trained at the size it is
    tested at; given both, they must agree (see ``InputConfig``).
    """
    parsed: list[tuple[str, object]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. roi.batch_size_per_image=128")
        if key in _RENAMED:
            raise ValueError(f"--set {key}: this field is now {_RENAMED[key]}")
        parsed.append((key, _parse(raw.strip())))
    sizes = {k: v for k, v in parsed if k in ("input.size", "input.train_sizes")}
    for key, value in parsed:
        if key not in sizes:
            cfg = _replace_path(cfg, key.split("."), value, key)
    if "input.size" in sizes:
        size = _coerce(cfg.input.size, sizes["input.size"], "input.size")
        train = sizes.get("input.train_sizes")
        train = None if train is None else _coerce(cfg.input.train_sizes, train, "input.train_sizes")
        if len(size) != 2:
            raise ValueError(f"--set input.size: expected [height, width] or [short, long], got {list(size)}")
        cfg = dataclasses.replace(cfg, input=cfg.input.with_size(size, train))
    elif "input.train_sizes" in sizes:
        cfg = _replace_path(cfg, ["input", "train_sizes"], sizes["input.train_sizes"], "input.train_sizes")
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
