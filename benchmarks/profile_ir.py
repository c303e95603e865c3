"""Per-layer profile of an exported IR on OpenVINO's CPU plugin: where the time goes, in which precision.

    .venv/bin/python benchmarks/profile_ir.py /tmp/bench/security-0002-int8.xml --images 4 [--precision f32]
    .venv/bin/python benchmarks/profile_ir.py A.xml B.xml --images 4 --json profile.json   # side by side

Runs the IR (``PERF_COUNT``, latency hint) on coco-mini val2017 images pre-processed by the preset, and sums
each executed layer's time over the images. Layers are grouped by part of the network (the ``NETWORK_SCOPES``
of ``isseg.deploy.graph``: backbone, RPN head, box / mask RoIAlign, box / mask head, ...; everything else is
"geometry": anchors, decoding, NMS, top-k, gathers), and by what the plugin ran: the kernel's precision (I8 /
BF16 / FP32 from ``exec_type``), with reorders and precision conversions in their own rows. This is how one
finds what keeps an INT8 model from its bound: float convolutions, reorders between int8 and float layouts,
and the serial geometry.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def part_of(name: str) -> str:
    from isseg.deploy.graph import NETWORK_SCOPES

    for scope in NETWORK_SCOPES:
        if scope in name:
            return scope.strip("/").replace("/", ".")
    return "geometry"


def kernel_precision(exec_type: str) -> str:
    m = re.search(r"_(I8|U8|BF16|FP32|F32|FP16|F16|I32|I64)$", exec_type, re.IGNORECASE)
    if not m:
        return "?"
    kind = m.group(1).upper()
    return {"F32": "FP32", "F16": "FP16"}.get(kind, kind)


def profile(xml: Path, images: list[np.ndarray], precision: str | None) -> dict:
    import openvino as ov

    from isseg.deploy.contract import read_metadata
    from isseg.deploy.runtime_openvino import _rt
    from isseg.model.transform import network_input

    core = ov.Core()
    model = core.read_model(str(xml))
    shape = model.inputs[0].get_partial_shape()
    meta = read_metadata(lambda s, k: _rt(model, s, k), (shape[2].get_length(), shape[3].get_length()), str(xml))
    config = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    inputs = [network_input(img, meta.config.input)[0] for img in images]
    request.infer({0: inputs[0]})  # warm-up
    by_part: dict[tuple[str, str, str], float] = defaultdict(float)
    layers: dict[str, list] = {}
    total = 0.0
    for x in inputs:
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            ms = info.real_time.total_seconds() * 1000.0
            kind = info.node_type if info.node_type in ("Reorder", "Convert") else kernel_precision(info.exec_type)
            part = part_of(info.node_name)
            by_part[(part, info.node_type if kind != info.node_type else "", kind)] += ms
            row = layers.setdefault(info.node_name, [info.node_type, info.exec_type, part, 0.0])
            row[3] += ms
            total += ms
    n = len(inputs)
    return {"model": str(xml), "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "images": n, "total_ms": total / n,
            "by_part": sorted(([p, t, k, ms / n] for (p, t, k), ms in by_part.items()), key=lambda r: -r[3]),
            "top_layers": sorted(([name, *row[:3], row[3] / n] for name, row in layers.items()),
                                 key=lambda r: -r[4])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="IR .xml files")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--precision", help="INFERENCE_PRECISION_HINT (default: the CPU's)")
    p.add_argument("--top", type=int, default=15, help="slowest layers to list")
    p.add_argument("--json", help="write the profiles here")
    args = p.parse_args(argv)

    from isseg.sources.decode import read_image_file
    from isseg.testing.datasets import coco_images

    images = [read_image_file(path) for path in coco_images(args.images)]
    results = [profile(xml, images, args.precision) for xml in args.models]
    for r in results:
        print(f"\n## {r['model']} ({r['precision']}): {r['total_ms']:.1f} ms of layers per image "
              f"(sum of layer times, median-free mean of {r['images']} images)\n")
        print("| part | layer type | kernel | ms | share |\n|---|---|---|---|---|")
        for part, kind, prec, ms in r["by_part"]:
            if ms >= 0.5:
                print(f"| {part} | {kind} | {prec} | {ms:.1f} | {100 * ms / r['total_ms']:.1f} % |")
        print(f"\nslowest {args.top} layers:\n\n| layer | type | kernel | part | ms |\n|---|---|---|---|---|")
        for name, ntype, etype, part, ms in r["top_layers"][:args.top]:
            print(f"| {name[-60:]} | {ntype} | {etype} | {part} | {ms:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
