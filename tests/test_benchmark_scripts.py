"""The scripts under ``benchmarks/`` run as documented (tiny settings; the real runs are in the docs)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from helpers import REPO


def load_script(name: str) -> ModuleType:
    path = REPO / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_train_synth_reports_and_saves_the_evaluated_weights(tmp_path: Path) -> None:
    from isseg.weights.loading import load_model

    script = load_script("train_synth")
    before = torch.get_num_threads()
    try:
        assert script.main(["--output", str(tmp_path), "--images", "10", "--size", "64", "--iterations", "3",
                            "--batch-size", "2", "--workers", "0", "--rois", "16"]) == 0
    finally:
        torch.set_num_threads(before)
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["iterations"] == 3 and report["val_images"] == 1 and not report["stopped_by_time_budget"]
    assert 0.0 <= report["mask_AP"] <= 1.0 and report["pass"] == (report["mask_AP"] >= 0.5)
    model = load_model(report["weights"])
    assert model.config.backbone.depth == 18


def test_precision_accuracy_script_fp32_equals_pytorch(tmp_path) -> None:  # noqa: ANN001
    """benchmarks/precision_accuracy.py on a tiny synthetic-data model: OpenVINO fp32 must score exactly the
    PyTorch model's AP (the same network through the whole deployment pipeline)."""
    from isseg.config import get_config
    from isseg.data.synth import CLASS_NAMES, make_synthetic_dataset
    from isseg.engine.config_overrides import apply_overrides
    from isseg.model.mask_rcnn import build_model
    from isseg.weights.loading import save_checkpoint

    data = make_synthetic_dataset(tmp_path / "data", 12, seed=3, image_size=96, val_fraction=0.5, max_objects=3)
    size = ("input.size=[96,96]", "input.train_sizes=[96]", "backbone.depth=18",
            "backbone.fpn_channels=32", "roi.representation_size=64", "roi.score_thresh=0.0")
    cfg = apply_overrides(get_config("security-0002", class_names=CLASS_NAMES), size)
    torch.manual_seed(3)
    ckpt = save_checkpoint(tmp_path / "model.pth", build_model(cfg).eval())
    script = load_script("precision_accuracy")
    out = tmp_path / "rows.json"
    assert script.main(["--weights", str(ckpt), "--data", str(data["val_json"]), "--images", str(data["val_images"]),
                        "--input-size", "96", "96", "--precisions", "fp32", "--json", str(out)]) == 0
    rows = {r["configuration"]: r for r in json.loads(out.read_text())["rows"]}
    torch_row, ov_row = rows["pytorch fp32 (reference)"], rows["openvino fp32"]
    assert torch_row["box_AP"] > 0 and torch_row["mask_AP"] > 0  # some random boxes hit shapes: not 0 == 0
    assert ov_row["mask_AP"] == pytest.approx(torch_row["mask_AP"], rel=1e-6, abs=1e-12)
    assert ov_row["box_AP"] == pytest.approx(torch_row["box_AP"], rel=1e-6, abs=1e-12)


def test_head_variants_compute_the_same_layers(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/head_variants.py: each way of writing fc6 and the mask deconvolution is the same function
    (in f32 they agree to rounding), and every variant is timed."""
    script = load_script("head_variants")
    assert script.main(["--rois", "6", "--masks", "3", "--runs", "1", "--precision", "f32"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| fc6")
            or line.startswith("| deconv")]
    assert len(rows) == 5
    for name, ms, diff in rows:
        assert float(ms) >= 0 and float(diff) < 1e-3, name


def test_roialign_sampling_times_each_ratio_and_counts_its_samples(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/roialign_sampling.py: one row per sampling ratio, with the samples that ratio takes."""
    script = load_script("roialign_sampling")
    boxes = script.rois(20)
    assert script.samples(boxes, 1) == 20 * 49 and script.samples(boxes, 2) == 4 * 20 * 49
    assert script.samples(boxes, 1) <= script.samples(boxes, 0) <= script.samples(boxes, 4)  # 1-4 per axis at P2
    assert script.main(["--rois", "20", "--runs", "1", "--threads", "1"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")
            and not line.startswith("| sampling")]
    assert [r[0].strip() for r in rows] == ["adaptive", "1", "2", "4"]
    assert all(float(r[2]) > 0 and r[4].strip() for r in rows)


def test_optimizer_step_times_both_optimizers_fused_and_per_tensor(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/optimizer_step.py: one line per optimizer and mode, the fused ones built fused."""
    script = load_script("optimizer_step")
    before = torch.get_num_threads()
    try:
        assert script.main(["--steps", "1", "--rounds", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out.splitlines()
    assert "M trainable parameters" in out[0]
    rows = [line.split()[:3] for line in out[1:]]
    assert [r[:2] for r in rows] == [["sgd", "fused"], ["sgd", "per"], ["adamw", "fused"], ["adamw", "per"]]
    assert all(float(line.split("ms per step")[0].split()[-1]) > 0 for line in out[1:])


def test_tune_synth_verdict_needs_the_same_minutes_as_well_as_a_higher_ap() -> None:
    """benchmarks/tune_synth.py: a tuned recipe with a higher AP that trained 9 % longer does not beat the default
    within the same budget (the 2026-12-06 search's figures); within the tolerance it does."""
    verdict = load_script("tune_synth").verdict
    default = {"mask_AP": 0.2165, "minutes_training": 6.95}
    longer = verdict({"mask_AP": 0.236, "minutes_training": 7.6}, default, 0.03)
    assert longer["tuned_higher_mask_AP"] and not longer["tuned_within_budget"] and not longer["tuned_beats_default"]
    assert longer["tuned_minutes_ratio"] == pytest.approx(1.094, abs=1e-3)
    assert verdict({"mask_AP": 0.236, "minutes_training": 7.1}, default, 0.03)["tuned_beats_default"]
    assert not verdict({"mask_AP": 0.216, "minutes_training": 6.6}, default, 0.03)["tuned_beats_default"]


def test_train_step_times_both_roi_aligns_alone_and_in_steps(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/train_step.py: the two RoIAligns alone at both pools, and fast-cpu's steps with each; the kernel
    switch is put back."""
    import isseg.model.roi_heads as roi_heads
    from isseg.model.roi_align import use_rows

    script = load_script("train_step")
    before = torch.get_num_threads()
    try:
        assert script.main(["--recipes", "fast-cpu", "--steps", "2", "--rounds", "1", "--output", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(before)
    assert roi_heads.use_rows is use_rows
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("RoIAlign", "training step"))]
    assert [line.split(":")[0] for line in out] == ["RoIAlign fwd+bwd, fast-cpu box pool",
                                                    "RoIAlign fwd+bwd, seed box pool (P2)", "training step, fast-cpu"]
    for line in out:
        tv, ours = (float(part.split()[0]) for part in (line.split("torchvision ")[1], line.split("isseg ")[1]))
        assert tv > 0 and ours > 0
