"""Is OpenVINO's fused multi-level RoI feature extractor faster than isseg's per-level RoIAlign? (issue 23, route 1)

    .venv/bin/python benchmarks/roi_extractor.py [--rois 1000] [--threads 1] [--rounds 15]

Builds the box head's RoI pooling of the seed at 768x1024 twice, as small ONNX graphs converted and saved the way
``isseg export`` saves the IR (network scopes in the names, the geometry marked "precise", so it stays fp32 while
the network runs in the CPU's default bf16):

- ``split``: isseg's graph: the mmdetection level formula, per level a ``Gather`` of its RoIs and a ``RoiAlign``
  (aligned, adaptive sampling), one ``Concat``;
- ``fused``: one ``org.openvinotoolkit::ExperimentalDetectronROIFeatureExtractor`` (the operation Open Model
  Zoo's Mask R-CNN IRs use), which the ONNX frontend maps to ``ExperimentalDetectronROIFeatureExtractor-6``;
- ``split-nhwc``: ``split`` with each level's output transposed to [R, 7, 7, C] before the ``Concat`` and fc6's
  weights permuted to match (the same outputs), in case the plugin then skips the reorder before the flatten.

Both read the four pyramid levels from a 1x1 convolution (so they arrive in the network's precision and layout,
as P2..P5 do) and feed a fully connected layer (as fc6 does); the per-layer counters then give the time of
everything but those two (the RoI pooling with its gathers, conversions and reorders). Checks that the two agree
(fp32 inference, rows put in the same order), then times each (the two interleaved, medians) and prints which
kernels the plugin ran.
Seeded random RoIs, 8-600 px, over a 1024x768 image.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

C, S, FC = 256, 7, 64
LEVELS = ((192, 256), (96, 128), (48, 64), (24, 32))  # P2..P5 of 768x1024


def _levels(rois: np.ndarray) -> np.ndarray:
    """mmdetection's level of each RoI (0 = P2)."""
    size = np.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
    return np.clip(np.floor(np.log2(size / 56 + 1e-6)), 0, 3).astype(np.int64)


class _Graph:
    """An ONNX graph under construction: named constants and nodes."""

    def __init__(self) -> None:
        self.inits: list = []
        self.nodes: list = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs: object) -> str:
        from onnx import helper

        domain = attrs.pop("domain", "")
        outputs = [output] + list(attrs.pop("extra_outputs", []))  # type: ignore[call-overload]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return output


def _split(g: _Graph, feats: list[str], nhwc: bool = False) -> str:
    """Level assignment, then per level Gather + RoiAlign, then Concat (isseg's exported graph)."""
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    xy0 = g.node("Slice", ["rois", g.const("c0", i64([0])), g.const("c2", i64([2])), g.const("ax", i64([1]))],
                 "xy0", "/geom/s0")
    xy1 = g.node("Slice", ["rois", "c2", g.const("c4", i64([4])), "ax"], "xy1", "/geom/s1")
    wh = g.node("Sub", [xy1, xy0], "wh", "/geom/wh")
    area = g.node("ReduceProd", [wh], "area", "/geom/area", axes=[1], keepdims=0)
    level = g.node("Sqrt", [area], "size", "/geom/size")
    level = g.node("Mul", [level, g.const("k", f32(1 / 56))], "s56", "/geom/s56")
    level = g.node("Add", [level, g.const("eps", f32(1e-6))], "s56e", "/geom/eps")
    level = g.node("Log", [level], "ln", "/geom/ln")
    level = g.node("Mul", [level, g.const("inv_ln2", f32(1 / np.log(2)))], "log2", "/geom/log2")
    level = g.node("Floor", [level], "floor", "/geom/floor")
    level = g.node("Clip", [level, g.const("lo", f32(0)), g.const("hi", f32(3))], "level", "/geom/clip")
    pooled = []
    for i, feat in enumerate(feats):
        eq = g.node("Equal", [level, g.const(f"L{i}", f32(i))], f"eq{i}", f"/geom/eq{i}")
        idx = g.node("NonZero", [eq], f"nz{i}", f"/geom/nz{i}")
        idx = g.node("Squeeze", [idx, "c0"], f"idx{i}", f"/geom/idx{i}")
        r = g.node("Gather", ["rois", idx], f"r{i}", f"/geom/gather{i}", axis=0)
        zeros = g.node("Mul", [idx, g.const("zero", i64(0))], f"b{i}", f"/geom/batch{i}")
        p = g.node("RoiAlign", [feat, r, zeros], f"p{i}", f"/roi_heads/box_roi_pool/RoiAlign_{i}",
                   mode="avg", output_height=S, output_width=S, sampling_ratio=0,
                   spatial_scale=1.0 / (4 * 2**i), coordinate_transformation_mode="half_pixel")
        if nhwc:
            p = g.node("Transpose", [p], f"t{i}", f"/roi_heads/box_roi_pool/concat/T{i}", perm=[0, 2, 3, 1])
        pooled.append(p)
    return g.node("Concat", pooled, "pooled", "/roi_heads/box_roi_pool/concat/Concat", axis=0)


def _fused(g: _Graph, feats: list[str]) -> str:
    return g.node("ExperimentalDetectronROIFeatureExtractor", ["rois", *feats], "pooled", "/roi_heads/extractor",
                  domain="org.openvinotoolkit", extra_outputs=["rois_out"], output_size=S, sampling_ratio=0,
                  aligned=1, pyramid_scales=[4, 8, 16, 32])


