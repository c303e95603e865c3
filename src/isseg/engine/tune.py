"""Hyper-parameter search (``isseg tune``) with Optuna: a recipe's optimizer (SGD or AdamW) and learning rate, batch
size and augmentation strengths (:mod:`isseg.engine.tune_space`), within a wall-clock budget, with a pruner that
stops unpromising trials early.

Each trial trains the base recipe with the sampled values for the base recipe's wall time (``trial_length``
"time", the default: each batch size's steps timed first) or its number of training images ("images"); see
:mod:`isseg.engine.tune_pace`; ``trial_fraction`` of that for shorter trials. It validates ``evaluations`` times
and reports the mask AP to the pruner (ASHA by default). The first trial is the base recipe itself.

One training run is a noisy measurement. So the search stops ``confirm_share`` of the budget early, and the
``confirm_top`` best completed trials and the base recipe are trained again with ``confirm_seeds`` other seeds;
the best is the highest mean among those with the most finished runs (:func:`isseg.engine.tune_report.best_group`),
and a tie keeps the base recipe. ``jobs`` trials run at once in processes (:mod:`isseg.engine.tune_jobs`).

The study lives in ``<output>/study.db`` (SQLite), with the wall time spent so far: a search killed at any point
resumes with ``resume=True`` (a trial that was running runs again with the same values), and the budget counts
every session. After each trial, ``trials.csv``, ``trials.md``, ``trials.png`` (:mod:`isseg.engine.tune_report`)
and ``best_recipe.yaml`` (the best values at the recipe's full length) are rewritten.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isseg.engine import tune_pace
from isseg.engine.tune_jobs import PhaseEnd, is_confirmation, phase_done, run_phase, search_trials_taken
from isseg.engine.tune_pace import step_units, trial_recipe
from isseg.engine.tune_report import real_trials
from isseg.engine.tune_space import (
    SearchSpace,
    anchor_name,
    anchor_params,
    base_values,
    covering_space,
    full_pace,
    pace_variants,
    suggest,
    train_values,
)
from isseg.recipes import Recipe, load_recipe, save_recipe, train_config

STUDY = "isseg-tune"
PRUNERS = ("asha", "median", "none")

MIN_TRIAL_MINUTES = 0.05  # a trial starts only with more of the budget left than this


@dataclass
class TuneConfig:
    """What ``isseg tune`` searches: the base ``recipe`` on ``data`` / ``images``, validated on ``val_data`` /
    ``val_images``, for ``budget_minutes`` of wall time (all sessions) or ``max_trials`` trials."""

    recipe: str
    data: str
    images: str
    val_data: str
    val_images: str
    output: str = "runs/tune"
    budget_minutes: float = 60.0
    max_trials: int | None = None
    space: SearchSpace = field(default_factory=SearchSpace)
    evaluations: int = 3  # validations per trial (the pruner's rungs)
    trial_fraction: float = 1.0  # a trial trains on this share of the recipe's length (the best recipe: all)
    trial_length: str = "time"  # trials as long as the base recipe in wall time, or "images" (tune_pace)
    pruner: str = "asha"
    seed: int = 0
    resume: bool = False
    progress: bool = False
    trial_options: dict[str, Any] = field(default_factory=dict)  # extra TrainConfig fields of every trial
    confirm_top: int = 2  # the best completed trials retrained with other seeds before choosing (0: none)
    confirm_seeds: int = 1  # other training seeds for each of them and for the base recipe
    confirm_share: float = 0.3  # the share of the budget kept for those runs
    jobs: int = 1  # trials at once, each in its own process (:mod:`isseg.engine.tune_jobs`)

    def check(self) -> None:
        for name in ("data", "val_data"):
            if not Path(getattr(self, name)).is_file():
                raise FileNotFoundError(f"{name.replace('_', '-')}: annotation file not found: {getattr(self, name)}")
        for name in ("images", "val_images"):
            if not Path(getattr(self, name)).is_dir():
                raise FileNotFoundError(f"{name.replace('_', '-')}: image folder not found: {getattr(self, name)}")
        if not self.budget_minutes > 0:
            raise ValueError(f"budget-minutes must be > 0, got {self.budget_minutes}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.max_trials}")
        if self.evaluations < 1:
            raise ValueError(f"evaluations must be >= 1, got {self.evaluations}")
        if not 0 < self.trial_fraction <= 1:
            raise ValueError(f"trial-fraction must be in (0, 1], got {self.trial_fraction}")
        if self.confirm_top < 0 or self.confirm_seeds < 1:
            raise ValueError(f"confirm-top must be >= 0 and confirm-seeds >= 1, got {self.confirm_top} and "
                             f"{self.confirm_seeds}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if not 0 <= self.confirm_share < 1:
            raise ValueError(f"confirm-share must be in [0, 1), got {self.confirm_share}")
        if self.trial_length not in tune_pace.LENGTHS:
            raise ValueError(f"trial-length must be one of {tune_pace.LENGTHS}, got {self.trial_length!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"pruner must be one of {PRUNERS}, got {self.pruner!r}")
        self.space.check()


def open_study(cfg: TuneConfig, first_rung: int, index: int = 0) -> Any:
    """The study in ``<output>/study.db`` as process ``index`` of the search sees it: the pruner (``first_rung``:
    images seen at a trial's first validation, its smallest resource) and a TPE sampler seeded apart from the
    other processes' and from earlier sessions'."""
    import optuna

    pruner = {"asha": optuna.pruners.SuccessiveHalvingPruner(min_resource=first_rung, reduction_factor=3),
              "median": optuna.pruners.MedianPruner(n_startup_trials=2), "none": optuna.pruners.NopPruner()}
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(cfg.output) / 'study.db'}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})  # processes take turns
    study = optuna.create_study(storage=storage, study_name=STUDY, direction="maximize", load_if_exists=True,
                                pruner=pruner[cfg.pruner])
    # a resumed session must not replay the first one's random draws: the seed moves on with the trials held
    seed = cfg.seed + 1000 * index + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, constant_liar=cfg.jobs > 1)
    return study


def _study(cfg: TuneConfig, first_rung: int, space: SearchSpace, base: dict[str, Any]) -> Any:
    """The study: new, or (``resume``) the existing one, its interrupted trials failed and queued again with their
    values. The base recipe's trial (``base``: its values) comes first, then the anchors (each other optimizer's
    starting point, the recipe with each other positive fraction: :func:`anchor_params`), once per study."""
    import optuna

    out = Path(cfg.output)
    db = out / "study.db"
    if db.exists() and not cfg.resume:
        raise ValueError(f"{db} exists: pass --resume to continue that search, or another --output")
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(cfg, first_rung)
    if not study.trials:
        study.enqueue_trial(base, user_attrs={"base_recipe": True})
    anchored = list(study.user_attrs.get("anchors", []))
    for params in anchor_params(base, space):
        name = anchor_name(params, base)
        if name not in anchored:
            study.enqueue_trial(params, user_attrs={"anchor": name})
            anchored.append(name)
    study.set_user_attr("anchors", anchored)
    retried = list(study.user_attrs.get("retried", []))
    for t in study.get_trials(deepcopy=False):
        killed = t.state == optuna.trial.TrialState.RUNNING  # its process died (kill, power cut)
        interrupted = t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted")  # Ctrl-C
        if (killed or interrupted) and t.number not in retried:
            if killed:
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            carried = {k: t.user_attrs[k] for k in ("confirm_of", "confirm_seed", "base_recipe", "anchor")
                       if k in t.user_attrs}
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, **carried})
            retried.append(t.number)
    study.set_user_attr("retried", retried)
    return study


def shared_threads(cfg: TuneConfig, recipe: Recipe) -> dict[str, int]:
    """The cores shared between ``cfg.jobs`` trials at once, unless the recipe sets its threads."""
    if cfg.jobs > 1 and not recipe.train.get("threads"):
        return {"threads": max(1, (os.cpu_count() or 1) // cfg.jobs)}
    return {}


class _Objective:
    """One trial: train the recipe with the suggested values, report each validation's mask AP to the pruner.
    A search trial must end by ``search_deadline``; a confirmation run (``confirm_of``: the same values with
    another training seed, never pruned) by ``deadline``."""

    def __init__(self, cfg: TuneConfig, base: Recipe, space: SearchSpace, deadlines: tuple[float, float],
                 train_images: int, pace: dict[str, float] | None) -> None:
        self.cfg, self.base, self.space, self.train_images, self.pace = cfg, base, space, train_images, pace
        self.search_deadline, self.deadline = deadlines
        self.phase = "search"  # or "confirm"

    def __call__(self, trial: Any) -> float:
        import optuna

        from isseg.engine.checkpointing import mask_ap
        from isseg.engine.trainer import train

        confirming = is_confirmation(trial)
        taken = self.phase == "search" and phase_done(trial.study.get_trials(deepcopy=False), "search",
                                                      self.cfg.max_trials, exclude=trial.number)
        if (self.phase == "confirm") != confirming or taken:
            trial.set_user_attr("surplus", True)  # another process took the last one (--jobs): not a trial
            fixed = trial.study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
            if fixed:  # a queued run (an anchor, a retry, a confirmation) is not lost: queued again for its phase
                trial.study.enqueue_trial(fixed, user_attrs={k: v for k, v in trial.user_attrs.items()
                                                             if k != "surplus"})
            trial.study.stop()
            raise optuna.TrialPruned("nothing left to run in this phase")
        values = train_values(suggest(trial, self.space))
        pace = tune_pace.trial_pace(trial.study.get_trials(deepcopy=False), self.pace,
                                    tune_pace.recipe_pace_key(self.base))
        recipe = trial_recipe(self.base, values, self.cfg.evaluations, self.train_images, self.cfg.trial_fraction,
                              pace)
        run = Path(self.cfg.output) / "trials" / f"{trial.number:03d}"
        left = ((self.deadline if confirming else self.search_deadline) - time.time()) / 60
        if left <= MIN_TRIAL_MINUTES:
            trial.study.stop()  # no later trial would have time either
            raise optuna.TrialPruned("no time left in the budget")
        options = {**shared_threads(self.cfg, recipe), "val_data": self.cfg.val_data,
                   "val_images": self.cfg.val_images, "progress": self.cfg.progress and self.cfg.jobs == 1,
                   "tensorboard": False, "max_minutes": left, **self.cfg.trial_options}
        if confirming:
            options["seed"] = int(trial.user_attrs["confirm_seed"])
        tc = train_config(recipe, self.cfg.data, self.cfg.images, str(run), **options)
        trial.set_user_attr("iterations_planned", tc.iterations or 0)
        trial.set_user_attr("seed", tc.seed)
        trial.set_user_attr("pid", os.getpid())
        if pace is not None:
            trial.set_user_attr("pace", pace)
        units = step_units(values, self.base, pace)
        started: list[float] = []  # when the first step ended: the trial's own pace counts from there
        # the base recipe and the anchors run to the end, the references of their choices: a larger positive
        # fraction scored below the base at the first validation and above it at the last (docs/training.md)
        reference = bool(trial.user_attrs.get("base_recipe") or trial.user_attrs.get("anchor"))

        def report(iteration: int, result: dict[str, Any]) -> None:
            # wall time per step since the first step, this validation included: the budget's unit, as the
            # validations come at the same shares of every trial (a median step missed half of AdamW's extra time)
            trial.set_user_attr("s_per_step", (time.perf_counter() - started[0]) / (iteration - 1) if
                                iteration > 1 and started else None)
            ap = mask_ap(result)
            # the resource: base images (tune_pace), so every batch size is pruned at the same share of the budget
            trial.report(-1.0 if ap is None else ap, step=round(iteration * units))
            finished = iteration >= (tc.iterations or 0)  # the last validation: a result, never pruned
            if not (confirming or reference or finished) and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {iteration} iterations (mask AP {ap})")

        start = time.time()
        try:
            result = train(tc, on_iteration_end=lambda i, *_: started.append(time.perf_counter()) if i == 1 else None,
                           on_evaluation=report)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # run again on --resume
            raise
        except RuntimeError as exc:
            if not str(exc).startswith("training diverged"):
                raise
            trial.set_user_attr("note", "diverged")
            return 0.0  # the worst AP: the sampler learns to avoid these values
        trial.set_user_attr("minutes", (time.time() - start) / 60)
        trial.set_user_attr("iterations", result.iteration)
        ap = mask_ap(result.last_eval or {})
        if result.stopped_by_time or ap is None:
            raise optuna.TrialPruned("the budget ran out before the trial finished")
        box = (result.last_eval or {}).get("bbox", {}).get("AP")
        trial.set_user_attr("box_AP", box)
        return ap


def enqueue_confirmations(study: Any, cfg: TuneConfig) -> None:
    """Queue, once, the confirmation runs: seed by seed, the base recipe first (if the budget runs out before the
    others, the base recipe, the safe choice, is the one with the most runs), then the best completed trials."""
    if study.user_attrs.get("confirming") or cfg.confirm_top == 0:
        return
    completed = [t for t in study.trials if t.state.name == "COMPLETE" and not is_confirmation(t)]
    top = sorted((t for t in completed if not t.user_attrs.get("base_recipe")), key=lambda t: -t.value)
    chosen = [t for t in completed if t.user_attrs.get("base_recipe")][:1] + top[: cfg.confirm_top]
    if len(chosen) > 1:  # a lone trial has nothing to be compared with
        for k in range(1, cfg.confirm_seeds + 1):
            for t in chosen:
                study.enqueue_trial(dict(t.params), user_attrs={"confirm_of": t.number, "confirm_seed": k})
    study.set_user_attr("confirming", True)


class _AfterTrial:
    """After each trial, in whichever process ran it: the time spent so far, and the reports."""

    def __init__(self, cfg: TuneConfig, base: Recipe, spent: float, session: float) -> None:
        self.cfg, self.base, self.spent, self.session = cfg, base, spent, session

    def __call__(self, study: Any, _trial: Any) -> None:
        study.set_user_attr("seconds_spent", self.spent + time.time() - self.session)
        _write_reports(study, self.base, self.cfg)


def _phase(study: Any, cfg: TuneConfig, objective: _Objective, until: float, after: _AfterTrial,
           first_rung: int) -> None:
    """Run one phase (``objective.phase``) until it is done or ``until``, in up to ``cfg.jobs`` processes."""
    trials = study.get_trials(deepcopy=False)
    if phase_done(trials, objective.phase, cfg.max_trials) or until - time.time() <= MIN_TRIAL_MINUTES * 60:
        return
    left = (sum(t.state.name == "WAITING" for t in trials) if objective.phase == "confirm" else
            None if cfg.max_trials is None else cfg.max_trials - search_trials_taken(trials))
    jobs = cfg.jobs if left is None else min(cfg.jobs, left)
    run_phase(functools.partial(open_study, cfg, first_rung), objective,
              PhaseEnd(objective.phase, cfg.max_trials, cfg.output, after), until, jobs)


def tune(cfg: TuneConfig) -> dict[str, Any]:
    """Run (or resume) the search, then the confirmation runs; returns ``{"best": {...}, "trials": n, "files":
    {...}, "minutes": spent}`` (``best`` None when no trial finished)."""
    from isseg.data.coco import load_coco_json

    cfg.check()
    base = load_recipe(cfg.recipe)
    n_train = len(load_coco_json(cfg.data)["images"])
    base_params = base_values(base)
    space = covering_space(cfg.space, base_params, n_train)
    first_rung = max(1, int(tune_pace.trial_images(base, n_train) * cfg.trial_fraction / cfg.evaluations * 0.9))
    study = _study(cfg, first_rung, space, base_params)
    study.set_user_attr("train_images", n_train)
    spent = float(study.user_attrs.get("seconds_spent", 0.0))
    session = time.time()
    deadline = session + cfg.budget_minutes * 60 - spent
    search_deadline = deadline - (cfg.budget_minutes * 60 * cfg.confirm_share if cfg.confirm_top else 0.0)
    after = _AfterTrial(cfg, base, spent, session)
    try:
        pace = None if cfg.trial_length != "time" else tune_pace.study_pace(
            study, base, pace_variants(base_params, space), cfg.data, cfg.images,
            {**shared_threads(cfg, base), **cfg.trial_options}, cfg.jobs,
            lambda timed: full_pace(timed, base_params, space))  # its time counts against the budget too
        objective = _Objective(cfg, base, space, (search_deadline, deadline), n_train, pace)
        if not study.user_attrs.get("confirming"):
            _phase(study, cfg, objective, search_deadline, after, first_rung)
            enqueue_confirmations(study, cfg)
        objective.phase = "confirm"
        _phase(study, cfg, objective, deadline, after, first_rung)
    finally:  # Ctrl-C included: the time spent counts against the budget of the next session
        study.set_user_attr("seconds_spent", spent + time.time() - session)
    files = _write_reports(study, base, cfg)
    best = files.pop("best")
    return {"best": best, "trials": len(real_trials(study)), "files": files,
            "minutes": float(study.user_attrs.get("seconds_spent", 0.0)) / 60}


def best_recipe(study: Any, base: Recipe, cfg: TuneConfig) -> Recipe | None:
    """The base recipe with the best values (:func:`isseg.engine.tune_report.best_group`; None when no trial
    completed), at the recipe's full length."""
    from isseg.engine.tune_report import best_group, groups

    best = best_group(study)
    if best is None:
        return None
    pace = tune_pace.trial_pace(study.trials, tune_pace.stored_pace(study), tune_pace.recipe_pace_key(base))
    n_train = int(study.user_attrs.get("train_images", 0))
    recipe = trial_recipe(base, train_values(best["params"]), cfg.evaluations, n_train, pace=pace)
    base_group = next((g for g in groups(study) if g["base_recipe"]), None)
    base_text = "n/a" if base_group is None or not base_group["values"] else _mean_text(base_group)
    measured = {"tune": f"trial {best['trial']} of {len(real_trials(study))}: validation mask AP {_mean_text(best)} "
                        f"(the base recipe {base.name!r}: {base_text})",
                "search": str(Path(cfg.output) / "study.db"), "trial_length": tune_pace.pace_text(pace)}
    n_done = sum(t.state.name == "COMPLETE" for t in study.trials)
    found = ("kept: no trial beat them on average" if best["base_recipe"] else "found")
    return dataclasses.replace(recipe, name=f"tuned-{base.name}", train=dict(recipe.train), measured=measured,
                               description=f"{base.name} with the optimizer, learning rate, batch size, "
                                           f"augmentation and RoI positive fraction {found} by isseg tune "
                                           f"({n_done} completed runs)")


def _mean_text(group: dict[str, Any]) -> str:
    runs = len(group["values"])
    return f"{group['mask_AP']:.3f}" + (f" (mean of {runs} seeds)" if runs > 1 else "")


def save_best(study: Any, base: Recipe, cfg: TuneConfig) -> Path | None:
    """Write ``<output>/best_recipe.yaml`` (when a trial completed)."""
    recipe = best_recipe(study, base, cfg)
    if recipe is None:
        return None
    return save_recipe(recipe, Path(cfg.output) / "best_recipe.yaml")


def _write_reports(study: Any, base: Recipe, cfg: TuneConfig) -> dict[str, Any]:
    """The files kept up to date after each trial: the table and plot (:mod:`isseg.engine.tune_report`) and
    ``recipe``, the best recipe (None before a trial completes); plus ``best`` (see ``write_reports``)."""
    from isseg.engine.tune_report import write_reports

    files = write_reports(study, cfg.output)
    files["recipe"] = save_best(study, base, cfg)
    return files
