"""How long an ``isseg tune`` trial trains: the same wall time as the base recipe (``trial_length="time"``, the
default) or the same number of training images (``"images"``), whatever the batch size and optimizer it samples.

Equal images favour small batches: they take more optimizer steps per image, and on a CPU each image costs more
time in a small batch than in a large one. A search on equal images measured on 2 cores chose batch 2 over the
default's batch 4; it won at equal images and lost at equal time (docs/training.md). With ``"time"``, the search
first times a few training steps of every batch size and optimizer (:func:`measure_pace`: seconds per step, on the
trials' threads; an AdamW step of the fast-cpu model cost ~15 % more than an SGD one tensor by tensor, ~5 % with
torch's fused step, where these rounds read it 1.5 % shorter: docs/training.md) and a trial of batch ``b`` takes
``base steps x pace[b0] / pace[b]`` steps: the base recipe's wall time. The pace is keyed by :func:`pace_key`
(``"4"`` for batch 4 with SGD, ``"4 adamw"``). Once trials have run, their own steps correct it
(:func:`trial_pace`): a trial of a key that earlier trials ran takes their measured time per step.

Both modes speak one unit, the *base image*: one image of the base recipe's batch ``b0``. A step of batch ``b``
is worth ``b`` base images (equal images) or ``b0 x pace[b] / pace[b0]`` (equal time) (:func:`step_units`). A
trial's length, its warm-up and the pruner's resource (what a trial has consumed at a validation) are counted in
base images, so every trial is judged at the same share of the same budget.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from isseg.recipes import Recipe, train_config

LENGTHS = ("time", "images")
PACE_STEPS = 10  # timed steps per batch size and round; the first PACE_SKIP (start-up, first allocations) left out
PACE_SKIP = 3
PACE_ROUNDS = 3  # the batch sizes in turn, three times: a shared host's drift falls on all of them alike
MODEL_VALUES = {"positive_fraction": "roi.positive_fraction"}  # searched values that are preset fields, not training's


def recipe_value(recipe: Recipe, key: str) -> Any:
    """The recipe's ``train`` value of ``key`` (TrainConfig's default where it sets none)."""
    from isseg.engine.train_config import TrainConfig

    return recipe.train.get(key, getattr(TrainConfig, key))


def recipe_batch(recipe: Recipe) -> int:
    """The recipe's batch size (TrainConfig's default where it sets none)."""
    return int(recipe_value(recipe, "batch_size"))


def trial_images(base: Recipe, train_images: int) -> int:
    """Training images the base recipe sees (iterations x batch size; epochs x the images an epoch uses)."""
    batch = recipe_batch(base)
    if base.train.get("iterations"):
        return int(base.train["iterations"]) * batch
    return int(base.train.get("epochs", 12)) * max(1, train_images // batch) * batch


def pace_key(batch: int, optimizer: str = "sgd", positive_fraction: float | None = None) -> str:
    """The pace's key of a step of ``batch`` images with ``optimizer`` and the RoI head's ``positive_fraction``
    (more positives, more mask-head work): ``"4"`` (SGD), ``"4 adamw"``, ``"4 pos0.5"``."""
    key = str(batch) if optimizer == "sgd" else f"{batch} {optimizer}"
    return key if positive_fraction is None else f"{key} pos{float(positive_fraction):g}"


def values_key(values: Mapping[str, Any]) -> str:
    """The pace key of a trial's parameters or training values (``batch_size``, ``optimizer``,
    ``positive_fraction``)."""
    return pace_key(int(values["batch_size"]), str(values.get("optimizer", "sgd")), values.get("positive_fraction"))


def recipe_model_value(recipe: Recipe, key: str) -> Any:
    """The value of the searched model field ``key`` (:data:`MODEL_VALUES`) in the recipe's preset and overrides."""
    return recipe_field(recipe, MODEL_VALUES[key])


def recipe_field(recipe: Recipe, field: str) -> Any:
    """The value of the preset field ``field`` (``"roi.positive_fraction"``) in the recipe's preset and overrides."""
    from isseg.config import get_config
    from isseg.engine.config_overrides import apply_overrides

    node: Any = apply_overrides(get_config(recipe.preset), recipe.overrides)
    for part in field.split("."):
        node = getattr(node, part)
    return node


def recipe_optimizer(recipe: Recipe) -> str:
    """The recipe's optimizer (TrainConfig's default where it sets none)."""
    return str(recipe_value(recipe, "optimizer"))


