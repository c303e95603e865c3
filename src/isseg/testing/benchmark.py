"""Deployment benchmark: per-stage latency, end-to-end latency and throughput of each backend and precision,
torchvision's ``maskrcnn_resnet50_fpn`` in eager PyTorch measured in the same run at the same input size,
and the agreement of the reduced precisions with fp32.

Without weights, the model is :func:`isseg.testing.random_weights.realistic_random_model` (calibrated
random weights whose classifier passes ~100 detections per image), and torchvision's model gets a biased
classifier for the same reason: both do the realistic amount of work (1000 proposals, up to 100 detections
with masks). Their detections are meaningless, so the agreement numbers only measure how much each
precision perturbs *this* network; a trained network is usually far less sensitive.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isseg.deploy.compare import compare
from isseg.testing.datasets import coco_mini_dir

STAGES = ("decode", "preprocess", "infer", "postprocess")


@dataclass
class Result:
    name: str
    stages_ms: dict[str, float] = field(default_factory=dict)  # medians
    e2e_ms: float = 0.0  # median of the per-image sums
    latency_ips: float = 0.0  # images / s of predict() one image after the other (latency mode), decode included
    throughput: float = 0.0  # images / s of predict_stream in throughput mode (or latency_ips where none)
    throughput_mode: str = ""
    detections: float = 0.0  # mean per image
    agreement: dict[str, float] = field(default_factory=dict)
    precision: str = ""  # the compute precision of the network's convolutions: fp32 / bf16 / int8 ("" unknown)
    bound_ms: float | None = None  # network GFLOPs / the probed rate at that precision (isseg.testing.ceiling)


def cpu_description() -> str:
    name = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} logical cores, {' '.join(isa) or 'no AVX-512'}"


def coco_images(count: int, split: str = "val2017") -> list[Path]:
    from isseg.deploy.quantize import IMAGE_SUFFIXES

    folder = coco_mini_dir() / split
    if not folder.is_dir():
        raise FileNotFoundError(f"coco-mini not found at {folder.parent}; set ISSEG_COCO_MINI")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:count]


def _median_ms(values: Sequence[float]) -> float:
    return 1000.0 * statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------------------------------ measuring
def measure_interleaved(runners: Sequence[tuple[str, Any]], paths: Sequence[Path], warmup: int = 1
                        ) -> tuple[list[Result], list[list[Any]]]:
    """Per-stage latency of every runner (``predict(image)`` + ``timings``), image by image in turn, so that
    the load of a shared machine affects all of them alike. Decoding is timed once per image."""
    first = cv2.imread(str(paths[0]))
    for _, runner in runners:
        for _ in range(warmup):
            runner.predict(first)
    times = [{k: [] for k in STAGES} for _ in runners]
    dets: list[list[Any]] = [[] for _ in runners]
    for path in paths:
        t0 = time.perf_counter()
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        decode = time.perf_counter() - t0
        for i, (_, runner) in enumerate(runners):
            dets[i].append(_kept(runner.predict(image)))
            times[i]["decode"].append(decode)
            for k, v in runner.timings.items():
                times[i][k].append(v)
    results = []
    for (name, _), t, d in zip(runners, times, dets):
        e2e = [sum(v) for v in zip(*t.values())]
        r = Result(name, {k: _median_ms(v) for k, v in t.items()}, _median_ms(e2e), len(e2e) / sum(e2e))
        r.detections = float(np.mean([len(x) for x in d]))
        results.append(r)
    return results, dets


class _Packed:
    """A measured result kept for the agreement columns with its masks bit-packed, the full-size masks freed.
    Keeping every image's [N, H, W] masks alive would make each new result a fresh ``mmap`` of tens of MB, whose
    page faults (costly on this VM) then showed up as 60-90 ms of "postprocess" that a real run, which frees
    each result, does not pay (measured: 84 ms kept, 12 ms freed, same images)."""

    def __init__(self, det: Any) -> None:
        self.det = det
        self.shape = None if det.masks is None else det.masks.shape
        self.bits = None if det.masks is None else np.packbits(
            det.masks.reshape(len(det), int(np.prod(det.masks.shape[1:]))), axis=1)
        det.masks = None

    def __len__(self) -> int:
        return len(self.det)

    def unpacked(self) -> Any:
        from dataclasses import replace

        if self.bits is None:
            return self.det
        n = int(np.prod(self.shape[1:]))
        masks = np.unpackbits(self.bits, axis=1, count=n).astype(bool).reshape(self.shape)
        return replace(self.det, masks=masks)


def _kept(result: Any) -> Any:
    if isinstance(result, np.ndarray):  # torchvision's masks: only their number is used (it is no reference)
        return range(len(result))
    return _Packed(result) if getattr(result, "masks", None) is not None else result


def _unpacked(result: Any) -> Any:
    return result.unpacked() if isinstance(result, _Packed) else result


def measure_throughput(predictor: Any, paths: Sequence[Path]) -> tuple[float, str]:
    """Images / s over ``paths`` (decode included) through ``predict_stream``: with a throughput-mode OpenVINO
    predictor, several requests in flight on the plugin's streams while this thread decodes, pre-processes
    the next images and post-processes the finished ones (what ``isseg predict`` does on a folder)."""
    first = cv2.imread(str(paths[0]))
    n = max(1, predictor.runtime.num_requests)
    list(predictor.predict_stream([first] * n))  # warm up every request
    t0 = time.perf_counter()
    for _ in predictor.predict_stream(cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths):
        pass
    streams = _streams(predictor)
    mode = f"{n} requests" + (f", {streams} streams" if streams else "")
    return len(paths) / (time.perf_counter() - t0), mode


def _streams(predictor: Any) -> int | None:
    try:
        return int(predictor.runtime.compiled.get_property("NUM_STREAMS"))
    except Exception:  # noqa: BLE001 - not an OpenVINO runtime
        return None


# ------------------------------------------------------------------------------------------------ torchvision
def torchvision_model(seed: int = 0, input_size: tuple[int, int] = (768, 1024)) -> Any:
    """``maskrcnn_resnet50_fpn(weights=None)``, seeded, with a classifier bias that passes ~100 detections,
    and its transform set to keep a ``input_size`` image as it is."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(seed)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        cls = model.roi_heads.box_predictor.cls_score
        bias = torch.randn(cls.bias.shape[0], generator=g) * 1.5 + 1.0
        bias[0] = -1.0  # background
        cls.bias.copy_(bias)
        cls.weight.mul_(0.1)
    model.transform.min_size = (min(input_size),)
    model.transform.max_size = max(input_size)
    return model


