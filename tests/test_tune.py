"""``isseg tune``: trials on the same number of training images whatever their batch size, a search on a tiny
synthetic set that runs, is interrupted (Ctrl-C, and a killed process), resumes with the same budget and retries
the interrupted trials, and writes a table, a plot and a best recipe that ``isseg train --recipe`` takes."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from isseg.engine.tune import (  # noqa: E402
    SearchSpace,
    TuneConfig,
    base_values,
    covering_space,
    enqueue_confirmations,
    tune,
)
from isseg.engine.tune_pace import (  # noqa: E402
    pace_text,
    recipe_pace_key,
    step_units,
    stored_pace,
    trial_images,
    trial_pace,
    trial_recipe,
    values_key,
)
from isseg.engine.tune_report import best_group, groups  # noqa: E402
from isseg.engine.tune_space import (  # noqa: E402
    ADAMW_START,
    anchor_name,
    anchor_params,
    full_pace,
    learning_rate,
    pace_variants,
    train_values,
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
    fast = load_recipe("fast-cpu")  # 1600 iterations x 4 images, warm-up 100
    values = {**base_values(fast), "batch_size": 8, "lr": 0.03}
    r = trial_recipe(fast, values, evaluations=3, train_images=480)
    train = r.train
    assert (train["iterations"], train["warmup_iters"], train["eval_every"], train["lr"]) == (800, 50, 267, 0.03)
    assert trial_images(fast, 480) == 6400
    scratch = load_recipe("scratch")  # 36 epochs of batch 4 over 480 images: 36 * 120 * 4 images
    r = trial_recipe(scratch, {**base_values(scratch), "batch_size": 2}, evaluations=4, train_images=480)
    assert "epochs" not in r.train and r.train["iterations"] == 36 * 120 * 4 // 2 and r.train["eval_every"] == 2160
    assert base_values(load_recipe("finetune-seed"))["lr"] == 0.005


def test_trials_take_the_same_time_whatever_the_batch_and_optimizer() -> None:
    fast = load_recipe("fast-cpu")  # 1600 iterations x 4 images, warm-up 100, RoI positive fraction 0.25
    pace = {"2 pos0.25": 0.4, "4 pos0.25": 0.6, "8 pos0.25": 1.0, "4 adamw pos0.25": 0.75, "4 pos0.5": 0.66}
    base = base_values(fast)
    assert step_units({**base, "batch_size": 8}, fast, pace) == pytest.approx(4 * 1.0 / 0.6)
    assert step_units({**base, "batch_size": 8}, fast) == 8
    r = trial_recipe(fast, {**base, "batch_size": 8}, evaluations=3, train_images=480, pace=pace)
    assert (r.train["iterations"], r.train["warmup_iters"], r.train["eval_every"]) == (960, 60, 320)
    assert r.train["iterations"] * pace["8 pos0.25"] == pytest.approx(1600 * pace["4 pos0.25"])  # the base's 960 s
    r = trial_recipe(fast, {**base, "batch_size": 2}, evaluations=3, train_images=480, pace=pace, fraction=0.5)
    assert r.train["iterations"] == 1200
    r = trial_recipe(fast, base, evaluations=3, train_images=480, pace=pace)
    assert (r.train["iterations"], r.train["warmup_iters"]) == (1600, 100)  # the base batch: unchanged
    assert r.overrides == fast.overrides  # the recipe's own fraction: no line added
    adamw = {**base, "optimizer": "adamw", "lr": 0.001}  # a slower step: fewer of them
    r = trial_recipe(fast, adamw, evaluations=3, train_images=480, pace=pace)
    assert (r.train["iterations"], r.train["warmup_iters"]) == (1280, 80) and step_units(adamw, fast, pace) == 5.0
    r = trial_recipe(fast, {**base, "positive_fraction": 0.5}, evaluations=3, train_images=480, pace=pace)
    assert r.train["iterations"] == round(1600 * 0.6 / 0.66) and "positive_fraction" not in r.train
    assert r.overrides[-2:] == ("roi.positive_fraction=0.5", "roi.mask_positives_per_image=16")  # 64 x 0.25
    assert pace_text({"2": 0.4, "4": 0.6, "8": 1.0, "4 adamw": 0.75}) == \
        "equal time (s per step: batch 2 0.4, batch 4 0.6, batch 4 adamw 0.75, batch 8 1)"
    from isseg.engine.tune_pace import study_pace  # one variant: the recipe's steps, nothing to measure

    assert study_pace(None, fast, {"4": {"batch_size": 4}}, "train.json", "imgs", {}) is None
    assert pace_text(None) == "equal images"
    space = SearchSpace(batch_size=(4, 8), positive_fraction=(0.25, 0.5))
    variants = pace_variants(base, space)
    adamw_rates = {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.05}
    assert variants == {"4 pos0.25": {"batch_size": 4, "optimizer": "sgd", "lr": 0.02, "positive_fraction": 0.25},
                        "8 pos0.25": {"batch_size": 8, "optimizer": "sgd", "lr": 0.02, "positive_fraction": 0.25},
                        "4 adamw pos0.25": {"batch_size": 4, **adamw_rates, "positive_fraction": 0.25},
                        "8 adamw pos0.25": {"batch_size": 8, **adamw_rates, "positive_fraction": 0.25},
                        "4 pos0.5": {"batch_size": 4, "optimizer": "sgd", "lr": 0.02, "positive_fraction": 0.5}}
    timed = {"4 pos0.25": 0.6, "8 pos0.25": 1.0, "4 adamw pos0.25": 0.75, "8 adamw pos0.25": 1.2, "4 pos0.5": 0.72}
    full = full_pace(timed, base, space)  # the untimed shapes scale as the fraction scaled the base step: x 1.2
    assert full == pytest.approx({**timed, "8 pos0.5": 1.2, "4 adamw pos0.5": 0.9, "8 adamw pos0.5": 1.44})


def test_the_positive_fraction_is_searched_as_a_preset_field(tmp_path: Path) -> None:
    """A trial's positive fraction reaches the model through the recipe's overrides (the recipe's own line
    replaced, not doubled), and the base recipe's value, read from its preset and overrides, is in the space. A
    larger fraction keeps the mask head at the recipe's positives per image (the step's cost), unless the recipe
    sets its own cap."""
    from isseg.recipes import recipe_from_dict, train_config

    fast = load_recipe("fast-cpu")
    own = dataclasses.replace(fast, overrides=fast.overrides + ("roi.positive_fraction=0.33",))
    base = base_values(own)
    assert base["positive_fraction"] == 0.33
    assert covering_space(SearchSpace(), base, train_images=480).positive_fraction == (0.25, 0.33, 0.5)
    r = trial_recipe(own, {**base, "positive_fraction": 0.5}, evaluations=3, train_images=480)
    assert [o for o in r.overrides if o.startswith("roi.positive_fraction")] == ["roi.positive_fraction=0.5"]
    again = recipe_from_dict(r.to_dict(), "tuned")  # best_recipe.yaml reads back
    from isseg.config import get_config
    from isseg.engine.config_overrides import apply_overrides

    roi = apply_overrides(get_config(again.preset), again.overrides).roi
    assert (roi.positive_fraction, roi.mask_positives_per_image) == (0.5, int(64 * 0.33))  # the mask head: as before
    fewer = trial_recipe(own, {**base, "positive_fraction": 0.25}, evaluations=3, train_images=480).overrides
    assert fewer[-1] == "roi.positive_fraction=0.25" and not any("mask_positives" in o for o in fewer)
    capped = dataclasses.replace(own, overrides=own.overrides + ("roi.mask_positives_per_image=8",))
    r = trial_recipe(capped, {**base, "positive_fraction": 0.5}, evaluations=3, train_images=480)
    assert [o for o in r.overrides if "mask_positives" in o] == ["roi.mask_positives_per_image=8"]  # the recipe's
    tc = train_config(dataclasses.replace(again, input_size=(128, 128)), "train.json", "imgs", str(tmp_path))
    assert "roi.positive_fraction=0.5" in tc.overrides
    with pytest.raises(ValueError, match="positive fractions must be in"):
        SearchSpace(positive_fraction=(0.0,)).check()


def test_adamw_trials_have_their_own_learning_rate_and_weight_decay() -> None:
    """The optimizer is searched with its own ranges: a trial's Optuna parameters (``adamw_lr``,
    ``adamw_weight_decay``) become the recipe's ``lr`` / ``weight_decay``; SGD keeps the recipe's weight decay."""
    fast = load_recipe("fast-cpu")
    assert base_values(fast) == {"optimizer": "sgd", "lr": 0.02, "batch_size": 4, "horizontal_flip": 0.5,
                                 "color_jitter": 0.0, "scale_jitter": 0.0, "positive_fraction": 0.25}
    params = {**base_values(fast), "optimizer": "adamw", "adamw_lr": 0.001, "adamw_weight_decay": 0.05}
    del params["lr"]
    r = trial_recipe(fast, train_values(params), evaluations=3, train_images=480)
    assert (r.train["optimizer"], r.train["lr"], r.train["weight_decay"]) == ("adamw", 0.001, 0.05)
    assert "weight_decay" not in trial_recipe(fast, train_values(base_values(fast)), 3, 480).train
    assert learning_rate(params) == 0.001 and learning_rate(base_values(fast)) == 0.02
    adamw = dataclasses.replace(fast, train={**fast.train, "optimizer": "adamw", "lr": 0.002, "weight_decay": 0.2})
    base = base_values(adamw)
    assert (base["optimizer"], base["adamw_lr"], base["adamw_weight_decay"]) == ("adamw", 0.002, 0.2)
    space = covering_space(SearchSpace(optimizer=("sgd",), positive_fraction=(0.25,)), base, train_images=480)
    assert space.optimizer == ("sgd", "adamw") and space.adamw_weight_decay == (0.01, 0.2)  # holds the base
    assert anchor_params(base, space) == [{"optimizer": "sgd", "lr": 0.005, "batch_size": 4, "horizontal_flip": 0.5,
                                           "color_jitter": 0.0, "scale_jitter": 0.0,
                                           "positive_fraction": 0.25}]  # 0.02 x 4 / 16
    assert anchor_params(base, SearchSpace(optimizer=("adamw",), positive_fraction=(0.25,))) == []
    half = anchor_params(base, SearchSpace(optimizer=("adamw",)))  # the base recipe, only its fraction changed
    assert half == [{**base, "positive_fraction": 0.5}] and anchor_name(half[0], base) == "positive fraction 0.5"
    assert anchor_name(anchor_params(base, space)[0], base) == "sgd"
    with pytest.raises(ValueError, match="optimizers must be among"):
        SearchSpace(optimizer=("adam",)).check()
    with pytest.raises(ValueError, match="adamw-lr range"):
        SearchSpace(adamw_lr=(0.0, 0.01)).check()


@pytest.mark.usefixtures("one_torch_thread")
def test_adamw_starts_at_its_own_point_and_trains_with_it(tmp_path: Path) -> None:
    """An SGD recipe searched over both optimizers: trial 1 is AdamW's starting point (the base recipe's values,
    AdamW's usual rates), queued once per study, and it really trains with AdamW and that weight decay."""
    import torch

    from isseg.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", 4, seed=1, image_size=96, val_fraction=0.25, max_objects=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "s"
    cfg = TuneConfig(str(recipe), str(data["train_json"]), str(data["train_images"]), str(data["val_json"]),
                     str(data["val_images"]), output=str(out), max_trials=2, evaluations=1, pruner="none",
                     confirm_top=0, trial_length="images")
    tune(cfg)
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    base = base_values(load_recipe(recipe))
    ran = [t.params for t in study.trials if t.state.name == "COMPLETE"]  # then, queued: the fraction's anchor
    assert ran == [base, {**{k: v for k, v in base.items() if k != "lr"}, "optimizer": "adamw", **ADAMW_START}]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["optimizer"] for r in rows] == ["sgd", "adamw", "sgd"] and rows[2]["state"] == "waiting"
    assert rows[1]["note"] == "adamw's starting point"
    assert float(rows[1]["lr"]) == ADAMW_START["adamw_lr"] and rows[0]["weight_decay"] == ""
    groups_ = torch.load(out / "trials" / "001" / "last.pth", weights_only=False)["optimizer"]["param_groups"]
    assert "betas" in groups_[0] and groups_[0]["weight_decay"] == ADAMW_START["adamw_weight_decay"]  # AdamW's
    assert "betas" not in torch.load(out / "trials" / "000" / "last.pth", weights_only=False)["optimizer"][
        "param_groups"][0]  # SGD's
    tune(dataclasses.replace(cfg, max_trials=4, resume=True))  # resumed: no second starting point
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and not done[3].user_attrs.get("anchor")  # the anchor queued in the first session ran
    assert done[2].params == {**base, "positive_fraction": 0.5}  # (a process that found the phase over queued it
    assert done[2].user_attrs["anchor"] == "positive fraction 0.5"  # again rather than lose it)
    rows = [r for r in csv.DictReader((out / "trials.csv").open()) if r["state"] == "complete"]
    assert rows[2]["note"] == "the base recipe with positive fraction 0.5" and rows[2]["positive_fraction"] == "0.5"


