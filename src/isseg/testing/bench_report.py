"""The report of ``isseg benchmark``: the machine it ran on, and the Markdown tables of a run's numbers."""

from __future__ import annotations

import os
from typing import Any


def cpu_description() -> str:
    """CPU model, logical core count and the AVX-512 / AMX extensions that matter for bf16, f16 and int8."""
    from isseg.deploy.machine_cache import cpu_info

    name, isa = cpu_info()
    return f"{name}, {os.cpu_count()} logical cores, {' '.join(isa) or 'no AVX-512'}"


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
        "| bound ms (precision) | x bound | img/s latency mode | img/s throughput mode | --mode auto picks "
        "| dets/img | matched (all / >=0.5) | mask IoU (all / >=0.5) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        s = r["stages_ms"]
        ratio = f"{base / r['e2e_ms']:.2f}" if base else "-"
        ag = r["agreement"]
        matched = f"{ag['matched_all']:.3f} / {ag['matched_0.5']:.3f}" if ag else "-"
        miou = f"{ag['mask_iou_all']:.3f} / {ag['mask_iou_0.5']:.3f}" if ag else "-"
        tp = "-"
        if r["throughput_mode"] != "latency":
            paired = f"; latency mode {r['paired_latency']:.2f} in the same rounds" if r.get("paired_latency") else ""
            tp = f"{r['throughput']:.2f} ({r['throughput_mode']}{paired})"
        lat = f"{r['latency_ips']:.2f}" + (f" ({r['latency_mode']})" if r.get("latency_mode") else "")
        auto = "-"
        if r.get("auto_mode"):
            rates = r["auto_rates"]
            auto = f"{r['auto_mode']} (probe {rates['latency']:.2f} / {rates['throughput']:.2f})"
            if r.get("paired_latency"):
                faster = "throughput" if r["throughput"] > r["paired_latency"] else "latency"
                auto += "; right" if faster == r["auto_mode"] else auto_loss(r)
        bound = f"{r['bound_ms']:.0f} ({r['precision']})" if r.get("bound_ms") else "-"
        over = f"{r['e2e_ms'] / r['bound_ms']:.2f}" if r.get("bound_ms") else "-"
        lines.append(
            f"| {r['name']} | {s['decode']:.1f} | {s['preprocess']:.1f} | {s['infer']:.1f} | {s['postprocess']:.1f} "
            f"| {r['e2e_ms']:.1f} | {ratio} | {bound} | {over} | {lat} | {tp} | {auto} "
            f"| {r['detections']:.1f} | {matched} | {miou} |"
        )
    return "\n".join(lines + _sweep_lines(report) + _compute_lines(report))


def auto_loss(r: dict[str, Any]) -> str:
    """How much ``--mode auto``'s pick lost to the rounds' faster mode, against how far one mode's own rounds
    moved (:meth:`isseg.deploy.mode_probe.ModeRounds.noise`): a loss within that is the machine's drift."""
    loss = abs(r["throughput"] / r["paired_latency"] - 1)
    text = f"; the rounds' faster mode by {loss:.0%}"
    noise = r.get("mode_noise") or 0.0
    if noise:
        text += f" ({'within' if loss <= noise else 'beyond'} the noise: a mode's rounds moved {noise:.0%})"
    return text


def _sweep_lines(report: dict[str, Any]) -> list[str]:
    """The table of end-to-end latency by number of detections (none when the sweep did not run)."""
    sweep = report.get("detections_sweep") or []
    if not sweep:
        return []
    lines = ["", "end-to-end ms by number of detections (twins of the model that return at most N; the mask "
             "head runs on the real detections only):", "",
             "| configuration | detections/img | end-to-end ms | infer ms | bound ms | x bound |",
             "|---|---|---|---|---|---|"]
    for r in sweep:
        bound = f"{r['bound_ms']:.0f}" if r.get("bound_ms") else "-"
        over = f"{r['e2e_ms'] / r['bound_ms']:.2f}" if r.get("bound_ms") else "-"
        lines.append(f"| {r['name']} | {r['detections']:.1f} | {r['e2e_ms']:.1f} | {r['stages_ms']['infer']:.1f} "
                     f"| {bound} | {over} |")
    return lines


def _compute_lines(report: dict[str, Any]) -> list[str]:
    """What the compute ceiling allows at each probed precision (none when it was not probed)."""
    compute = report.get("compute")
    if not compute:
        return []
    lines = ["", f"compute ceiling: the network is {compute['network_gflops']:.1f} GFLOPs per image (100 masks); "
             "a 3x3 256-channel convolution runs on this CPU at"]
    for p, row in compute["rates"].items():
        best = compute.get("max_speedup", {}).get(p)
        allowed = f", i.e. at most {best:.2f}x torchvision eager" if best else ""
        samples = row.get("samples") or []
        how = (f" (median of {len(samples)} samples taken between the measured images, {min(samples):.0f}-"
               f"{max(samples):.0f})" if samples else "")
        lines.append(f"- {p}: {row['gflops_per_s']:.0f} GFLOP/s{how} -> no implementation of this network beats "
                     f"{row['bound_ms']:.0f} ms{allowed}")
    return lines