def _letterboxed(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxWx3 ``image`` resized to fit ``size`` and padded with 0, as the seed's application does."""
    import torch

    from isseg.config import InputConfig
    from isseg.model.transform import prepare_image

    cfg = InputConfig(resize="fit", size=size, pad_normalized=False)
    canvas = prepare_image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), cfg).input
    return np.ascontiguousarray(canvas.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())


class TorchvisionRunner:
    """torchvision eager fp32 on the same letterboxed input as isseg (its transform keeps 768x1024 as it is):
    "preprocess" = letterbox + RGB float tensor, "infer" = its whole forward (transform, network, detection
    post-processing, mask pasting at 768x1024), "postprocess" = thresholding the mask probabilities."""

    def __init__(self, input_size: tuple[int, int] = (768, 1024)) -> None:
        self.model = torchvision_model(input_size=input_size)
        self.input_size = input_size
        self.timings: dict[str, float] = {}

    def predict(self, image: np.ndarray) -> Any:
        import torch

        t0 = time.perf_counter()
        canvas = _letterboxed(image, self.input_size)
        x = torch.from_numpy(canvas[:, :, ::-1].copy()).permute(2, 0, 1).float().div_(255.0)
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = self.model([x])[0]
        t2 = time.perf_counter()
        masks = (out["masks"][:, 0] > 0.5).numpy()
        t3 = time.perf_counter()
        self.timings = {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2}
        return masks


# ------------------------------------------------------------------------------------------------ driver
@dataclass
class BenchConfig:
    weights: str | None = None  # checkpoint / registry name; None: seeded realistic random weights
    preset: str = "security-0002"
    images: int = 8
    warmup: int = 1
    backends: tuple[str, ...] = ("openvino", "onnx")
    precisions: tuple[str, ...] = ("fp32", "bf16", "int8")  # OpenVINO inference / export precisions
    torchvision: bool = True
    torch_eager: bool = False  # isseg's own graph in eager PyTorch
    calibration_size: int = 16
    workdir: str | None = None  # where the exports go (reused when present); default: a temp folder
    input_size: tuple[int, int] = (768, 1024)
    throughput: bool = True
    ceiling: bool = True  # probe the CPU's convolution rate and report latency bounds (isseg.testing.ceiling)
    detections: tuple[int, ...] = (0, 20, 100)  # latency at these detection counts (OpenVINO default, int8); ()