def build(kind: str, rois: int, folder: Path) -> Path:
    """The IR of ``kind`` ("split" or "fused"), saved as ``isseg export`` saves one (geometry marked precise)."""
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper

    from isseg.deploy.export import mark_geometry_precise

    g = _Graph()
    rng = np.random.default_rng(1)
    feats = []
    for i in range(4):
        w = g.const(f"w{i}", (rng.standard_normal((C, C, 1, 1)) * 0.06).astype(np.float32))
        feats.append(g.node("Conv", [f"x{i}", w], f"f{i}", f"/backbone/fpn/conv{i}"))
    inputs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1, C, h, w]) for i, (h, w) in
              enumerate(LEVELS)]
    pooled = _fused(g, feats) if kind == "fused" else _split(g, feats, nhwc=kind == "split-nhwc")
    flat = g.node("Flatten", [pooled], "flat", "/roi_heads/box_head/Flatten")
    weight = (rng.standard_normal((C * S * S, FC)) * 0.01).astype(np.float32)  # rows in (c, y, x) order
    if kind == "split-nhwc":  # the same weights for rows in (y, x, c) order
        weight = weight.reshape(C, S, S, FC).transpose(1, 2, 0, 3).reshape(C * S * S, FC).copy()
    fc = g.const("fcw", weight)
    g.node("MatMul", [flat, fc], "out", "/roi_heads/box_head/fc6/MatMul")
    inputs.append(helper.make_tensor_value_info("rois", TensorProto.FLOAT, [rois, 4]))
    out = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    opsets = [helper.make_opsetid("", 16), helper.make_opsetid("org.openvinotoolkit", 1)]
    model = helper.make_model(helper.make_graph(g.nodes, kind, inputs, out, g.inits), opset_imports=opsets)
    onnx.save(model, folder / f"{kind}.onnx")
    xml = folder / f"{kind}.xml"
    ov.save_model(ov.convert_model(str(folder / f"{kind}.onnx")), str(xml), compress_to_fp16=False)
    mark_geometry_precise(xml)
    return xml


def _pooling(layer: object) -> bool:
    """A layer of the RoI pooling: not the convolutions, the fully connected layer or the conversions of the
    graph's inputs (into the convolutions), which the real network does not have."""
    name, kind = layer.node_name, layer.node_type  # type: ignore[attr-defined]
    return kind not in ("Convolution", "FullyConnected") and "/backbone/fpn/conv" not in name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rois", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    import openvino as ov

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 900, (args.rois, 2))
    wh = np.exp(rng.uniform(np.log(8), np.log(600), (args.rois, 2)))
    rois = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    feed = {"rois": rois, **{f"x{i}": rng.standard_normal((1, C, h, w)).astype(np.float32)
                             for i, (h, w) in enumerate(LEVELS)}}
    order = np.argsort(_levels(rois), kind="stable")  # the split graph's rows, grouped by level
    print(f"{args.rois} RoIs, per level (P2..P5) {np.bincount(_levels(rois), minlength=4).tolist()}; "
          f"{args.threads} thread(s), {ov.__version__}")
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        xmls = {k: build(k, args.rois, Path(tmp)) for k in ("split", "fused", "split-nhwc")}
        f32 = {k: core.compile_model(xmls[k], "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
               for k in xmls}
        ref = {k: m.create_infer_request().infer(feed)[0] for k, m in f32.items()}
        for k in ("fused", "split-nhwc"):
            diff = np.abs((ref[k][order] if k == "fused" else ref[k]) - ref["split"])
            print(f"fp32 agreement: max |{k} - split| {diff.max():.2e} (outputs up to "
                  f"{np.abs(ref['split']).max():.2f})")
        config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
        reqs = {k: core.compile_model(x, "CPU", config).create_infer_request() for k, x in xmls.items()}
        times: dict[str, list[float]] = {k: [] for k in reqs}
        pooling: dict[str, list[float]] = {k: [] for k in reqs}
        for _ in range(args.rounds + 1):
            for k, r in reqs.items():
                start = time.perf_counter()
                r.infer(feed)
                times[k].append(time.perf_counter() - start)
                pooling[k].append(sum(i.real_time.total_seconds() for i in r.profiling_info if _pooling(i)))
        for k, r in reqs.items():
            info = [o.get_rt_info() for o in r.get_compiled_model().get_runtime_model().get_ops()]
            kernels = sorted({(i["layerType"].astype(str), i["runtimePrecision"].astype(str)) for i in info
                              if "ROI" in i["layerType"].astype(str)})
            ms = [1000 * t for t in times[k][1:]]
            pool = 1000 * statistics.median(pooling[k][1:])
            print(f"{k}: median {statistics.median(ms):.1f} ms (min {min(ms):.1f}), of which RoI pooling "
                  f"{pool:.1f} ms; RoI kernels {kernels}")
        med = {k: statistics.median(v[1:]) for k, v in times.items()}
        for k in ("fused", "split-nhwc"):
            pool_ratio = statistics.median(pooling[k][1:]) / statistics.median(pooling["split"][1:])
            print(f"{k} / split: {med[k] / med['split']:.2f} end to end, {pool_ratio:.2f} in the RoI pooling")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