def recipe_pace_key(recipe: Recipe) -> str:
    """The pace key of the recipe's own steps (its batch size, optimizer and RoI positive fraction)."""
    return pace_key(recipe_batch(recipe), recipe_optimizer(recipe), recipe_model_value(recipe, "positive_fraction"))


def step_units(values: Mapping[str, Any], base: Recipe, pace: dict[str, float] | None = None) -> float:
    """Base images one step with the training ``values`` (``batch_size``, ``optimizer``, ``positive_fraction``) is
    worth: its batch size without a ``pace`` (equal images), else its time in steps of the ``base`` recipe's times
    the base batch size (equal time)."""
    if pace is None:
        return float(values["batch_size"])
    return recipe_batch(base) * pace[values_key(values)] / pace[recipe_pace_key(base)]


def with_values(base: Recipe, values: Mapping[str, Any]) -> Recipe:
    """``base`` with the searched ``values``: the preset fields (:data:`MODEL_VALUES`) in its ``overrides``, each in
    the place of the recipe's own override of that field, else appended (a value the recipe already gives changes
    nothing); the others in its ``train``.

    A positive fraction above the recipe's comes with ``roi.mask_positives_per_image`` at the recipe's own number
    of positives (unless the recipe caps them itself): the box head samples more positives, the mask head learns
    from as many as before, and a step costs what the recipe's does."""
    train = {**base.train, **{k: v for k, v in values.items() if k not in MODEL_VALUES}}
    lines = {MODEL_VALUES[k]: v for k, v in values.items()
             if k in MODEL_VALUES and float(v) != float(recipe_model_value(base, k))}
    roi = recipe_field(base, "roi")  # the recipe's preset and overrides, built once
    if lines.get("roi.positive_fraction", 0) > roi.positive_fraction and roi.mask_positives_per_image is None:
        lines["roi.mask_positives_per_image"] = int(roi.batch_size_per_image * roi.positive_fraction)
    overrides = list(base.overrides)
    for field, value in lines.items():
        line = f"{field}={value:g}"
        at = [i for i, o in enumerate(overrides) if o.split("=", 1)[0].strip() == field]
        if at:
            overrides[at[-1]] = line
        else:
            overrides.append(line)
    return dataclasses.replace(base, train=train, overrides=tuple(overrides))


def trial_recipe(base: Recipe, values: dict[str, Any], evaluations: int, train_images: int,
                 fraction: float = 1.0, pace: dict[str, float] | None = None) -> Recipe:
    """``base`` with the searched ``values``, as iterations: ``fraction`` of the base recipe's length in base
    images (:func:`trial_images`; equal images without ``pace``, equal time with it), the warm-up scaled alike,
    with ``evaluations`` validations (the values placed by :func:`with_values`)."""
    recipe = with_values(base, values)
    train = dict(recipe.train)
    old_batch = recipe_batch(base)
    units = step_units(values, base, pace)
    images = trial_images(base, train_images) * fraction
    train.pop("epochs", None)
    train["iterations"] = max(1, round(images / units))
    if train.get("warmup_iters"):
        train["warmup_iters"] = max(0, round(int(train["warmup_iters"]) * old_batch / units))
    train["eval_every"] = max(1, math.ceil(train["iterations"] / evaluations))
    return dataclasses.replace(recipe, train=train)


def measure_pace(base: Recipe, variants: dict[str, dict[str, Any]], data: str, images: str, options: dict[str, Any],
                 jobs: int = 1) -> dict[str, float]:
    """Seconds per training step of ``base`` with each of ``variants`` (pace key -> the training values that
    differ: batch size, optimizer and its rates): the median of the timed steps of
    ``jobs`` processes at once (the trials' own contention for the cores and the memory), trained with
    ``options`` (the trials' TrainConfig fields: threads, seed), without validation. On a shared host this is
    noisy: docs/training.md gives the measured spread (a step ratio off by 20-40 %)."""
    if jobs == 1:
        steps = _timed_steps(base, variants, data, images, options)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(_timed_steps, *zip(*[(base, variants, data, images, options)] * jobs)))
        steps = {k: [x for run in runs for x in run[k]] for k in variants}
    return {k: statistics.median(s) for k, s in steps.items()}


