"""An automatic tile size: object-size statistics of a dataset, and the tiling they call for.

The idea (OpenVINO Training Extensions chooses its tile size from the objects' sizes too) in isseg's terms:

- a square tile of ``t`` frame pixels reaches the network scaled by ``short / t``, ``short`` being the shorter
  side of the model's input. The tile is chosen so that a *typical* object (the median box sqrt-area) spans
  ``object_fraction`` of the tile side, i.e. ``object_fraction * short`` pixels at the network's input
  (``t = median / object_fraction``), rounded to a multiple of 32 and zoomed in at most ``max_zoom`` times;
- the overlap is chosen so that a *robust maximum* object (the 99th percentile of the box's longer side, not the
  single largest, which one odd annotation would set) fits in the overlap, so it is whole in at least one tile;
  objects that need more than ``MAX_OVERLAP`` are left to the whole-frame tile (``full_frame``);
- no tiling is needed when the whole images, fitted into the model's input, already show the typical object at
  ``object_fraction * short`` pixels or more.

Sizes are those of the annotations' boxes (crowd regions left out): ``sqrt(w * h)`` and ``max(w, h)``, in pixels
and relative to the image (sqrt-area over ``sqrt(W * H)``, longer side over the image's longer side).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from isseg.tiling.options import TilingOptions

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
ROBUST_MAX = 99  # the percentile that stands for "the largest objects"
MAX_OVERLAP = 0.5  # more overlap than this costs more tiles than the whole-frame tile it would save
OVERLAP_STEP = 0.05
TILE_STEP = 32


@dataclass(frozen=True)
class TileSuggestion:
    """The tiling a dataset calls for (see the module docstring).

    Attributes:
        tiling: the suggested options, or None when no tiling is needed.
        reason: one sentence: why this tile and overlap, or why no tiling.
        input_size: the model's input (H, W) the suggestion is for.
        typical_px: median box sqrt-area in frame pixels.
        robust_max_px: 99th percentile of the box's longer side in frame pixels.
        untiled_px: median box sqrt-area at the network's input when whole images are fitted into it.
        tiled_px: the same in the suggested tiles (None without tiling).
    """

    tiling: TilingOptions | None
    reason: str
    input_size: tuple[int, int]
    typical_px: float
    robust_max_px: float
    untiled_px: float
    tiled_px: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: lists, not tuples (so that it equals its own JSON round trip)."""
        out = asdict(self)
        out["tiling"] = None if self.tiling is None else json.loads(self.tiling.to_json())
        out["input_size"] = list(self.input_size)
        return out


