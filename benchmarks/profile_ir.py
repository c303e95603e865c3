"""Per-layer profile of an exported IR on OpenVINO's CPU plugin: where the time goes, in which precision.

    .venv/bin/python benchmarks/profile_ir.py /tmp/bench/security-0002-int8.xml --images 4 [--precision f32]
    .venv/bin/python benchmarks/profile_ir.py A.xml B.xml --images 4 --json profile.json   # side by side

Runs the IRs (``PERF_COUNT``, latency hint) on coco-mini val2017 images pre-processed by the preset, the IRs in
turn on each image (a shared machine's load then affects them alike), and takes each executed layer's median
time over the runs; with several IRs a last table puts their parts side by side. Layers are grouped by part of
the network (the ``NETWORK_SCOPES`` of ``isseg.deploy.graph``: backbone, RPN head, box / mask RoIAlign, box /
mask head, ...; everything else is "geometry": anchors, decoding, NMS, top-k, gathers), and by what the plugin
ran: the kernel's precision (I8 / BF16 / FP32 from ``exec_type``), with reorders and precision conversions in
their own rows. This is how one
finds what keeps an INT8 model from its bound: float convolutions, reorders between int8 and float layouts,
and the serial geometry.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

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


def _compiled(xml: Path, precision: str | None) -> tuple[Any, Any, Any]:
    """(compiled model, infer request, preset input config) of an IR, profiled, latency hint."""
    import openvino as ov

    from isseg.deploy.contract import read_metadata
    from isseg.deploy.runtime_openvino import _rt

    core = ov.Core()
    model = core.read_model(str(xml))
    shape = model.inputs[0].get_partial_shape()
    meta = read_metadata(lambda s, k: _rt(model, s, k), (shape[2].get_length(), shape[3].get_length()), str(xml))
    config = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", config)
    return compiled, compiled.create_infer_request(), meta.config.input


def profile(xmls: list[Path], images: list[np.ndarray], precision: str | None, rounds: int = 1) -> list[dict]:
    """Profile of each IR over ``images`` (``rounds`` times each), the IRs run in turn on every image so that
    the load of a shared machine affects them alike; per layer the median over the runs."""
    from isseg.model.transform import network_input

    runs = [_compiled(xml, precision) for xml in xmls]
    samples: list[dict[str, list]] = [{} for _ in xmls]
    totals: list[list[float]] = [[] for _ in xmls]
    for i, img in enumerate(images * rounds):
        for (_, request, input_cfg), layers, total in zip(runs, samples, totals):
            x = network_input(img, input_cfg)[0]
            if i == 0:
                request.infer({0: x})  # warm-up
            request.infer({0: x})
            t = 0.0
            for info in request.profiling_info:
                if info.status != info.Status.EXECUTED:
                    continue
                ms = info.real_time.total_seconds() * 1000.0
                kind = info.node_type if info.node_type in ("Reorder", "Convert") else kernel_precision(info.exec_type)
                row = layers.setdefault(info.node_name, [info.node_type, info.exec_type, part_of(info.node_name),
                                                         kind, []])
                row[4].append(ms)
                t += ms
            total.append(t)
    return [_summary(xml, run[0], layers, total) for xml, run, layers, total in zip(xmls, runs, samples, totals)]


def _summary(xml: Path, compiled: Any, layers: dict[str, list], totals: list[float]) -> dict:
    by_part: dict[tuple[str, str, str], float] = defaultdict(float)
    top = []
    for name, (ntype, etype, part, kind, times) in layers.items():
        ms = statistics.median(times) * len(times) / len(totals)  # a layer skipped in some runs counts as 0 there
        by_part[(part, ntype if kind != ntype else "", kind)] += ms
        top.append([name, ntype, etype, part, ms])
    return {"model": str(xml), "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "images": len(totals), "total_ms": statistics.median(totals),
            "total_spread_ms": [min(totals), max(totals)],
            "by_part": sorted(([p, t, k, ms] for (p, t, k), ms in by_part.items()), key=lambda r: -r[3]),
            "top_layers": sorted(top, key=lambda r: -r[4])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="IR .xml files")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1, help="run the images this many times (medians per layer)")
    p.add_argument("--precision", help="INFERENCE_PRECISION_HINT (default: the CPU's)")
    p.add_argument("--top", type=int, default=15, help="slowest layers to list")
    p.add_argument("--json", help="write the profiles here")
    args = p.parse_args(argv)

    from isseg.sources.decode import read_image_file
    from isseg.testing.datasets import coco_images

    images = [read_image_file(path) for path in coco_images(args.images)]
    results = profile(args.models, images, args.precision, args.rounds)
    for r in results:
        lo, hi = r["total_spread_ms"]
        print(f"\n## {r['model']} ({r['precision']}): {r['total_ms']:.1f} ms of layers per image "
              f"(median of {r['images']} runs, {lo:.0f}-{hi:.0f}; per layer its median)\n")
        print("| part | layer type | kernel | ms | share |\n|---|---|---|---|---|")
        for part, kind, prec, ms in r["by_part"]:
            if ms >= 0.5:
                print(f"| {part} | {kind} | {prec} | {ms:.1f} | {100 * ms / r['total_ms']:.1f} % |")
        print(f"\nslowest {args.top} layers:\n\n| layer | type | kernel | part | ms |\n|---|---|---|---|---|")
        for name, ntype, etype, part, ms in r["top_layers"][:args.top]:
            print(f"| {name[-60:]} | {ntype} | {etype} | {part} | {ms:.1f} |")
    if len(results) > 1:
        _side_by_side(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _side_by_side(results: list[dict]) -> None:
    """The parts (part, layer type, kernel) of several profiles in one table, ms per image."""
    keys: dict[tuple[str, str, str], list[float]] = {}
    for i, r in enumerate(results):
        for part, kind, prec, ms in r["by_part"]:
            keys.setdefault((part, kind, prec), [0.0] * len(results))[i] = ms
    names = " | ".join(Path(r["model"]).stem for r in results)
    print(f"\nside by side (ms per image):\n\n| part | layer type | kernel | {names} |\n|---|---|---|" +
          "---|" * len(results))
    for (part, kind, prec), ms in sorted(keys.items(), key=lambda kv: -max(kv[1])):
        if max(ms) >= 0.5:
            print(f"| {part} | {kind} | {prec} | " + " | ".join(f"{v:.1f}" for v in ms) + " |")
    print("| **total** | | | " + " | ".join(f"**{r['total_ms']:.1f}**" for r in results) + " |")


if __name__ == "__main__":
    sys.exit(main())