def _timed_steps(base: Recipe, variants: dict[str, dict[str, Any]], data: str, images: str,
                 options: dict[str, Any]) -> dict[str, list[float]]:
    """Each variant's step times: ``PACE_ROUNDS`` rounds of ``PACE_STEPS`` steps (less the first ``PACE_SKIP`` of
    each), the variants in turn, each run in a folder deleted afterwards."""
    steps: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(PACE_ROUNDS):
        for key in steps:
            recipe = with_values(base, {**variants[key], "iterations": PACE_STEPS, "warmup_iters": 0})
            recipe = dataclasses.replace(recipe, train={k: v for k, v in recipe.train.items() if k != "epochs"})
            with tempfile.TemporaryDirectory(prefix="isseg-pace-") as run:
                tc = train_config(recipe, data, images, run, **{**options, "val_data": None, "val_images": None,
                                                                "tensorboard": False, "progress": False,
                                                                "checkpoint_every": PACE_STEPS + 1})
                stamps = _step_times(tc)
            steps[key] += [b - a for a, b in zip(stamps[PACE_SKIP - 1:], stamps[PACE_SKIP:])]
    return steps


def _step_times(tc: Any) -> list[float]:
    """When each training step of ``tc`` ended (``time.perf_counter``)."""
    from isseg.engine.trainer import train

    stamps: list[float] = []
    train(tc, on_iteration_end=lambda *_: stamps.append(time.perf_counter()))
    return stamps


def stored_pace(study: Any) -> dict[str, float] | None:
    """The pace a search measured (kept in its study), or None (equal images)."""
    kept = study.user_attrs.get("pace")
    return None if kept is None else {str(k): float(s) for k, s in kept.items()}


def study_pace(study: Any, base: Recipe, variants: dict[str, dict[str, Any]], data: str, images: str,
               options: dict[str, Any], jobs: int = 1,
               complete: Callable[[dict[str, float]], dict[str, float]] | None = None) -> dict[str, float] | None:
    """The search's pace: measured once (:func:`measure_pace`), completed with ``complete`` (the shapes that were
    not timed, from those that were), then kept in the study, so that a resumed search keeps its trials' lengths
    (measured again only when a timed variant is missing). None with one variant: every trial then trains the
    recipe's own steps, equal time as near as a measurement would make it."""
    if len(variants) == 1:
        return None
    pace = stored_pace(study)
    if pace is None or not set(variants) <= set(pace):
        pace = measure_pace(base, variants, data, images, options, jobs)
        pace = complete(pace) if complete else pace
        study.set_user_attr("pace", dict(pace))
    return pace


def trial_pace(trials: list[Any], pace: dict[str, float] | None, base_key: str) -> dict[str, float] | None:
    """``pace`` corrected by the trials' own steps: a key with trials takes the median of their wall time per step
    (``s_per_step``, validations included, recorded by every trial that validated once), of those that ran to the
    end when there are any (a pruned trial timed only a young model's steps: in a 2026-12-06 search one at 0.557 s
    against the base recipe's 0.458 would have given the other shapes ~10 % more steps), the other keys the timed
    pace scaled by the base key's trials against its timed steps. Whole trials see what a few steps at the start
    cannot: 2026-12-06 searches timed an AdamW step 1.5 % shorter and 2 % longer than an SGD one, and its AdamW
    trials ran 8-10 % longer. Unchanged (None: equal images) until a trial of ``base_key`` has run."""
    if pace is None:
        return None
    seen: dict[str, list[float]] = {}
    whole: dict[str, list[float]] = {}  # trials that ran to the end: a pruned one saw only a young model's steps
    for t in trials:
        step = t.user_attrs.get("s_per_step")
        if step and "batch_size" in t.params:
            seen.setdefault(values_key(t.params), []).append(float(step))
            if t.state.name == "COMPLETE":
                whole.setdefault(values_key(t.params), []).append(float(step))
    seen.update(whole)
    if base_key not in seen:
        return pace
    scale = statistics.median(seen[base_key]) / pace[base_key]
    return {k: statistics.median(seen[k]) if k in seen else s * scale for k, s in pace.items()}


def pace_text(pace: dict[str, float] | None) -> str:
    """``"equal time (s per step: batch 2 0.31, batch 4 0.55, batch 4 adamw 0.62)"`` or ``"equal images"``."""
    if pace is None:
        return "equal images"
    order = sorted(pace, key=lambda k: (int(k.split()[0]), k))
    return "equal time (s per step: " + ", ".join(f"batch {k} {pace[k]:.3g}" for k in order) + ")"