def _load_model(cfg: BenchConfig) -> Any:
    if cfg.weights:
        from isseg.weights.loading import load_model

        return load_model(cfg.weights, preset=cfg.preset)
    from isseg.testing.random_weights import realistic_random_model

    return realistic_random_model(cfg.preset, seed=0)


def detections_variant(model: Any, count: int) -> Any:
    """A twin of ``model`` (same weights) that returns at most ``count`` detections; 0: none (a score
    threshold no softmax score passes), so the mask head runs on no RoI. With the calibrated random weights
    ~100 detections pass, so ``count`` <= 100 is the number the graph really returns."""
    from dataclasses import replace

    from isseg.model.mask_rcnn import MaskRCNN

    cfg = model.config
    roi = replace(cfg.roi, score_thresh=1.0) if count == 0 else replace(cfg.roi, detections_per_img=count)
    twin = MaskRCNN(replace(cfg, roi=roi))
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def _exported(cfg: BenchConfig, model: Any, workdir: Path, precision: str, log: Callable[[str], None],
              tag: str = "") -> Path:
    from isseg.deploy.export import export

    stem = f"{model.config.name}{tag}" + ("" if precision == "fp32" else f"-{precision}")
    xml = workdir / f"{stem}.xml"
    if xml.is_file() and (precision != "fp32" or xml.with_suffix(".onnx").is_file()):
        return xml
    t0 = time.perf_counter()
    calib = None
    if precision == "int8":
        train = coco_mini_dir() / "train2017"  # calibrate on other images than measured
        calib = train if train.is_dir() else None
    path = export(model, workdir, "openvino", precision, input_size=cfg.input_size, keep_onnx=precision == "fp32",
                  calibration=calib, calibration_size=cfg.calibration_size, name=stem)
    log(f"exported {path.name} in {time.perf_counter() - t0:.1f} s")
    return path


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from isseg.deploy.predictor import Predictor

    paths = coco_images(cfg.images)
    if not paths:
        raise FileNotFoundError("no benchmark images")
    tmp = None
    if cfg.workdir:
        workdir = Path(cfg.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="isseg-bench-")
        workdir = Path(tmp.name)
    load_before = os.getloadavg()
    try:
        model = _load_model(cfg)
        makers: list[tuple[str, str, Callable[[str], Any]]] = []  # (name, precision, make(mode))
        xml32 = None
        if "openvino" in cfg.backends or "onnx" in cfg.backends:
            xml32 = _exported(cfg, model, workdir, "fp32", log)
        if "openvino" in cfg.backends and xml32 is not None:
            # fp32 first: it is the reference of the agreement columns
            default = _default_precision()
            makers.append(("openvino fp32", "fp32", lambda mode: Predictor(xml32, precision="f32", mode=mode)))
            makers.append((f"openvino default ({default})", _PROBED.get(default, ""),
                           lambda mode: Predictor(xml32, mode=mode)))
            if "bf16" in cfg.precisions and default != "bf16":
                makers.append(("openvino bf16", "bf16", lambda mode: Predictor(xml32, precision="bf16", mode=mode)))
            if "fp16" in cfg.precisions:
                xml16 = _exported(cfg, model, workdir, "fp16", log)
                makers.append(("openvino fp16 weights", _PROBED.get(default, ""),
                               lambda mode: Predictor(xml16, mode=mode)))
            if "int8" in cfg.precisions:
                xml8 = _exported(cfg, model, workdir, "int8", log)
                makers.append(("openvino int8", "int8", lambda mode: Predictor(xml8, mode=mode)))
                makers.append(("openvino int8, rest f32", "int8",
                               lambda mode: Predictor(xml8, precision="f32", mode=mode)))
        if "onnx" in cfg.backends and xml32 is not None:
            onnx_path = xml32.with_suffix(".onnx")
            makers.append(("onnxruntime fp32", "fp32", lambda mode: Predictor(onnx_path)))
        if cfg.torch_eager:
            makers.append(("isseg eager fp32", "fp32", lambda mode: Predictor(model, input_size=cfg.input_size)))
        runners: list[tuple[str, Any]] = []
        if cfg.torchvision:
            runners.append(("torchvision eager fp32", TorchvisionRunner(cfg.input_size)))
        runners += [(name, make("latency")) for name, _, make in makers]
        log(f"measuring {len(runners)} configurations on {len(paths)} images, interleaved ...")
        results, dets = measure_interleaved(runners, paths, cfg.warmup)
        offset = 1 if cfg.torchvision else 0
        if len(dets) > offset:
            reference = dets[offset]
            for r, d in zip(results[offset:], dets[offset:]):
                r.agreement = _agreement(reference, d)
        if cfg.torchvision:
            results[0].throughput = results[0].latency_ips
        del runners
        for (name, precision, make), r in zip(makers, results[offset:]):
            r.precision = precision
            if cfg.throughput and name.startswith("openvino"):
                log(f"throughput of {name} ...")
                r.throughput, r.throughput_mode = measure_throughput(make("throughput"), paths)
            else:
                r.throughput, r.throughput_mode = r.latency_ips, "latency"
        if cfg.torchvision:
            results[0].throughput_mode = "latency"
        sweep = _detections_sweep(cfg, model, workdir, paths, log) if cfg.detections else []
        compute = _compute_ceiling(model, results + sweep, cfg, log) if cfg.ceiling else None
    finally:
        if tmp is not None:
            tmp.cleanup()
    base = next((r for r in results if r.name.startswith("torchvision")), None)
    if compute and base:
        compute["max_speedup"] = {p: base.e2e_ms / row["bound_ms"] for p, row in compute["rates"].items()}
    return {
        "machine": cpu_description(),
        "load_average": [round(x, 2) for x in load_before + os.getloadavg()],
        "images": len(paths),
        "input_size": cfg.input_size,
        "model": cfg.weights or f"{cfg.preset} (seeded realistic random weights)",
        "baseline_e2e_ms": base.e2e_ms if base else None,
        "results": [r.__dict__ for r in results],
        "detections_sweep": [r.__dict__ for r in sweep],
        "compute": compute,
    }


