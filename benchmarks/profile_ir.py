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
    from isseg.deploy.runtime_openvino import rt_value

    core = ov.Core()
    model = core.read_model(str(xml))
    shape = model.inputs[0].get_partial_shape()
    meta = read_metadata(lambda s, k: rt_value(model, s, k), (shape[2].get_length(), shape[3].get_length()), str(xml))
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
    dets: dict[int, list[int]] = {}
    samples: list[dict[str, list]] = [{} for _ in xmls]
    totals: list[list[float]] = [[] for _ in xmls]
    for i, img in enumerate(images * rounds):
        for (_, request, input_cfg), layers, total in zip(runs, samples, totals):
            x = network_input(img, input_cfg)[0]
            if i == 0:
                request.infer({0: x})  # warm-up
            request.infer({0: x})
            dets.setdefault(id(request), []).append(_detections(request))
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
    return [_summary(xml, run[0], layers, total, dets[id(run[1])]) for xml, run, layers, total
            in zip(xmls, runs, samples, totals)]


def _detections(request: Any) -> int:
    """Detections the image had (rows of the ``boxes`` output with a score): the mask head's batch."""
    for out in request.model_outputs:
        if "boxes" in out.get_names():
            return int((request.get_tensor(out).data[:, 4] > 0).sum())
    return 0


def _summary(xml: Path, compiled: Any, layers: dict[str, list], totals: list[float], dets: list[int]) -> dict:
    by_part: dict[tuple[str, str, str], float] = defaultdict(float)
    best: dict[tuple[str, str, str], float] = defaultdict(float)  # noise only adds: each layer's fastest run
    top = []
    for name, (ntype, etype, part, kind, times) in layers.items():
        ms = statistics.median(times) * len(times) / len(totals)  # a layer skipped in some runs counts as 0 there
        by_part[(part, ntype if kind != ntype else "", kind)] += ms
        best[(part, ntype if kind != ntype else "", kind)] += min(times) if len(times) == len(totals) else 0.0
        top.append([name, ntype, etype, part, ms])
    flops = layer_gflops(compiled, rois=1000, detections=int(statistics.median(dets)))
    rates: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # kind -> [GFLOP, ms (best run of each layer)]
    for name, (kind, gflop) in flops.items():
        if name in layers:
            rates[kind][0] += gflop
            rates[kind][1] += min(layers[name][4])
    return {"model": str(xml), "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "images": len(totals), "total_ms": statistics.median(totals),
            "total_spread_ms": [min(totals), max(totals)], "rates": dict(rates),
            "by_part": sorted(([p, t, k, ms] for (p, t, k), ms in by_part.items()), key=lambda r: -r[3]),
            "by_part_best": sorted(([p, t, k, ms] for (p, t, k), ms in best.items()), key=lambda r: -r[3]),
            "total_best_ms": sum(best.values()),
            "top_layers": sorted(top, key=lambda r: -r[4])}


def layer_gflops(compiled: Any, rois: int, detections: int) -> dict[str, tuple[str, float]]:
    """GFLOPs (a multiply-add = 2) of each convolution, deconvolution and fully connected node of the execution
    graph, with its kind ("7x7 conv 3->64 (stem)", "1x1 conv at 192x256", "fully connected", ...); a dynamic
    batch is ``rois`` for fully connected layers and ``detections`` for convolutions (the mask head)."""
    out = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = str(info["layerType"].astype(str)) if "layerType" in info else op.get_type_name()
        if kind not in ("Convolution", "Deconvolution", "FullyConnected") or op.get_input_size() < 2:
            continue
        shape = [d.get_length() if d.is_static else (rois if kind == "FullyConnected" else detections)
                 for d in op.output(0).get_partial_shape()]
        w = op.input(1).get_partial_shape()
        if not w.is_static:
            continue
        w = [d.get_length() for d in w]
        if kind == "FullyConnected":
            k = w[-1] if len(w) == 2 else int(np.prod(w[1:]))
            label = "fully connected"
        elif kind == "Deconvolution":
            k = w[0] * w[2] * w[3] // 4 if len(w) == 4 else 0  # 2x2 stride 2: each output sums C_in terms
            label = f"deconvolution {w[2]}x{w[3]}"
        else:
            k = int(np.prod(w[1:])) if len(w) == 4 else int(np.prod(w[2:]))
            size = f"{shape[2]}x{shape[3]}" if shape[0] == 1 else "RoIs"
            label = f"{w[-2]}x{w[-1]} conv {w[1]}->{w[0]} (stem)" if w[1] <= 4 else f"{w[-2]}x{w[-1]} conv at {size}"
        out[op.get_friendly_name()] = (label, 2.0 * float(np.prod(shape)) * k / 1e9)
    return out


