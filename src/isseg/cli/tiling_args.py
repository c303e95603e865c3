"""The ``--tile*`` options of every command that runs or exports a model (``isseg export``, ``predict``, ``track``,
``evaluate``, ``serve``): one argument group, one parser into :class:`isseg.tiling.TilingOptions`.

    isseg predict frames/ --model out/security-0002.xml --tile 768x1024 --tile-overlap 0.2   # tile at inference
    isseg predict frames/ --model tiled.xml --no-tile                                        # ignore the IR's tiling

Without ``--tile`` a command runs the model as it is: an IR exported with ``--tile`` tiles, others do not
(``PredictorOptions.tiling=None``); ``--tile SIZE`` (square) or ``--tile HxW`` tiles with these options (an
export's tiles are square: Model API's tiler reads them); ``--no-tile`` never tiles (``tiling=False``). A bad
value is one line naming its option, checked before any model loads.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isseg.tiling.options import TilingOptions

# argument dest -> TilingOptions field
_TILE_OPTIONS = {"tile_overlap": "overlap", "tile_full_image": "full_frame", "tile_merge": "merge",
                 "tile_match_metric": "match_metric", "tile_match_threshold": "match_threshold",
                 "tile_max_detections": "max_detections"}


def add_tiling_arguments(p: argparse.ArgumentParser, export: bool = False) -> None:
    """The ``--tile*`` group; ``export``: the options are stored in the model (no ``--no-tile``)."""
    title = ("tiling (stored in the model: Model API's tiler and isseg's Predictor tile with it)" if export else
             "tiling (small objects in large frames; default: the model's own, i.e. an IR exported with --tile tiles)")
    t = p.add_argument_group(title)
    t.add_argument("--tile", metavar="SIZE" if export else "SIZE|HxW",
                   help="square tiles of SIZE frame pixels (Model API's tile_size)"
                        + ("" if export else ", or H x W tiles (768x1024: the seed's canvas, no padding)")
                        + "; a tile is resized into the model's canvas like any image, so tiles no larger than "
                          "the canvas keep the objects' scale")
    if not export:
        t.add_argument("--no-tile", action="store_true",
                       help="never tile, even a model exported with tiling (whole frames, as exported untiled)")
    t.add_argument("--tile-overlap", type=float, metavar="F",
                   help="least overlap of neighbouring tiles, a fraction of SIZE in [0, 1) (default 0.2)")
    t.add_argument("--tile-full-image", choices=("yes", "no"),
                   help="also run the whole frame as one more tile (default yes)")
    t.add_argument("--tile-merge", choices=("nms", "nmm"),
                   help="nms: class-wise NMS (Model API's); nmm: greedy merging, objects cut by tile borders come "
                        "out whole (default nmm; Model API's tiler always uses NMS)")
    t.add_argument("--tile-match-metric", choices=("iou", "ios"), help="box overlap measure of the merge (default ios)")
    t.add_argument("--tile-match-threshold", type=float, metavar="T", help="merge above this overlap (default 0.5)")
    t.add_argument("--tile-max-detections", type=int, metavar="N", help="detections per frame (default 100)")


def tiling_from_args(args: argparse.Namespace) -> TilingOptions | bool | None:
    """The ``--tile*`` options as ``PredictorOptions.tiling``: ``TilingOptions`` with ``--tile``, False with
    ``--no-tile``, None (the model's own) without either; a bad value is one ValueError line naming its option."""
    from isseg.cli import checks
    from isseg.tiling.options import TilingOptions

    given = {field: getattr(args, name) for name, field in _TILE_OPTIONS.items() if getattr(args, name) is not None}
    names = ", ".join("--" + n.replace("_", "-") for n in _TILE_OPTIONS if getattr(args, n) is not None)
    if getattr(args, "no_tile", False):
        if args.tile is not None or given:
            others = ", ".join(([] if args.tile is None else ["--tile"]) + ([names] if names else []))
            raise ValueError(f"--no-tile: cannot be combined with {others}; pick one")
        return False
    if args.tile is None:
        if given:
            raise ValueError(f"{names}: needs --tile SIZE (the tile size turns tiling on)")
        return None
    size = tile_size(args.tile)
    if args.tile_overlap is not None and not 0.0 <= args.tile_overlap < 1.0:
        raise ValueError(f"--tile-overlap: expected a fraction in [0, 1), got {args.tile_overlap}")
    checks.in_range(args.tile_match_threshold, "--tile-match-threshold", 0.0, 1.0)
    checks.at_least(args.tile_max_detections, "--tile-max-detections", 1)
    if "full_frame" in given:
        given["full_frame"] = given["full_frame"] == "yes"
    return TilingOptions(tile_size=size, **given)


def tile_size(text: str) -> int | tuple[int, int]:
    """``--tile``'s value: ``768`` (square) or ``768x1024`` (height x width), sides >= 32 frame pixels."""
    from isseg.cli import checks

    parts = str(text).lower().split("x")
    if len(parts) > 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise ValueError(f"--tile: expected SIZE or HEIGHTxWIDTH in pixels (e.g. 768 or 768x1024), got {text!r}")
    sides = [int(p) for p in parts]
    for side in sides:
        checks.at_least(side, "--tile", 32)
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def describe_tiling(tiling: TilingOptions, input_size: tuple[int, int]) -> str:
    """A few words on what a Predictor's tiling does, e.g. ``320x320 tiles, overlap >= 0.2, + the whole frame,
    merge nmm (ios > 0.5)``."""
    th, tw = tiling.tile_hw(input_size)
    return (f"{th}x{tw} tiles, overlap >= {tiling.overlap:g}{', + the whole frame' if tiling.full_frame else ''}, "
            f"merge {tiling.merge} ({tiling.match_metric} > {tiling.match_threshold:g}), "
            f"<= {tiling.max_detections} detections")
