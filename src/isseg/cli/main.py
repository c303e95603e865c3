"""Entry point of the `isseg` command: `isseg <command> [options]`.

Each sub-command lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``; heavy
imports stay inside ``run`` so that ``isseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("isseg.cli.predict", "segment images, folders, videos, cameras or live streams"),
    "track": ("isseg.cli.track", "track objects in videos and streams: IDs, line counts, zones, events, privacy"),
    "export": ("isseg.cli.export", "export a model to OpenVINO IR or ONNX with the seed's contract"),
    "benchmark": ("isseg.cli.benchmark", "measure latency and throughput of the backends"),
    "train": ("isseg.cli.train", "train or fine-tune on COCO, YOLO-seg, CVAT, VOC, LabelMe data"),
    "evaluate": ("isseg.cli.evaluate", "COCO AP, best-F1 threshold, per-class table, PR curves, confusion matrix"),
    "explain": ("isseg.cli.explain", "saliency maps per class and per detection, drawn over the images"),
    "tune": ("isseg.cli.tune", "hyper-parameter search (Optuna) within a time budget; writes the best recipe"),
    "convert": ("isseg.cli.convert", "convert a torchvision / detectron2 / mmdetection checkpoint"),
    "synth": ("isseg.cli.synth", "write a procedural COCO-format dataset"),
    "data": ("isseg.cli.data", "dataset statistics, and conversion between COCO, YOLO-seg, CVAT, VOC, LabelMe"),
    "info": ("isseg.cli.info", "presets, training recipes, registry weights, parameter counts and FLOPs"),
    "serve": ("isseg.cli.serve", "serve models over HTTP: KServe v2 / OVMS protocol, /predict, a web page"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isseg", description="Mask R-CNN instance segmentation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a sub-command whose module is not there yet
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"isseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        # Expected user errors (bad file, bad field, missing weights, an unwritable disk) become one clear line;
        # a library's multi-line message is joined onto it.
        print(f"isseg {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its lines joined with ' | '), or its type when it has none."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines) if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