def _probed_precision(result: dict) -> str | None:
    """The precision the convolutions ran in ("int8" where any ran in I8), as isseg.testing.ceiling probes it."""
    if any(prec == "I8" for _, _, prec, _ in result["by_part"]):
        return "int8"
    p = result["precision"].lower()
    return "bf16" if "bf" in p else "fp32" if "32" in p else None


def _rate_lines(result: dict, probe: float | None) -> list[str]:
    """GFLOP/s of each kind of layer (its layers' best runs), against the convolution probe's rate."""
    lines = ["", "| kind of layer | GFLOP | ms (best runs) | GFLOP/s | of the probe's rate |", "|---|---|---|---|---|"]
    total = [0.0, 0.0]
    for kind, (gflop, ms) in sorted(result["rates"].items(), key=lambda kv: -kv[1][1]):
        total = [total[0] + gflop, total[1] + ms]
        rate = gflop / ms * 1000 if ms else 0.0
        share = f"{100 * rate / probe:.0f} %" if probe else "-"
        lines.append(f"| {kind} | {gflop:.1f} | {ms:.1f} | {rate:.0f} | {share} |")
    rate = total[0] / total[1] * 1000 if total[1] else 0.0
    share = f"{100 * rate / probe:.0f} %" if probe else "-"
    lines.append(f"| **all** | {total[0]:.1f} | {total[1]:.1f} | {rate:.0f} | {share} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="IR .xml files")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1, help="run the images this many times (medians per layer)")
    p.add_argument("--precision", help="INFERENCE_PRECISION_HINT (default: the CPU's)")
    p.add_argument("--top", type=int, default=15, help="slowest layers to list")
    p.add_argument("--json", help="write the profiles here")
    p.add_argument("--rates", action="store_true", help="also the GFLOP/s of each kind of layer against the "
                   "convolution probe of isseg.testing.ceiling (bf16 / f32 as the first IR runs)")
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
        if args.rates:
            from isseg.deploy.rate_probe import probe_rate

            probed = _probed_precision(r)
            probe = probe_rate(probed) if probed else None
            print(f"\nrates (probe: {probe:.0f} GFLOP/s)" if probe else "\nrates")
            print("\n".join(_rate_lines(r, probe)))
    if len(results) > 1:
        _side_by_side(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _side_by_side(results: list[dict], key: str = "by_part_best") -> None:
    """The parts (part, layer type, kernel) of several profiles in one table, ms per image: by default each
    layer's fastest run (on a shared machine noise only adds time, so the minimum compares the graphs best;
    layers that did not run every time are left out), ``key="by_part"`` the medians."""
    keys: dict[tuple[str, str, str], list[float]] = {}
    for i, r in enumerate(results):
        for part, kind, prec, ms in r[key]:
            keys.setdefault((part, kind, prec), [0.0] * len(results))[i] = ms
    names = " | ".join(f"{Path(r['model']).parent.name}/{Path(r['model']).stem}" for r in results)
    what = "each layer's fastest run" if key == "by_part_best" else "medians"
    print(f"\nside by side (ms per image, {what}):\n\n| part | layer type | kernel | {names} |\n|---|---|---|" +
          "---|" * len(results))
    for (part, kind, prec), ms in sorted(keys.items(), key=lambda kv: -max(kv[1])):
        if max(ms) >= 0.5:
            print(f"| {part} | {kind} | {prec} | " + " | ".join(f"{v:.1f}" for v in ms) + " |")
    total = "total_best_ms" if key == "by_part_best" else "total_ms"
    print("| **total** | | | " + " | ".join(f"**{r[total]:.1f}**" for r in results) + " |")


if __name__ == "__main__":
    sys.exit(main())
