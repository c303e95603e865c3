"""``isseg export``: write an OpenVINO IR or ONNX model with the seed's contract.

    isseg export model.pth --output out/                              # OpenVINO IR, fp32
    isseg export torchvision-v1-coco --format onnx --output out/     # registry name
    isseg export model.pth --precision int8 --calibration images/    # NNCF INT8 (calibration images required)
    isseg export runs/exp/best.pth --explain -o out/                 # + saliency_map, feature_vector outputs
    isseg export model.pth --tile 768 --tile-overlap 0.2              # tiled inference in the IR's metadata
    isseg export runs/tiled/best.pth -o out/          # a run trained with --tile: its tiling, unless --tile is given

The file is named after the model (``isseg.deploy.export.default_name``: ``security-0002.xml`` for the seed's
preset and classes, else the preset and the classes) and carries the checkpoint's best-F1 confidence threshold
when training stored one.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from isseg.cli.tiling_args import add_tiling_arguments, tiling_from_args

if TYPE_CHECKING:
    from isseg.tiling.options import TilingOptions


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="checkpoint path (isseg, torchvision, detectron2, mmdetection) or registry name")
    p.add_argument("--preset", help="preset of a foreign checkpoint (default: the checkpoint's own / natural one)")
    p.add_argument("--format", "-f", choices=("openvino", "onnx"), default="openvino")
    p.add_argument("--precision", "-p", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="fp16: OpenVINO weights in fp16; int8: NNCF post-training quantization")
    p.add_argument("--output", "-o", default="exported", help="output folder (default: %(default)s)")
    p.add_argument("--name", help="file stem (default: the preset name, plus the classes when they are not COCO's "
                                  "80, plus -fp16 / -int8)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("A", "B"),
                   help="inference size: a fit canvas H W, or short/long sides (default: the checkpoint's own, "
                        "e.g. 768 1024 for security-0002)")
    p.add_argument("--calibration", metavar="DIR", help="folder of calibration images (required for int8)")
    p.add_argument("--calibration-size", type=int, default=32, help="number of calibration images")
    p.add_argument("--confidence-threshold", type=float, default=None,
                   help="score threshold deployed with the model (rt_info model_info/confidence_threshold: Model "
                        "API's default and isseg predict's); default: the best-F1 threshold a training checkpoint "
                        "stores, else 0.5")
    p.add_argument("--explain", action="store_true",
                   help="add the saliency_map and feature_vector outputs Model API reads (docs/explain.md); the "
                        "contract's labels, boxes and masks stay as they are")
    add_tiling_arguments(p, export=True)


def check_options(args: argparse.Namespace) -> None:
    """What can fail is checked before the model is loaded and traced (minutes for INT8)."""
    from pathlib import Path

    from isseg.cli import checks

    checks.in_range(args.confidence_threshold, "--confidence-threshold", 0.0, 1.0)
    checks.at_least(args.calibration_size, "--calibration-size", 1)
    if args.precision == "int8" and args.calibration is None:
        raise ValueError("--precision int8 needs --calibration DIR: a folder of a few dozen images like the "
                         "deployment's")
    if args.input_size is not None and min(args.input_size) < 32:
        raise ValueError(f"--input-size: expected H and W >= 32, got {args.input_size[0]} {args.input_size[1]}")
    if args.calibration is not None and not Path(args.calibration).is_dir():
        raise FileNotFoundError(f"--calibration: image folder not found: {args.calibration}")
    checks.output_dir(args.output, "--output")
    args.tiling = tiling_from_args(args)
    if args.tiling is not None and not isinstance(args.tiling.tile_size, int):
        raise ValueError(f"--tile {args.tile}: Model API's tiler (which reads the IR) takes square tiles; give "
                         "--tile SIZE (rectangular tiles: isseg predict --tile HxW on an untiled IR)")


def run(args: argparse.Namespace) -> int:
    from isseg.deploy.contract import DEFAULT_CONFIDENCE_THRESHOLD
    from isseg.deploy.export import export
    from isseg.engine.threshold import checkpoint_threshold
    from isseg.weights.loading import load_model

    check_options(args)
    if args.tiling is None:  # no --tile: a checkpoint trained on tiles exports with its tiling
        from isseg.weights.checkpoint import checkpoint_tiling

        args.tiling = checkpoint_tiling(args.weights)
    t0 = time.perf_counter()
    model = load_model(args.weights, preset=args.preset)
    threshold, origin = args.confidence_threshold, "--confidence-threshold"
    if threshold is None:
        stored = checkpoint_threshold(args.weights)
        threshold, origin = ((stored, "the checkpoint's best-F1") if stored is not None
                             else (DEFAULT_CONFIDENCE_THRESHOLD, "default"))
    path = export(model, args.output, format=args.format, precision=args.precision,
                  input_size=tuple(args.input_size) if args.input_size else None, name=args.name,
                  confidence_threshold=threshold, explain=args.explain, tiling=args.tiling,
                  calibration=args.calibration, calibration_size=args.calibration_size)
    size = tuple(args.input_size) if args.input_size else model.config.input.size
    kind = "canvas" if model.config.input.resize == "fit" else "short/long"
    print(f"isseg export: wrote {path} ({args.format}, {args.precision}, preset {model.config.name}, "
          f"{kind} {size[0]}x{size[1]}{'' if args.input_size else ' from the checkpoint'}) in "
          f"{time.perf_counter() - t0:.1f} s; confidence threshold {threshold:g} ({origin})"
          + ("; with saliency_map and feature_vector outputs" if args.explain else ""))
    if args.tiling is not None:
        print(tiling_summary(args.tiling, tuple(size)))
    return 0


def tiling_summary(tiling: TilingOptions, canvas: tuple[int, int]) -> str:
    """One line: what the stored tiling does, in the terms of isseg and of Model API's tiler."""
    th, tw = tiling.tile_hw(canvas)
    scale = min(canvas[0] / th, canvas[1] / tw)
    merge = f"{tiling.merge} ({tiling.match_metric} > {tiling.match_threshold:g})"
    return (f"  tiling: {th}x{tw} tiles, resized x{scale:.2f} into the {canvas[0]}x{canvas[1]} input, overlap "
            f">= {tiling.overlap:g}, {'with' if tiling.full_frame else 'without'} the whole frame, merge {merge}, "
            f"up to {tiling.max_detections} detections (Model API's tiler: tile_size={th}, merge by NMS)")