@pytest.mark.usefixtures("one_torch_thread")
def test_the_base_recipe_and_the_anchors_run_to_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pruner that would stop every trial at its first validation stops only the sampled ones: the base recipe
    and the anchors are the references of their choices (a larger positive fraction trails at first)."""
    from isseg.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", 4, seed=1, image_size=96, val_fraction=0.25, max_objects=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.replace("iterations: 2,", "iterations: 4,"))
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    cfg = TuneConfig(str(recipe), str(data["train_json"]), str(data["train_images"]), str(data["val_json"]),
                     str(data["val_images"]), output=str(tmp_path / "s"), max_trials=4, evaluations=2,
                     confirm_top=0, trial_length="images")
    tune(cfg)
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    states = [(t.state.name, bool(t.user_attrs.get("base_recipe") or t.user_attrs.get("anchor"))) for t in
              study.trials if not t.user_attrs.get("surplus") and t.state.name != "WAITING"]
    assert states == [("COMPLETE", True)] * 3 + [("PRUNED", False)]
    assert [len(t.intermediate_values) for t in study.trials[:3]] == [2, 2, 2]


def test_search_space_and_config_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lr range"):
        SearchSpace(lr=(0.1, 0.01)).check()
    with pytest.raises(ValueError, match=r"color-jitter range must lie in \[0.0, 1.0\]"):
        SearchSpace(color_jitter=(0.0, 1.5)).check()
    with pytest.raises(FileNotFoundError, match="data: annotation file not found"):
        TuneConfig("fast-cpu", str(tmp_path / "no.json"), ".", ".", ".").check()
    ann = tmp_path / "a.json"
    ann.write_text("{}")
    with pytest.raises(ValueError, match="trial-length must be one of"):
        TuneConfig("fast-cpu", str(ann), str(tmp_path), str(ann), str(tmp_path), trial_length="epochs").check()


@pytest.mark.usefixtures("one_torch_thread")
def test_time_trials_measure_the_pace_once_and_keep_the_base_recipes_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isseg.data.synth import make_synthetic_dataset
    from isseg.engine import tune_pace

    data = make_synthetic_dataset(tmp_path / "d", 6, seed=1, image_size=96, val_fraction=0.34, max_objects=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.replace("iterations: 2,", "iterations: 6,"))
    out = tmp_path / "s"
    cfg = TuneConfig(str(recipe), str(data["train_json"]), str(data["train_images"]), str(data["val_json"]),
                     str(data["val_images"]), output=str(out), budget_minutes=30, max_trials=3, evaluations=2,
                     pruner="none", confirm_top=0, space=SearchSpace(batch_size=(1, 2, 4)))
    assert cfg.trial_length == "time"  # the default; both optimizers (the default space)
    assert tune(cfg)["best"] is not None
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    pace = stored_pace(study)
    shapes = {f"{b}{o} pos{f}" for b in (1, 2, 4) for o in ("", " adamw") for f in (0.25, 0.5)}
    assert set(pace or {}) == shapes and all(s > 0 for s in pace.values())
    base, key0 = load_recipe(recipe), "1 pos0.25"  # the tiny recipe's batch 1, SGD, the preset's fraction 0.25
    for t in study.trials:  # each trial: the base recipe's 6 steps of batch 1, in time; validated in base images
        used = t.user_attrs["pace"]  # the timed pace, corrected by the trials before it (the first: the timed one)
        assert used == (pace if t.number == 0 else trial_pace(study.trials[:t.number], pace, key0))
        assert t.user_attrs["iterations_planned"] == max(1, round(6 * used[key0] / used[values_key(t.params)]))
        planned = t.user_attrs["iterations_planned"]
        assert max(t.intermediate_values) == round(planned * step_units(t.params, base, used))
        assert t.user_attrs["s_per_step"] > 0  # its own steps, for the trials after it
    assert trial_pace(study.trials, pace, key0) != pace

    def measured_again(*a: object, **k: object) -> object:
        raise AssertionError("a resumed search must keep its pace")

    both = tune_pace.measure_pace(load_recipe(recipe), {"1": {"batch_size": 1}, "2": {"batch_size": 2}},
                                  str(data["train_json"]), str(data["train_images"]), {"threads": 1},
                                  jobs=2)  # two processes at once, as two trials run
    assert set(both) == {"1", "2"} and all(s > 0 for s in both.values())
    monkeypatch.setattr(tune_pace, "measure_pace", measured_again)
    assert tune(dataclasses.replace(cfg, max_trials=4, resume=True))["trials"] == 4
    best = load_recipe(out / "best_recipe.yaml")
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    final = trial_pace(study.trials, pace, key0)  # the pace of all the trials' steps
    assert best.measured["trial_length"] == pace_text(final)
    assert best.train["iterations"] == max(1, round(6 * final[key0] / final[recipe_pace_key(best)]))


def test_trial_pace_takes_the_trials_own_steps() -> None:
    """A key that trials ran takes the median of their steps (of those that ran to the end, when there are any);
    the others the timed pace, scaled as the base key's trials ran against its timed steps; nothing changes before
    a trial of the base key has a step time."""
    from types import SimpleNamespace

    def run(batch: int, optimizer: str, step: float | None, state: str = "COMPLETE") -> SimpleNamespace:
        return SimpleNamespace(params={"batch_size": batch, "optimizer": optimizer}, user_attrs={"s_per_step": step},
                               state=SimpleNamespace(name=state))

    timed = {"4": 0.30, "4 adamw": 0.29, "2": 0.20}  # the 2026-12-06 search read AdamW 1.5 % shorter
    assert trial_pace([run(4, "adamw", 0.33)], timed, "4") == timed  # no base trial yet
    assert trial_pace([run(4, "sgd", None)], timed, "4") == timed  # the base trial has not validated yet
    assert trial_pace([], None, "4") is None  # equal images
    trials = [run(4, "sgd", 0.25), run(4, "adamw", 0.28), run(4, "sgd", 0.27), run(4, "adamw", 0.26)]
    corrected = trial_pace(trials, timed, "4")
    assert corrected == pytest.approx({"4": 0.26, "4 adamw": 0.27, "2": 0.20 * 0.26 / 0.30})
    # 2026-12-06: a pruned trial's young-model steps (0.557 s) against the whole base trial's 0.458
    pruned = [run(4, "sgd", 0.458), run(4, "sgd", 0.557, "PRUNED"), run(2, "sgd", 0.3, "PRUNED")]
    assert trial_pace(pruned, timed, "4") == pytest.approx({"4": 0.458, "4 adamw": 0.29 * 0.458 / 0.30, "2": 0.3})


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
            "--evaluations", "1", "--budget-minutes", "30", "--pruner", "none", "--no-progress",
            "--confirm-top", "0", "--trial-length", "images", "--batch-sizes", "1", "--optimizers", "sgd",
            "--positive-fractions", "0.25"]  # fmt: skip
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
    assert main(args + ["--trials", "4", "--resume", "--evaluations", "2"]) == 0  # at its first validation
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[-1].state.name == "PRUNED" and list(study.trials[-1].intermediate_values) == [1]
    last = list(csv.DictReader((out / "trials.csv").open()))[-1]
    assert last["state"] == "pruned" and last["mask_AP"] == "" and last["last_val_mask_AP"] != ""
    assert main(args + ["--trials", "5", "--resume"]) == 0  # one validation, the trial's last: a result, not pruned
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[-1].state.name == "COMPLETE" and list(study.trials[-1].intermediate_values) == [2]


def test_no_trial_within_the_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from isseg.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", 3, seed=1, image_size=64, val_fraction=0.34, max_objects=1)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    cfg = TuneConfig(str(recipe), str(data["train_json"]), str(data["train_images"]), str(data["val_json"]),
                     str(data["val_images"]), output=str(tmp_path / "s"), budget_minutes=1e-4)
    result = tune(cfg)
    assert result["best"] is None and result["files"]["recipe"] is None
    assert result["trials"] == 3  # queued only: the base recipe, AdamW's starting point, positive fraction 0.5
    assert "waiting" in (tmp_path / "s" / "trials.md").read_text()
    base = {"optimizer": "sgd", "lr": 0.01, "batch_size": 8, "horizontal_flip": 0.5, "color_jitter": 0.0,
            "scale_jitter": 0.0, "positive_fraction": 0.25}
    with pytest.raises(ValueError, match="every batch size"):
        covering_space(SearchSpace(batch_size=(4, 8)), base, train_images=3)
    assert covering_space(SearchSpace(lr=(0.02, 0.04)), base, train_images=16).lr == (0.01, 0.04)


def _trial(value: float | None, lr: float, **attrs: object) -> object:
    dist = {"lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)}
    state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
    return optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=value, state=state,
                                     user_attrs=attrs)


def test_the_best_is_the_best_mean_over_seeds_not_the_luckiest_run() -> None:
    study = optuna.create_study(direction="maximize")
    for t in [_trial(0.10, 0.02, base_recipe=True), _trial(0.15, 0.05), _trial(0.12, 0.03), _trial(0.02, 0.01)]:
        study.add_trial(t)
    assert best_group(study)["trial"] == 1  # one run each: the best single run
    study.add_trial(_trial(0.05, 0.05, confirm_of=1, confirm_seed=1))  # trial 1 was lucky
    study.add_trial(_trial(None, 0.03, confirm_of=2, confirm_seed=1))  # killed: retried below
    study.add_trial(_trial(0.11, 0.03, retry_of=5, confirm_of=2, confirm_seed=1))
    assert best_group(study)["trial"] == 2  # two runs beat one: only confirmed trials compete now
    study.add_trial(_trial(0.10, 0.02, confirm_of=0, confirm_seed=1))
    by_trial = {g["trial"]: g for g in groups(study)}
    assert by_trial[1]["values"] == [0.15, 0.05] and by_trial[2]["values"] == [0.12, 0.11]
    assert by_trial[0]["base_recipe"] and by_trial[0]["mask_AP"] == pytest.approx(0.10)
    assert best_group(study)["trial"] == 2 and best_group(study)["mask_AP"] == pytest.approx(0.115)
    study.add_trial(_trial(0.13, 0.02, confirm_of=0, confirm_seed=2))  # base: 0.115 too, and a third run
    assert best_group(study)["trial"] == 0
    tie = optuna.create_study(direction="maximize")
    tie.add_trial(_trial(0.2, 0.05))
    tie.add_trial(_trial(0.2, 0.02, base_recipe=True))
    assert best_group(tie)["base_recipe"]  # a tie keeps the base recipe


def test_confirmations_are_queued_once_base_recipe_first() -> None:
    cfg = TuneConfig("fast-cpu", "", "", "", "", confirm_top=2, confirm_seeds=2)
    lone = optuna.create_study(direction="maximize")
    lone.add_trial(_trial(0.1, 0.02, base_recipe=True))
    lone.add_trial(_trial(None, 0.05))
    enqueue_confirmations(lone, cfg)  # nothing to compare the base recipe with: no runs queued
    assert lone.user_attrs["confirming"] and len(lone.trials) == 2

    study = optuna.create_study(direction="maximize")
    for t in [_trial(0.10, 0.02, base_recipe=True), _trial(0.15, 0.05), _trial(0.12, 0.03), _trial(0.13, 0.04),
              _trial(0.3, 0.06, confirm_of=1, confirm_seed=1)]:
        study.add_trial(t)
    enqueue_confirmations(study, cfg)
    enqueue_confirmations(study, cfg)  # queued once
    queued = [(t.user_attrs["confirm_of"], t.user_attrs["confirm_seed"]) for t in study.trials
              if t.state.name == "WAITING"]
    assert queued == [(0, 1), (1, 1), (3, 1), (0, 2), (1, 2), (3, 2)]  # the base first, then the two best


@pytest.mark.usefixtures("one_torch_thread")
def test_confirmation_runs_retrain_the_best_and_the_base_with_another_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from isseg.cli.main import main
    from isseg.data.synth import make_synthetic_dataset
    from isseg.engine import trainer

    data = make_synthetic_dataset(tmp_path / "d", 4, seed=1, image_size=96, val_fraction=0.25, max_objects=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "search"
    args = ["tune", "--recipe", str(recipe), "--data", str(data["train_json"]), "--images", str(data["train_images"]),
            "--val-data", str(data["val_json"]), "--val-images", str(data["val_images"]), "--output", str(out),
            "--evaluations", "1", "--budget-minutes", "30", "--pruner", "none", "--no-progress", "--trials", "2",
            "--confirm-top", "1", "--trial-length", "images", "--positive-fractions", "0.25"]  # fmt: skip
    real_train, seeds = trainer.train, []

    def train_then_stop(cfg: object, **kw: object) -> object:
        seeds.append(cfg.seed)
        if len(seeds) == 3:  # Ctrl-C in the first confirmation run
            raise KeyboardInterrupt
        return real_train(cfg, **kw)

    monkeypatch.setattr(trainer, "train", train_then_stop)
    assert main(args) == 130
    assert main(args + ["--resume"]) == 0
    study = optuna.load_study(study_name="isseg-tune", storage=f"sqlite:///{out / 'study.db'}")
    attrs = [(t.state.name, t.user_attrs.get("confirm_of"), t.user_attrs.get("seed")) for t in study.trials]
    assert attrs[:2] == [("COMPLETE", None, 0), ("COMPLETE", None, 0)]  # the search: base and one sampled trial
    assert attrs[2][:2] == ("FAIL", 0) and attrs[4] == ("COMPLETE", 0, 1)  # the base recipe first: interrupted,
    assert attrs[3] == ("COMPLETE", 1, 1) and len(attrs) == 5  # then retried on resume; queued only once
    assert seeds == [0, 0, 1, 1, 1]
    assert study.trials[4].params == study.trials[0].params and study.trials[4].user_attrs["retry_of"] == 2
    best = best_group(study)
    assert len(best["values"]) == 2 and best["trial"] in (0, 1)
    printed = capsys.readouterr().out
    assert f"best trial {best['trial']}: validation mask AP {best['mask_AP']:.4f} (" in printed
    assert "mean of 2 seeds" in printed
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["seed"] for r in rows] == ["0", "0", "1", "1", "1"] and rows[3]["note"] == "confirms trial 1"
    assert "mean of 2 seeds" in load_recipe(out / "best_recipe.yaml").measured["tune"]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process states from Linux's /proc")
def _running_pids(db: Path) -> set:
    """The ``pid`` of each running trial, read from the SQLite file read-only: opening it with Optuna while the
    search creates its schema would create it a second time (a UNIQUE constraint on alembic's version failed
    the search that way)."""
    import sqlite3

    query = ("SELECT a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
             "WHERE t.state = 'RUNNING' AND a.key = 'pid'")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return {row[0] for row in con.execute(query)}
    except sqlite3.Error:  # no file, or no tables yet
        return set()


def test_jobs_train_trials_at_once_and_a_killed_search_leaves_no_orphan(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from isseg.cli.main import main
    from isseg.data.synth import make_synthetic_dataset
    from isseg.engine.tune_report import real_trials

    data = make_synthetic_dataset(tmp_path / "d", 4, seed=1, image_size=96, val_fraction=0.25, max_objects=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.replace("iterations: 2,", "iterations: 16,"))  # trials long enough to overlap
    out = tmp_path / "search"
    args = ["tune", "--recipe", str(recipe), "--data", str(data["train_json"]), "--images", str(data["train_images"]),
            "--val-data", str(data["val_json"]), "--val-images", str(data["val_images"]), "--output", str(out),
            "--evaluations", "1", "--budget-minutes", "30", "--pruner", "none", "--no-progress", "--trials", "5",
            "--confirm-top", "1", "--jobs", "2", "--trial-length", "images",
            "--positive-fractions", "0.25"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    search = subprocess.Popen([sys.executable, "-m", "isseg", *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    storage = f"sqlite:///{out / 'study.db'}"
    pids: set = set()
    give_up = time.time() + 240
    while len(pids) < 2 and time.time() < give_up:  # both processes train
        time.sleep(0.2)
        pids = _running_pids(out / "study.db")
    assert search.poll() is None, search.communicate()[1].decode()[-2000:]
    assert len(pids) == 2, "never two trials at once"
    search.send_signal(signal.SIGKILL)
    search.wait()
    killed = [t for t in optuna.load_study(study_name="isseg-tune", storage=storage).trials
              if t.state.name == "RUNNING"]
    workers = {t.user_attrs["pid"] for t in killed} - {search.pid}
    deadline = time.time() + 20
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert workers and not any(_alive(pid) for pid in workers), "a worker outlived the killed search"

    assert main(args + ["--resume"]) == 0  # the killed trials run again; the search and confirmation finish
    study = optuna.load_study(study_name="isseg-tune", storage=storage)
    trials = real_trials(study)
    retried = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    assert sorted(retried) == sorted(t.number for t in killed)
    assert all(retried[t.number].params == t.params and retried[t.number].state.name == "COMPLETE" for t in killed)
    search_done = [t for t in trials if t.state.name == "COMPLETE" and "confirm_of" not in t.user_attrs]
    confirmations = [t for t in trials if "confirm_of" in t.user_attrs]
    assert len(search_done) == 5 and len(confirmations) == 2, [(t.number, t.state.name) for t in trials]
    assert all(t.state.name == "COMPLETE" for t in confirmations)
    by_number = {t.number: t for t in trials}  # the base recipe among them (it may be the retry of trial 0)
    assert any(by_number[t.user_attrs["confirm_of"]].user_attrs.get("base_recipe") for t in confirmations)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    overlapping = [(a.number, b.number) for a in done for b in done if a.user_attrs["pid"] != b.user_attrs["pid"]
                   and a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete]
    assert overlapping, "the resumed search never trained two trials at once"
    assert len({learning_rate(t.params) for t in search_done}) == 5  # the processes' samplers do not repeat each other
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["trial"]) for r in rows] == [t.number for t in trials]  # surplus trials are not in the table
