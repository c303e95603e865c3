"""``isseg evaluate``: COCO box and mask AP of a checkpoint or an exported model on a COCO-format dataset.

isseg evaluate --data val.json --images val2017/ --weights runs/exp/best.pth
isseg evaluate --data val.json --images val2017/ --weights model.xml --output report.json
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

BACKENDS = ("torch", "openvino", "onnx")
_EXPORTED = {".xml": "openvino", ".onnx": "onnx"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="ANN.json", help="COCO instances file (ground truth)")
    p.add_argument("--images", required=True, metavar="DIR", help="image directory of the annotation file")
    p.add_argument(
        "--weights", required=True, metavar="CKPT|NAME|MODEL",
        help="checkpoint, registry name, or an exported model (.xml OpenVINO IR, .onnx)",
    )  # fmt: skip
    p.add_argument("--preset", help="model preset for a checkpoint that does not name one")
    p.add_argument(
        "--backend", choices=BACKENDS,
        help="runtime (default: openvino for .xml, onnx for .onnx, torch otherwise)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="device: cpu, cuda[:N] (torch) or an OpenVINO device")
    p.add_argument("--output", metavar="REPORT.json", help="write the report and <stem>_results.json")
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate only the first N images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")


def _backend(weights: str, backend: str | None) -> str:
    inferred = _EXPORTED.get(Path(weights).suffix.lower(), "torch")
    if backend is None:
        return inferred
    if backend == "torch" and inferred != "torch":
        raise ValueError(f"--backend torch cannot run the exported model {weights}; use {inferred}")
    return backend


def build_predictor(
    weights: str, backend: str | None = None, preset: str | None = None, device: str = "cpu"
) -> Any:
    """An object with ``predict(image_bgr)`` and ``class_names``: ``isseg.Predictor`` for an exported model
    or a non-torch backend, else the PyTorch model from ``isseg.load_model``, in eval mode on ``device``."""
    chosen = _backend(weights, backend)
    if chosen != "torch":
        from isseg.deploy.predictor import Predictor

        kwargs: dict[str, Any] = {"backend": chosen}
        if "device" in inspect.signature(Predictor).parameters:
            kwargs["device"] = device
        return Predictor(weights, **kwargs)
    from isseg.weights.loading import load_model

    model = load_model(weights, preset=preset)
    return model.to(device).eval()


def run(args: argparse.Namespace) -> int:
    from isseg.engine.coco_eval import format_coco_table
    from isseg.engine.evaluate import evaluate

    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
    predictor = build_predictor(args.weights, args.backend, args.preset, args.device)
    report = evaluate(
        predictor, args.data, args.images, output=args.output, max_images=args.max_images,
        progress=not args.no_progress,
    )  # fmt: skip
    print(format_coco_table({k: report[k] for k in ("bbox", "segm") if k in report}))
    print(f"images: {report['images']}, detections: {report['detections']}, "
          f"{report['seconds_per_image'] * 1000:.1f} ms per image (predict)")  # fmt: skip
    for item in report["missing_images"]:
        print(f"skipped image {item['image_id']} ({item['file_name']}): {item['reason']}")
    if args.output:
        print(f"report: {args.output}; results: {report['results_file']}")
    return 0
