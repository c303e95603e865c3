"""``isseg benchmark``: latency per stage, end-to-end latency, images/s in latency and throughput mode, the
compute bound of each deployment backend and precision, and latency by number of detections, against
torchvision's eager ``maskrcnn_resnet50_fpn`` measured in the same run.

    isseg benchmark                                   # seeded realistic random weights, 8 coco-mini images
    isseg benchmark --weights model.pth --images 20 --precisions fp32 bf16 int8 --json bench.json
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", "-w", help="checkpoint or registry name (default: seeded random weights "
                   "calibrated to give ~100 detections per image, for realistic timing)")
    p.add_argument("--preset", default="security-0002", help="preset (default: %(default)s)")
    p.add_argument("--images", type=int, default=8, help="coco-mini val images to measure (default: 8)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backends", nargs="+", default=["openvino", "onnx"], choices=("openvino", "onnx"))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"],
                   choices=("fp32", "bf16", "fp16", "int8"), help="OpenVINO precisions (fp32 always runs)")
    p.add_argument("--no-torchvision", action="store_true", help="skip the torchvision eager baseline")
    p.add_argument("--torch-eager", action="store_true", help="also time isseg's own graph in eager PyTorch")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput-mode runs")
    p.add_argument("--no-auto-probe", action="store_true",
                   help="skip running --mode auto's probe on each OpenVINO configuration (its pick is reported)")
    p.add_argument("--detections", type=int, nargs="*", default=[0, 20, 100], metavar="N",
                   help="also time the default precision and int8 at these detection counts (default "
                   "0 20 100; twins of the model that return at most N); give the flag alone to skip")
    p.add_argument("--no-ceiling", action="store_true",
                   help="skip the compute ceiling (the CPU's convolution rate and each configuration's latency bound)")
    p.add_argument("--calibration-size", type=int, default=16, help="INT8 calibration images (coco-mini train)")
    p.add_argument("--workdir", help="keep the exported models here and reuse them in later runs")
    p.add_argument("--json", help="also write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from isseg.cli import checks
    from isseg.testing.bench_report import format_report
    from isseg.testing.benchmark import BenchConfig, run_benchmark

    checks.at_least(args.images, "--images", 1)
    checks.at_least(args.warmup, "--warmup", 0)
    checks.at_least(args.calibration_size, "--calibration-size", 1)
    for n in args.detections:
        checks.at_least(n, "--detections", 0)
    if args.workdir:
        checks.output_dir(args.workdir, "--workdir")
    if args.json:
        checks.output_file(args.json, "--json")
    cfg = BenchConfig(weights=args.weights, preset=args.preset, images=args.images, warmup=args.warmup,
                      backends=tuple(args.backends), precisions=tuple(args.precisions),
                      torchvision=not args.no_torchvision, torch_eager=args.torch_eager,
                      calibration_size=args.calibration_size, workdir=args.workdir,
                      throughput=not args.no_throughput, auto_probe=not args.no_auto_probe,
                      ceiling=not args.no_ceiling,
                      detections=tuple(args.detections))
    report = run_benchmark(cfg, log=lambda msg: print(f"isseg benchmark: {msg}", flush=True))
    print(format_report(report))
    if args.json:
        from isseg.atomic import atomic_write

        atomic_write(args.json, json.dumps(report, indent=2))
    return 0