def _detections_sweep(cfg: BenchConfig, model: Any, workdir: Path, paths: Sequence[Path],
                      log: Callable[[str], None]) -> list[Result]:
    """End-to-end latency of OpenVINO's default precision and of int8 at each of ``cfg.detections``
    detection counts (twins of the model exported for each count), interleaved on the same images."""
    from isseg.deploy.predictor import Predictor

    default = _default_precision()
    runners: list[tuple[str, Any]] = []
    precisions: list[str] = []
    for count in cfg.detections:
        twin = model if count == model.config.roi.detections_per_img else detections_variant(model, count)
        tag = "" if twin is model else f"-det{count}"
        xml = _exported(cfg, twin, workdir, "fp32", log, tag)
        runners.append((f"openvino default ({default}), {count} detections", Predictor(xml)))
        precisions.append(_PROBED.get(default, ""))
        if "int8" in cfg.precisions:
            xml8 = _exported(cfg, twin, workdir, "int8", log, tag)
            runners.append((f"openvino int8, {count} detections", Predictor(xml8)))
            precisions.append("int8")
    log(f"latency at {', '.join(map(str, cfg.detections))} detections: {len(runners)} configurations ...")
    results, _ = measure_interleaved(runners, paths, cfg.warmup)
    for r, p in zip(results, precisions):
        r.precision = p
    return results


#: OpenVINO's INFERENCE_PRECISION_HINT -> the precision the ceiling probe measures
_PROBED = {"f32": "fp32", "bf16": "bf16"}


def _compute_ceiling(model: Any, results: list[Result], cfg: BenchConfig, log: Callable[[str], None]
                     ) -> dict[str, Any]:
    """Probe the CPU's convolution rate at each measured precision and give every result its latency bound:
    the network's GFLOPs (mask head counted for the detections that configuration actually had) divided by
    that rate. See :mod:`isseg.testing.ceiling`."""
    from isseg.model.complexity import count_flops
    from isseg.testing.ceiling import probe_rate

    log("compute ceiling: counting the network's FLOPs and probing the convolution rate ...")
    flops = count_flops(model, *cfg.input_size)
    per_mask = flops["mask_head"] / model.config.roi.detections_per_img
    precisions = sorted({r.precision for r in results if r.precision} | {"fp32", "bf16"} & set(cfg.precisions))
    rates = {p: probe_rate(p) for p in precisions}
    for r in results:
        if r.precision in rates:
            gflops = flops["total"] - flops["mask_head"] + per_mask * r.detections
            r.bound_ms = 1000.0 * gflops / rates[r.precision]
    full = flops["total"]
    return {"network_gflops": full, "gflops_by_part": flops,
            "rates": {p: {"gflops_per_s": v, "bound_ms": 1000.0 * full / v} for p, v in rates.items()}}


