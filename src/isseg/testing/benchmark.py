"""Deployment benchmark: per-stage latency, end-to-end latency and throughput of each backend and precision,
torchvision's ``maskrcnn_resnet50_fpn`` in eager PyTorch measured in the same run at the same input size,
and the agreement of the reduced precisions with fp32.

Without weights, the model is :func:`isseg.testing.random_weights.realistic_random_model` (calibrated
random weights whose classifier passes ~100 detections per image), and torchvision's model gets a biased
classifier for the same reason: both do the realistic amount of work (1000 proposals, up to 100 detections
with masks). Their detections are meaningless, so the agreement numbers only measure how much each
precision perturbs *this* network; a trained network is usually far less sensitive.

This module runs the benchmark: the exports and configurations, the latency sweep over detection counts, the
compute bounds and the report. The measuring is :mod:`isseg.testing.bench_measure`, the baseline
:mod:`isseg.testing.torchvision_baseline`, the tables :mod:`isseg.testing.bench_report`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isseg.deploy.mode_probe import describe, measure_modes, measure_rounds
from isseg.deploy.rate_probe import AS_PROBED
from isseg.sources.decode import read_image_file
from isseg.testing.bench_measure import Result, agreement, measure_interleaved
from isseg.testing.bench_report import cpu_description
from isseg.testing.ceiling import RateSampler
from isseg.testing.datasets import coco_images, coco_mini_dir
from isseg.testing.torchvision_baseline import TorchvisionRunner

Log = Callable[[str], None]
# (name, compute precision, make(mode) -> a Predictor in OpenVINO's "latency" or "throughput" mode)
Configuration = tuple[str, str, Callable[[str], Any]]

#: alternated rounds of latency and throughput mode per configuration: three give each mode's spread between
#: its own rounds (the machine's drift), against which the two modes' difference is judged
MODE_ROUNDS = 3


@dataclass
class BenchConfig:
    """What ``isseg benchmark`` measures (its options, one field each)."""

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
    auto_probe: bool = True  # with throughput: also run --mode auto's probe (isseg.deploy.mode_probe) per config


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


def _exported(cfg: BenchConfig, model: Any, workdir: Path, precision: str, log: Log, tag: str = "") -> Path:
    """The OpenVINO IR of ``model`` at ``precision`` in ``workdir`` (fp32 keeps its ONNX file too), exported
    unless already there; int8 is calibrated on coco-mini train2017, other images than those measured."""
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


@contextmanager
def _workdir(cfg: BenchConfig) -> Iterator[Path]:
    """``cfg.workdir`` (created, kept), else a temporary folder removed afterwards."""
    if cfg.workdir:
        workdir = Path(cfg.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="isseg-bench-") as tmp:
        yield Path(tmp)


def _configurations(cfg: BenchConfig, model: Any, workdir: Path, log: Log) -> list[Configuration]:
    """The isseg configurations to measure, OpenVINO fp32 first (the reference of the agreement columns)."""
    from isseg.deploy.predictor import Predictor

    makers: list[Configuration] = []
    exports = "openvino" in cfg.backends or "onnx" in cfg.backends
    xml32 = _exported(cfg, model, workdir, "fp32", log) if exports else None
    if "openvino" in cfg.backends and xml32 is not None:
        default = _default_precision()
        probed = AS_PROBED.get(default, "")  # the precision its bound is probed at ("" when unknown)
        makers.append(("openvino fp32", "fp32", lambda mode: Predictor(xml32, precision="f32", mode=mode)))
        makers.append((f"openvino default ({default})", probed,
                       lambda mode: Predictor(xml32, mode=mode)))
        if "bf16" in cfg.precisions and default != "bf16":
            makers.append(("openvino bf16", "bf16", lambda mode: Predictor(xml32, precision="bf16", mode=mode)))
        if "fp16" in cfg.precisions:
            xml16 = _exported(cfg, model, workdir, "fp16", log)
            makers.append(("openvino fp16 weights", probed, lambda mode: Predictor(xml16, mode=mode)))
        if "int8" in cfg.precisions:
            xml8 = _exported(cfg, model, workdir, "int8", log)
            makers.append(("openvino int8", "int8", lambda mode: Predictor(xml8, mode=mode)))
            makers.append(("openvino int8, rest f32", "int8", lambda mode: Predictor(xml8, precision="f32", mode=mode)))
    if "onnx" in cfg.backends and xml32 is not None:
        onnx_path = xml32.with_suffix(".onnx")
        makers.append(("onnxruntime fp32", "fp32", lambda mode: Predictor(onnx_path)))
    if cfg.torch_eager:
        makers.append(("isseg eager fp32", "fp32", lambda mode: Predictor(model, input_size=cfg.input_size)))
    return makers


def _measure(cfg: BenchConfig, makers: list[Configuration], paths: Sequence[Path], log: Log,
             between: Callable[[], None] | None = None) -> list[Result]:
    """Latency of the torchvision baseline (first, when asked) and of every configuration, interleaved; their
    agreement with the first configuration; then, one at a time, each OpenVINO configuration in latency and
    throughput mode, their rounds alternated (:func:`measure_rounds`)."""
    runners: list[tuple[str, Any]] = []
    if cfg.torchvision:
        runners.append(("torchvision eager fp32", TorchvisionRunner(cfg.input_size)))
    runners += [(name, make("latency")) for name, _, make in makers]
    log(f"measuring {len(runners)} configurations on {len(paths)} images, interleaved ...")
    results, dets = measure_interleaved(runners, paths, cfg.warmup, between)
    for r, (_, runner) in zip(results, runners):
        r.latency_mode = describe(runner)
    del runners  # free the latency-mode predictors before the throughput-mode ones are made
    offset = 1 if cfg.torchvision else 0
    if len(dets) > offset:
        for r, d in zip(results[offset:], dets[offset:]):
            r.agreement = agreement(dets[offset], d)
    if cfg.torchvision:
        results[0].throughput, results[0].throughput_mode = results[0].latency_ips, "latency"
    for (name, precision, make), r in zip(makers, results[offset:]):
        r.precision = precision
        if cfg.throughput and name.startswith("openvino"):
            log(f"throughput of {name} ...")
            rounds = measure_rounds(make, lambda n: (read_image_file(p) for p in paths), MODE_ROUNDS)
            medians = rounds.medians()
            r.paired_latency, r.throughput = medians["latency"], medians["throughput"]
            r.throughput_mode, r.mode_noise = rounds.setup["throughput"], rounds.noise()
            if cfg.auto_probe:  # what isseg predict --mode auto would pick here, by its own short probe
                r.auto_rates = measure_modes(make, read_image_file(paths[0]))
                r.auto_mode = max(r.auto_rates, key=r.auto_rates.__getitem__)
        else:
            r.throughput, r.throughput_mode = r.latency_ips, "latency"
    return results


def run_benchmark(cfg: BenchConfig, log: Log = print) -> dict[str, Any]:
    """Run the benchmark ``cfg`` describes on coco-mini val2017; returns the report (the machine, each
    configuration's :class:`Result` as a dict, the detection-count sweep and the compute ceiling), which
    :func:`isseg.testing.bench_report.format_report` turns into tables."""
    paths = coco_images(cfg.images)
    if not paths:
        raise FileNotFoundError("no benchmark images")
    load_before = os.getloadavg()
    with _workdir(cfg) as workdir:
        model = _load_model(cfg)
        makers = _configurations(cfg, model, workdir, log)
        sampler = RateSampler(_bound_precisions(cfg, makers)) if cfg.ceiling else None
        between = sampler.sample if sampler else None
        results = _measure(cfg, makers, paths, log, between)
        sweep = _detections_sweep(cfg, model, workdir, paths, log, between) if cfg.detections else []
        compute = compute_ceiling(model, results + sweep, cfg, log, sampler) if cfg.ceiling else None
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


def _detections_sweep(cfg: BenchConfig, model: Any, workdir: Path, paths: Sequence[Path], log: Log,
                      between: Callable[[], None] | None = None) -> list[Result]:
    """End-to-end latency of isseg's default precision and of int8 at each of ``cfg.detections``
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
        if "int8" in cfg.precisions:
            xml8 = _exported(cfg, twin, workdir, "int8", log, tag)
            runners.append((f"openvino int8, {count} detections", Predictor(xml8)))
        precisions += _sweep_precisions(cfg)
    log(f"latency at {', '.join(map(str, cfg.detections))} detections: {len(runners)} configurations ...")
    results, _ = measure_interleaved(runners, paths, cfg.warmup, between)
    for r, p in zip(results, precisions):
        r.precision = p
    return results


def _bound_precisions(cfg: BenchConfig, makers: list[Configuration]) -> set[str]:
    """The precisions whose bound the report needs: every configuration's, and the detection sweep's (OpenVINO's
    default precision, and int8 when asked)."""
    wanted = {precision for _, precision, _ in makers} | (set(_sweep_precisions(cfg)) if cfg.detections else set())
    return wanted - {""}


def _sweep_precisions(cfg: BenchConfig) -> list[str]:
    """The precisions of the detection sweep's configurations at one count, in their order: the default
    precision (as the probe names it, "" when unknown), then int8 when asked."""
    return [AS_PROBED.get(_default_precision(), "")] + (["int8"] if "int8" in cfg.precisions else [])


def compute_ceiling(model: Any, results: list[Result], cfg: BenchConfig, log: Log,
                    sampler: RateSampler | None = None) -> dict[str, Any]:
    """The CPU's convolution rate at each precision ``sampler`` probed (the median of its samples, taken between
    the measured images; without a sampler, each result's precision probed best-of-20 now) and every result's
    latency bound: the network's GFLOPs (mask head counted for the detections that configuration actually had)
    divided by that rate. See :mod:`isseg.testing.ceiling`."""
    from isseg.deploy.rate_probe import probe_rate
    from isseg.model.complexity import count_flops

    log("compute ceiling: counting the network's FLOPs and probing the convolution rate ...")
    flops = count_flops(model, *cfg.input_size)
    per_mask = flops["mask_head"] / model.config.roi.detections_per_img
    sampled = sampler.samples if sampler else {}
    precisions = sorted(sampled or {r.precision for r in results if r.precision})
    rates = {p: sampler.rate(p) if sampler and p in sampled else probe_rate(p) for p in precisions}
    for r in results:
        if r.precision in rates:
            gflops = flops["total"] - flops["mask_head"] + per_mask * r.detections
            r.bound_ms = 1000.0 * gflops / rates[r.precision]
    full = flops["total"]
    return {"network_gflops": full, "gflops_by_part": flops,
            "rates": {p: {"gflops_per_s": v, "bound_ms": 1000.0 * full / v, "samples": sampled.get(p, [])}
                      for p, v in rates.items()}}


def _default_precision() -> str:
    """The inference precision isseg's OpenVINO runtime gives a float IR on the CPU when none is asked for
    ("f32", "bf16"; :func:`isseg.deploy.rate_probe.faster_precision`), "?" when it cannot be read."""
    try:
        from isseg.deploy.rate_probe import faster_precision

        return faster_precision("CPU").precision
    except Exception:  # noqa: BLE001
        return "?"
