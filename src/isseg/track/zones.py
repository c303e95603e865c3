"""Named counting lines and polygon zones, read from a small JSON or YAML file.

Example (YAML; the same keys in JSON)::

    units: px            # or "fraction": every coordinate is a share (0..1) of the frame's width / height
    anchor: foot         # the point of each object that is tested: "foot" (lowest mask pixels) or "centre"
    retention_s: 1.5     # a track missing for longer than this has left (at least the tracker's lost_frames / fps)
    lines:
      - name: door
        points: [[100, 400], [500, 400]]   # "in" = crossing to the right of first -> second, as seen on screen
        band: 4                            # hysteresis, pixels on each side of the line (optional)
        classes: [person]                  # optional; all classes when absent
    zones:
      - name: no_parking
        polygon: [[600, 300], [900, 300], [900, 700], [600, 700]]
        band: 4                            # optional
        classes: [car]                     # optional
        max_dwell_s: 30                    # optional: a dwell event after this long inside

A bad file raises :class:`ZoneFileError` with one line naming the file, the field and what was expected.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


class ZoneFileError(ValueError):
    """A zones file that cannot be used; the message is one line: file, field, what was expected."""


@dataclass(frozen=True)
class Line:
    """A counting line: segment ``a`` -> ``b`` in pixels (or fractions before :meth:`ZoneConfig.in_pixels`);
    ``band``: hysteresis in pixels on each side; ``classes``: names counted (empty: all)."""

    name: str
    a: tuple[float, float]
    b: tuple[float, float]
    band: float = 4.0
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Zone:
    """A polygon zone (vertices in pixels or fractions); ``band``: hysteresis in pixels across its border;
    ``classes``: names tracked (empty: all); ``max_dwell_s``: a dwell event after that long inside."""

    name: str
    polygon: tuple[tuple[float, float], ...]
    band: float = 4.0
    classes: tuple[str, ...] = ()
    max_dwell_s: float | None = None


@dataclass(frozen=True)
class ZoneConfig:
    """The content of a zones file; see the module docstring for each field."""

    lines: tuple[Line, ...] = ()
    zones: tuple[Zone, ...] = ()
    units: str = "px"
    anchor: str = "foot"
    retention_s: float = 1.5

    def in_pixels(self, height: int, width: int) -> ZoneConfig:
        """The same config with every coordinate in pixels of a ``height`` x ``width`` frame."""
        if self.units == "px":
            return self

        def px(p: tuple[float, float]) -> tuple[float, float]:
            return (p[0] * width, p[1] * height)

        return replace(self, units="px",
                       lines=tuple(replace(ln, a=px(ln.a), b=px(ln.b)) for ln in self.lines),
                       zones=tuple(replace(z, polygon=tuple(px(p) for p in z.polygon)) for z in self.zones))


_TOP = {"units", "anchor", "retention_s", "lines", "zones"}
_LINE = {"name", "points", "band", "classes"}
_ZONE = {"name", "polygon", "band", "classes", "max_dwell_s"}


class _Reader:
    """Checks one field at a time and raises a one-line :class:`ZoneFileError` naming it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, expected: str, got: Any) -> ZoneFileError:
        shown = repr(got)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return ZoneFileError(f"{self.source}: {where}: expected {expected}, got {shown}")

    def number(self, value: Any, where: str, minimum: float | None = None) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (minimum is not None and value < minimum):
            raise self.fail(where, "a number" + ("" if minimum is None else f" >= {minimum:g}"), value)
        return float(value)

    def point(self, value: Any, where: str) -> tuple[float, float]:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise self.fail(where, "a point [x, y]", value)
        return (self.number(value[0], f"{where}[0]"), self.number(value[1], f"{where}[1]"))

    def name(self, item: dict, where: str, seen: set[str]) -> str:
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail(f"{where}.name", "a non-empty string", name)
        if name in seen:
            raise self.fail(f"{where}.name", "a name not used before", name)
        seen.add(name)
        return name

    def classes(self, item: dict, where: str) -> tuple[str, ...]:
        value = item.get("classes", [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
            raise self.fail(f"{where}.classes", "a list of class names", value)
        return tuple(value)

    def mapping(self, value: Any, where: str, keys: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, "a mapping", value)
        unknown = sorted(set(value) - keys)
        if unknown:
            raise self.fail(where, f"only the fields {', '.join(sorted(keys))}", f"unknown field {unknown[0]}")
        return value


def _line(r: _Reader, item: Any, where: str, seen: set[str]) -> Line:
    item = r.mapping(item, where, _LINE)
    name = r.name(item, where, seen)
    points = item.get("points")
    if not isinstance(points, list) or len(points) != 2:
        raise r.fail(f"{where}.points", "2 points [[x1, y1], [x2, y2]]", points)
    a, b = r.point(points[0], f"{where}.points[0]"), r.point(points[1], f"{where}.points[1]")
    if a == b:
        raise r.fail(f"{where}.points", "two different points", points)
    return Line(name, a, b, r.number(item.get("band", 4.0), f"{where}.band", 0), r.classes(item, where))


def _zone(r: _Reader, item: Any, where: str, seen: set[str]) -> Zone:
    item = r.mapping(item, where, _ZONE)
    name = r.name(item, where, seen)
    poly = item.get("polygon")
    if not isinstance(poly, list) or len(poly) < 3:
        raise r.fail(f"{where}.polygon", "at least 3 points [[x, y], ...]", poly)
    points = tuple(r.point(p, f"{where}.polygon[{i}]") for i, p in enumerate(poly))
    area2 = sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(points, points[1:] + points[:1]))
    if abs(area2) < 1e-12:
        raise r.fail(f"{where}.polygon", "a polygon with a non-zero area", poly)
    dwell = item.get("max_dwell_s")
    return Zone(name, points, r.number(item.get("band", 4.0), f"{where}.band", 0), r.classes(item, where),
                None if dwell is None else r.number(dwell, f"{where}.max_dwell_s", 0))


def parse_zones(data: Any, source: str = "<zones>") -> ZoneConfig:
    """A :class:`ZoneConfig` from the parsed content of a zones file (``source`` names it in errors)."""
    r = _Reader(source)
    data = r.mapping(data, "top level", _TOP)
    units = data.get("units", "px")
    if units not in ("px", "fraction"):
        raise r.fail("units", "'px' or 'fraction'", units)
    anchor = data.get("anchor", "foot")
    if anchor not in ("foot", "centre"):
        raise r.fail("anchor", "'foot' or 'centre'", anchor)
    retention = r.number(data.get("retention_s", 1.5), "retention_s", 0)
    lines_in, zones_in = data.get("lines", []), data.get("zones", [])
    for key, value in (("lines", lines_in), ("zones", zones_in)):
        if not isinstance(value, list):
            raise r.fail(key, "a list", value)
    if not lines_in and not zones_in:
        raise r.fail("lines/zones", "at least one line or zone", "none")
    seen_lines: set[str] = set()
    seen_zones: set[str] = set()
    lines = tuple(_line(r, x, f"lines[{i}]", seen_lines) for i, x in enumerate(lines_in))
    zones = tuple(_zone(r, x, f"zones[{i}]", seen_zones) for i, x in enumerate(zones_in))
    if units == "fraction":
        coords = [c for ln in lines for c in ln.a + ln.b] + [c for z in zones for p in z.polygon for c in p]
        if any(not -0.5 <= c <= 1.5 for c in coords):
            raise r.fail("units", "'px' (coordinates beyond 0..1 are not fractions)", units)
    return ZoneConfig(lines, zones, units, anchor, retention)


def load_zones(path: str | os.PathLike) -> ZoneConfig:
    """Read a zones file: ``.json``, or YAML for any other suffix (YAML also reads JSON)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneFileError(f"{path}: cannot be read: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ZoneFileError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
                                ) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ZoneFileError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    return parse_zones(data, str(path))