def _default_precision() -> str:
    try:
        from isseg.deploy.runtime_openvino import shared_core

        return shared_core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    except Exception:  # noqa: BLE001
        return "?"


def _agreement(reference: list[Any], dets: list[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, min_score in (("all", 0.0), ("0.5", 0.5)):
        agreements = [compare(_unpacked(a), _unpacked(b), min_score=min_score) for a, b in zip(reference, dets)]
        ref_count = sum(a.count_a for a in agreements)
        matched = sum(a.matched for a in agreements)
        out[f"matched_{label}"] = matched / ref_count if ref_count else 1.0
        weights = [a.matched for a in agreements]
        total = sum(weights) or 1
        out[f"box_iou_{label}"] = sum(a.box_iou * w for a, w in zip(agreements, weights)) / total
        out[f"mask_iou_{label}"] = sum(a.mask_iou * w for a, w in zip(agreements, weights)) / total
    return out


def format_report(report: dict[str, Any]) -> str:
    """A Markdown table: stage medians (ms), end-to-end, speed-up over torchvision eager, throughput,
    agreement with OpenVINO fp32 (share of its detections matched at IoU 0.5 with the same label, mask IoU),
    and the compute bound of each configuration; then what the bounds allow on this machine."""
    base = report.get("baseline_e2e_ms")
    lines = [
        f"machine: {report['machine']}; {report['images']} coco-mini images at "
        f"{report['input_size'][0]}x{report['input_size'][1]}; model: {report['model']}; load average "
        f"before {report['load_average'][:3]} after {report['load_average'][3:]} (shared machine)",
        "",
        "| backend / precision | decode | preprocess | infer | postprocess | end-to-end ms | x torchvision "
        "| bound ms (precision) | x bound | img/s latency mode | img/s throughput mode | dets/img "
        "| matched (all / >=0.5) | mask IoU (all / >=0.5) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        s = r["stages_ms"]
        ratio = f"{base / r['e2e_ms']:.2f}" if base else "-"
        ag = r["agreement"]
        matched = f"{ag['matched_all']:.3f} / {ag['matched_0.5']:.3f}" if ag else "-"
        miou = f"{ag['mask_iou_all']:.3f} / {ag['mask_iou_0.5']:.3f}" if ag else "-"
        tp = f"{r['throughput']:.2f} ({r['throughput_mode']})" if r["throughput_mode"] != "latency" else "-"
        bound = f"{r['bound_ms']:.0f} ({r['precision']})" if r.get("bound_ms") else "-"
        over = f"{r['e2e_ms'] / r['bound_ms']:.2f}" if r.get("bound_ms") else "-"
        lines.append(
            f"| {r['name']} | {s['decode']:.1f} | {s['preprocess']:.1f} | {s['infer']:.1f} | {s['postprocess']:.1f} "
            f"| {r['e2e_ms']:.1f} | {ratio} | {bound} | {over} | {r['latency_ips']:.2f} | {tp} "
            f"| {r['detections']:.1f} | {matched} | {miou} |"
        )
    sweep = report.get("detections_sweep") or []
    if sweep:
        lines += ["", "end-to-end ms by number of detections (twins of the model that return at most N; the mask "
                  "head runs on the real detections only):", "",
                  "| configuration | detections/img | end-to-end ms | infer ms | bound ms | x bound |",
                  "|---|---|---|---|---|---|"]
        for r in sweep:
            bound = f"{r['bound_ms']:.0f}" if r.get("bound_ms") else "-"
            over = f"{r['e2e_ms'] / r['bound_ms']:.2f}" if r.get("bound_ms") else "-"
            lines.append(f"| {r['name']} | {r['detections']:.1f} | {r['e2e_ms']:.1f} | {r['stages_ms']['infer']:.1f} "
                         f"| {bound} | {over} |")
    compute = report.get("compute")
    if compute:
        lines += ["", f"compute ceiling: the network is {compute['network_gflops']:.1f} GFLOPs per image (100 masks); "
                  "a 3x3 256-channel convolution runs on this CPU at"]
        for p, row in compute["rates"].items():
            best = compute.get("max_speedup", {}).get(p)
            allowed = f", i.e. at most {best:.2f}x torchvision eager" if best else ""
            lines.append(f"- {p}: {row['gflops_per_s']:.0f} GFLOP/s -> no implementation of this network beats "
                         f"{row['bound_ms']:.0f} ms{allowed}")
    return "\n".join(lines)
