"""COCO AP of a trained model in each deployment precision, against the PyTorch model on the same images.

    .venv/bin/python benchmarks/precision_accuracy.py --weights runs/synth-bench-r18-3600/train/last.pth \\
        --data runs/synth-bench-r18-3600/data/val.json --images runs/synth-bench-r18-3600/data/val \\
        --calibration runs/synth-bench-r18-3600/data/train --input-size 128 128

The benchmark's agreement columns (``isseg benchmark``) use random weights, whose near-tied scores make any
rounding look catastrophic. This script answers the question users actually have: how much box / mask AP
do OpenVINO fp32, bf16 (the CPU default where the CPU has bf16 instructions) and NNCF int8 cost on a
*trained* model? Each configuration runs the whole deployment pipeline (``isseg.Predictor``: letterbox,
exported graph, mask pasting) through ``isseg.evaluate``; the PyTorch model is the reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="isseg checkpoint (or registry name)")
    p.add_argument("--data", required=True, help="COCO annotation JSON of the evaluation images")
    p.add_argument("--images", required=True, help="folder of the evaluation images")
    p.add_argument("--calibration", help="folder of INT8 calibration images (needed for the int8 row)")
    p.add_argument("--calibration-size", type=int, default=32)
    p.add_argument("--input-size", type=int, nargs=2, default=(768, 1024), metavar=("H", "W"),
                   help="exported input size (default 768 1024; use the training size for small models)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"], choices=("fp32", "bf16", "int8"))
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--workdir", help="keep the exported models here (default: a temporary folder)")
    p.add_argument("--json", help="write the table as JSON to this file")
    args = p.parse_args(argv)
    if "int8" in args.precisions and not args.calibration:
        p.error("--calibration DIR is needed for int8 (e.g. the training images), or leave int8 out of --precisions")

    import isseg
    from isseg.engine.evaluate import evaluate
    from isseg.weights.loading import load_model

    model = load_model(args.weights).eval()
    size = (int(args.input_size[0]), int(args.input_size[1]))
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="isseg-precision-")
    workdir = Path(args.workdir or tmp.name)  # type: ignore[union-attr]
    rows: list[dict] = []

    def run(name: str, predictor: object) -> None:
        t0 = time.perf_counter()
        report = evaluate(predictor, args.data, args.images, max_images=args.max_images, progress=False)  # type: ignore[arg-type]
        row = {"configuration": name, "box_AP": report["bbox"]["AP"], "mask_AP": report["segm"]["AP"],
               "box_AP50": report["bbox"]["AP50"], "mask_AP50": report["segm"]["AP50"],
               "ms_per_image": 1000 * report["seconds_per_image"], "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{name}: box AP {row['box_AP']:.4f}, mask AP {row['mask_AP']:.4f} ({row['ms_per_image']:.1f} ms/image)",
              flush=True)

    run("pytorch fp32 (reference)", isseg.Predictor(model, backend="torch", input_size=size))
    xml32 = isseg.export(model, workdir, "openvino", "fp32", input_size=size)
    if "fp32" in args.precisions:
        run("openvino fp32", isseg.Predictor(xml32, precision="f32"))
    if "bf16" in args.precisions:
        run("openvino bf16", isseg.Predictor(xml32, precision="bf16"))
    if "int8" in args.precisions:
        xml8 = isseg.export(model, workdir, "openvino", "int8", input_size=size, calibration=args.calibration,
                            calibration_size=args.calibration_size)
        run("openvino int8", isseg.Predictor(xml8))
    ref = rows[0]
    print("\n| configuration | box AP | mask AP | box AP50 | mask AP50 | Δ mask AP vs PyTorch | ms/image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['configuration']} | {r['box_AP']:.4f} | {r['mask_AP']:.4f} | {r['box_AP50']:.4f} "
              f"| {r['mask_AP50']:.4f} | {r['mask_AP'] - ref['mask_AP']:+.4f} | {r['ms_per_image']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
