"""``isseg tune``: trials on the same number of training images whatever their batch size, a search on a tiny
synthetic set that runs, is interrupted (Ctrl-C, and a killed process), resumes with the same budget and retries
the interrupted trials, and writes a table, a plot and a best recipe that ``isseg train --recipe`` takes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from isseg.engine.tune import (  # noqa: E402
    SearchSpace,
    TuneConfig,
    base_values,
    covering_space,
    trial_images,
    trial_recipe,
    tune,
)
from isseg.recipes import load_recipe, train_config  # noqa: E402

TINY_RECIPE = """\
description: a tiny model for the tests
preset: security-0002
model_name: tiny
input_size: [96, 96]
overrides: ["input.train_sizes=[96]", rpn.pre_nms_top_n_train=128, rpn.post_nms_top_n_train=64,
  rpn.pre_nms_top_n_test=128, rpn.post_nms_top_n_test=32, roi.batch_size_per_image=32, backbone.fpn_channels=32,
  roi.representation_size=128, backbone.norm=gn, backbone.frozen_stages=0, backbone.depth=18]
train: {iterations: 2, batch_size: 1, lr: 0.01, warmup_iters: 1, workers: 0, threads: 1, log_every: 1}
"""


def test_trials_see_the_same_images_whatever_the_batch() -> None:
    fast = load_recipe("fast-cpu")  # 1200 iterations x 4 images, warm-up 100
    values = {**base_values(fast), "batch_size": 8, "lr": 0.03}
    r = trial_recipe(fast, values, evaluations=3, train_images=480)
    train = r.train
    assert (train["iterations"], train["warmup_iters"], train["eval_every"], train["lr"]) == (600, 50, 200, 0.03)
    assert trial_images(fast, 480) == 4800
    scratch = load_recipe("scratch")  # 36 epochs of batch 4 over 480 images: 36 * 120 * 4 images
    r = trial_recipe(scratch, {**base_values(scratch), "batch_size": 2}, evaluations=4, train_images=480)
    assert "epochs" not in r.train and r.train["iterations"] == 36 * 120 * 4 // 2 and r.train["eval_every"] == 2160
    assert base_values(load_recipe("finetune-seed"))["lr"] == 0.005


def test_search_space_and_config_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lr range"):
        SearchSpace(lr=(0.1, 0.01)).check()
    with pytest.raises(ValueError, match=r"color-jitter range must lie in \[0.0, 1.0\]"):
        SearchSpace(color_jitter=(0.0, 1.5)).check()
    with pytest.raises(FileNotFoundError, match="data: annotation file not found"):
        TuneConfig("fast-cpu", str(tmp_path / "no.json"), ".", ".", ".").check()


@pytest.mark.usefixtures("one_torch_thread")
def test_tune_runs_resumes_after_interruptions_and_writes_a_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from isseg.cli.main import main
    from isseg.data.synth import make_synthetic_dataset
    from isseg.engine import trainer

    data = make_synthetic_dataset(tmp_path / "d", 4, seed=1, image_size=96, val_fraction=0.25, max_objects=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "search"
    args = ["tune", "--recipe", str(recipe), "--data", str(data["train_json"]), "--images", str(data["train_images"]),
            "--val-data", str(data["val_json"]), "--val-images", str(data["val_images"]), "--output", str(out),
            "--evaluations", "1", "--budget-minutes", "30", "--pruner", "none", "--no-progress"]  # fmt: skip
    assert main(args + ["--trials", "1"]) == 0  # the base recipe's trial
    assert "best trial 0" in capsys.readouterr().out

    assert main(args + ["--trials", "2"]) == 1  # the folder holds a search: resuming must be asked for
    assert "pass --resume" in capsys.readouterr().err

    real_train = trainer.train

    def interrupted(*a: object, **k: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)  # Ctrl-C during trial 1
    assert main(args + ["--trials", "2", "--resume"]) == 130
    monkeypatch.setattr(trainer, "train", real_train)
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    ctrl_c = study.trials[1].params
    killed = study.ask({k: v for k, v in study.trials[0].distributions.items()})  # a process killed mid-trial
    spent = study.user_attrs["seconds_spent"]
    assert spent > 0

    assert main(args + ["--trials", "3", "--resume"]) == 0  # both interrupted trials run again, same values
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states[:3] == ["COMPLETE", "FAIL", "FAIL"] and states[3:] == ["COMPLETE", "COMPLETE"]
    retries = {t.user_attrs["retry_of"]: t.params for t in study.trials[3:]}
    assert retries == {1: ctrl_c, 2: killed.params}
    assert study.user_attrs["seconds_spent"] > spent  # the budget counts every session

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == [s.lower() for s in states] and rows[0]["note"] == "the base recipe"
    assert (out / "trials.png").stat().st_size > 1000 and "| trial | state |" in (out / "trials.md").read_text()
    best = load_recipe(out / "best_recipe.yaml")
    assert best.name == "best_recipe" and best.overrides == load_recipe(recipe).overrides
    assert set(best.train) >= {"lr", "batch_size", "horizontal_flip", "color_jitter", "scale_jitter"}
    cfg = train_config(best, str(data["train_json"]), str(data["train_images"]), str(tmp_path / "r"))
    assert cfg.iterations * cfg.batch_size == 2  # the base recipe's 2 images, whatever batch size won

    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)  # the pruner stops the next trial
    assert main(args + ["--trials", "4", "--resume"]) == 0
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[-1].state.name == "PRUNED" and study.trials[-1].intermediate_values
    last = list(csv.DictReader((out / "trials.csv").open()))[-1]
    assert last["state"] == "pruned" and last["mask_AP"] == "" and last["last_val_mask_AP"] != ""


def test_no_trial_within_the_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from isseg.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", 3, seed=1, image_size=64, val_fraction=0.34, max_objects=1)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    cfg = TuneConfig(str(recipe), str(data["train_json"]), str(data["train_images"]), str(data["val_json"]),
                     str(data["val_images"]), output=str(tmp_path / "s"), budget_minutes=1e-4)
    result = tune(cfg)
    assert result["best"] is None and result["files"]["recipe"] is None and result["trials"] == 1  # queued only
    assert "waiting" in (tmp_path / "s" / "trials.md").read_text()
    base = {"lr": 0.01, "batch_size": 8, "horizontal_flip": 0.5, "color_jitter": 0.0, "scale_jitter": 0.0}
    with pytest.raises(ValueError, match="every batch size"):
        covering_space(SearchSpace(batch_size=(4, 8)), base, train_images=3)
    assert covering_space(SearchSpace(lr=(0.02, 0.04)), base, train_images=16).lr == (0.01, 0.04)