def object_sizes(coco: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per non-crowd annotation with a box of positive size, float64 ``[N]``: ``sqrt_area`` and ``max_side``
    (frame pixels), ``rel_sqrt_area`` (over ``sqrt(W * H)`` of its image), ``rel_max_side`` (over the image's
    longer side); and ``image_hw`` float64 ``[N, 2]``, its image's (H, W)."""
    images = {img["id"]: (float(img["height"]), float(img["width"])) for img in coco["images"]}
    rows = []
    for a in coco["annotations"]:
        if a.get("iscrowd", 0) or a["image_id"] not in images:
            continue
        w, h = float(a["bbox"][2]), float(a["bbox"][3])
        if w > 0 and h > 0:
            rows.append((math.sqrt(w * h), max(w, h), *images[a["image_id"]]))
    arr = np.asarray(rows, np.float64).reshape(-1, 4)
    return {"sqrt_area": arr[:, 0], "max_side": arr[:, 1], "image_hw": arr[:, 2:],
            "rel_sqrt_area": arr[:, 0] / np.sqrt(arr[:, 2] * arr[:, 3]),
            "rel_max_side": arr[:, 1] / np.maximum(arr[:, 2], arr[:, 3])}


def size_statistics(sizes: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Percentiles (``PERCENTILES`` and the maximum) of the four size measures of :func:`object_sizes`, JSON-ready:
    ``{"objects": N, "sqrt_area": {"p1": ..., "p99": ..., "max": ...}, ...}``."""
    out: dict[str, Any] = {"objects": int(len(sizes["sqrt_area"]))}
    for key in ("sqrt_area", "max_side", "rel_sqrt_area", "rel_max_side"):
        values = sizes[key]
        if len(values) == 0:
            out[key] = None
            continue
        row = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}
        out[key] = {**row, "max": float(values.max())}
    return out


def suggest_tiling(sizes: Mapping[str, np.ndarray], input_size: Sequence[int], object_fraction: float = 0.08,
                   max_zoom: float = 4.0) -> TileSuggestion:
    """The tile size and overlap for objects of ``sizes`` (:func:`object_sizes`) and a model whose input is
    ``input_size`` (H, W; a fit canvas or short/long sides). See the module docstring for the rule;
    ``object_fraction`` in (0, 1): the typical object's share of the tile side; ``max_zoom`` >= 1: the most a tile
    is enlarged on its way into the network (very small objects stay small rather than blur)."""
    if not 0.0 < object_fraction < 1.0:
        raise ValueError(f"object_fraction must be in (0, 1), got {object_fraction}")
    if not max_zoom >= 1.0:
        raise ValueError(f"max_zoom must be >= 1, got {max_zoom}")
    hin, win = int(input_size[0]), int(input_size[1])
    if len(sizes["sqrt_area"]) == 0:
        raise ValueError("no object with a box to measure: the dataset has no (non-crowd) annotation")
    short = min(hin, win)
    hw = sizes["image_hw"]
    untiled = sizes["sqrt_area"] * np.minimum(hin / hw[:, 0], win / hw[:, 1])
    typical, untiled_px = float(np.median(sizes["sqrt_area"])), float(np.median(untiled))
    robust = float(np.percentile(sizes["max_side"], ROBUST_MAX))
    target = object_fraction * short
    common = dict(input_size=(hin, win), typical_px=typical, robust_max_px=robust, untiled_px=untiled_px)
    if untiled_px >= target:
        return TileSuggestion(None, f"no tiling needed: whole images fitted into the {hin}x{win} input show the "
                              f"typical object at {untiled_px:.0f} px (>= {target:.0f} px, {object_fraction:g} of "
                              f"{short})", tiled_px=None, **common)  # type: ignore[arg-type]
    smallest = max(TILE_STEP, TILE_STEP * math.ceil(short / max_zoom / TILE_STEP))
    tile = max(smallest, TILE_STEP * round(typical / object_fraction / TILE_STEP))
    need = robust / tile
    overlap = min(MAX_OVERLAP, max(OVERLAP_STEP, OVERLAP_STEP * math.ceil(need / OVERLAP_STEP - 1e-9)))
    tiled_px = typical * short / tile
    reason = (f"{tile} px tiles show the typical object ({typical:.0f} px) at {tiled_px:.0f} px of the {hin}x{win} "
              f"input (whole images: {untiled_px:.0f} px)")
    if tile == smallest and tiled_px < target:
        reason += f"; objects are so small that even a {max_zoom:g}x zoom leaves them under {target:.0f} px"
    if need > MAX_OVERLAP:
        reason += (f"; the largest objects ({robust:.0f} px, {ROBUST_MAX}th percentile) exceed a {MAX_OVERLAP:g} "
                   "overlap and are left to the whole-frame tile")
    else:
        reason += f"; overlap {overlap:g} holds the largest objects ({robust:.0f} px, {ROBUST_MAX}th percentile)"
    tiling = TilingOptions(tile_size=int(tile), overlap=round(overlap, 2), full_frame=need > overlap)
    return TileSuggestion(tiling, reason, tiled_px=tiled_px, **common)  # type: ignore[arg-type]


def format_suggestion(stats: Mapping[str, Any], suggestion: Mapping[str, Any] | None) -> str:
    """One readable block: the size percentiles (:func:`size_statistics`) and the suggestion
    (:meth:`TileSuggestion.to_dict`, or None)."""
    if not stats["objects"]:
        return "object sizes: no (non-crowd) annotation to measure; no tile size to suggest"
    labels = {"sqrt_area": "sqrt(box area) px", "max_side": "box longer side px",
              "rel_sqrt_area": "  / sqrt(image area)", "rel_max_side": "  / image longer side"}
    keys = [f"p{p}" for p in PERCENTILES] + ["max"]
    lines = [f"object sizes ({stats['objects']} boxes):", f"  {'':<22}" + "".join(f"{k:>8}" for k in keys)]
    for name, label in labels.items():
        fmt = "{:>8.3f}" if name.startswith("rel") else "{:>8.1f}"
        lines.append(f"  {label:<22}" + "".join(fmt.format(stats[name][k]) for k in keys))
    if suggestion is not None:
        h, w = suggestion["input_size"]
        t = suggestion["tiling"]
        head = (f"suggested tiling for a {h}x{w} input: " + ("none" if t is None else
                f"--tile {t['tile_size']} --tile-overlap {t['overlap']:g}"
                + ("" if t["full_frame"] else " --tile-full-image no")))
        lines += [head, f"  {suggestion['reason']}"]
    return "\n".join(lines)
