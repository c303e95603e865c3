"""``isseg evaluate``: COCO box and mask AP, per-class numbers, the best-F1 confidence threshold, PR curves and a
confusion matrix of a checkpoint or an exported model on a dataset in any supported format, or of per-image
records computed elsewhere.

isseg evaluate --data val.json --images val2017/ --weights runs/exp/best.pth --output report.json
isseg evaluate --data cvat_export/ --weights model.xml --output report.json       # format auto-detected
isseg evaluate --data val.json --results shards/ --output report.json             # no model: score records
isseg evaluate --data 4k.json --images 4k/ --weights model.xml --tile 768            # tiled inference
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from isseg.cli.tiling_args import add_tiling_arguments, tiling_from_args

BACKENDS = ("torch", "openvino", "onnx")
_EXPORTED = {".xml": "openvino", ".onnx": "onnx"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="PATH",
                   help="ground truth: a COCO instances .json, or a dataset folder in another format (--format)")
    p.add_argument("--format", metavar="FORMAT",
                   help="dataset format (default: auto-detect): coco, yolo-seg, cvat, voc, labelme, datumaro")
    p.add_argument("--subset", metavar="NAME", help="only this split of a multi-split dataset (e.g. val)")
    p.add_argument("--images", metavar="DIR", help="image directory of a COCO .json (needed to run a model)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights", metavar="CKPT|NAME|MODEL",
        help="checkpoint, registry name, or an exported model (.xml OpenVINO IR, .onnx)",
    )  # fmt: skip
    source.add_argument("--results", nargs="+", metavar="PATH",
                        help="score per-image records (.jsonl files, or folders of *.jsonl shards) instead")
    p.add_argument("--preset", help="model preset for a checkpoint that does not name one")
    p.add_argument(
        "--backend", choices=BACKENDS,
        help="runtime (default: openvino for .xml, onnx for .onnx, torch otherwise)",
    )  # fmt: skip
    p.add_argument("--device", default=None,
                   help="device: cpu, cuda[:N] (torch) or an OpenVINO device (CPU, GPU); default: the backend's")
    p.add_argument("--output", metavar="REPORT.json",
                   help="write the report, <stem>_records.jsonl, <stem>_results.json and <stem>_analysis/")
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate only the first N images")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="detections counted in the confusion matrix (default 0.5)")
    p.add_argument("--no-analysis", action="store_true", help="COCO numbers only: no curves, matrix or report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")
    add_tiling_arguments(p)


def _backend(weights: str, backend: str | None) -> str:
    inferred = _EXPORTED.get(Path(weights).suffix.lower(), "torch")
    if backend is None:
        return inferred
    if backend == "torch" and inferred != "torch":
        raise ValueError(f"--backend torch cannot run the exported model {weights}; use {inferred}")
    return backend


def build_predictor(
    weights: str, backend: str | None = None, preset: str | None = None, device: str | None = None,
    tiling: Any = None,
) -> Any:
    """An object with ``predict(image_bgr)`` and ``class_names``: ``isseg.Predictor`` for an exported model, a
    non-torch backend or tiled inference (``tiling``: ``PredictorOptions.tiling``, a ``TilingOptions``), else the
    PyTorch model from ``isseg.load_model``, in eval mode (on ``device`` if given). ``device=None`` lets the backend
    choose (OpenVINO names devices ``CPU``, ``GPU``; torch ``cpu``)."""
    from isseg.cli.checks import device_for

    chosen = _backend(weights, backend)
    if chosen != "torch" or tiling:
        from isseg.deploy.predictor import Predictor

        return Predictor(weights, backend=chosen, device=device_for(chosen, device), preset=preset, tiling=tiling)
    from isseg.weights.loading import load_model

    model = load_model(weights, preset=preset)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _ground_truth(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path | None]:
    """The COCO JSON and image folder of ``--data``: as given for a COCO file, else converted once."""
    from isseg.data.formats import load_dataset, normalize_format

    data = Path(args.data)
    fmt = normalize_format(args.format)
    if fmt in (None, "coco") and data.is_file() and data.suffix.lower() == ".json" and args.subset is None:
        return data, Path(args.images) if args.images else None
    loaded = load_dataset(data, args.format, images=args.images, subset=args.subset)
    target = Path(args.output).with_name(f"{Path(args.output).stem}_gt.json") if args.output else workdir / "gt.json"
    loaded.write(target)
    print(f"isseg evaluate: {data} ({loaded.format}, {len(loaded.coco['images'])} images) as COCO: {target}")
    return target, loaded.image_dir


def run(args: argparse.Namespace) -> int:
    from isseg.engine.analysis import text_table
    from isseg.engine.coco_eval import format_coco_table
    from isseg.engine.evaluate import evaluate, evaluate_records
    from isseg.engine.threshold import format_threshold

    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
    tiling = tiling_from_args(args)
    if args.results and tiling is not None:
        raise ValueError("--tile / --no-tile: --results scores records computed elsewhere; tile where they are "
                         "computed (isseg predict --tile)")
    with tempfile.TemporaryDirectory(prefix="isseg-eval-") as tmp:
        ann, images = _ground_truth(args, Path(tmp))
        analysis = not args.no_analysis
        if args.results:
            report = evaluate_records(args.results, ann, images, output=args.output, analysis=analysis,
                                      score_threshold=args.score_threshold)
        else:
            if images is None:
                raise ValueError(f"--images: the image folder of {ann} is needed to run a model")
            predictor = build_predictor(args.weights, args.backend, args.preset, args.device, tiling)
            try:
                report = evaluate(
                    predictor, ann, images, output=args.output, max_images=args.max_images,
                    progress=not args.no_progress, analysis=analysis, score_threshold=args.score_threshold,
                )  # fmt: skip
            except KeyboardInterrupt:
                if args.output:
                    from isseg.engine.evaluate import records_path_for

                    partial = f"{records_path_for(args.output)}.partial"
                    print(f"isseg evaluate: interrupted; the images done so far are in {partial} "
                          f"(score them: isseg evaluate --data {args.data} --results {partial})", file=sys.stderr)
                raise
    print(format_coco_table({k: report[k] for k in ("bbox", "segm") if k in report}))
    if report.get("per_class"):
        print(text_table(report["per_class"]))
    if "confidence_threshold" in report:
        print(format_threshold(report["confidence_threshold"]))
    timing = (f", {report['seconds_per_image'] * 1000:.1f} ms per image (predict)"
              if "seconds_per_image" in report else "")
    print(f"images: {report['images']}, detections: {report['detections']}{timing}")
    if "records" in report:
        r = report["records"]
        print(f"records: {r['records']} from {len(r['files'])} file(s), {r['duplicates']} duplicate(s) replaced")
    for item in report["missing_images"]:
        print(f"skipped image {item['image_id']} ({item['file_name']}): {item['reason']}")
    if args.output:
        print(f"report: {args.output}; results: {report['results_file']}")
        if "analysis" in report:
            print(f"analysis: {report['analysis']['html']}")
    return 0
