"""What ``isseg tune`` searches (:class:`SearchSpace`) and how a trial's Optuna parameters become a recipe's
training values (:func:`train_values`).

The parameters of a trial are named as Optuna stores them: ``optimizer`` (one of the space's choices), ``lr``
(SGD's learning rate) or ``adamw_lr`` and ``adamw_weight_decay`` (AdamW's, whose useful ranges are other ones:
AdamW's learning rate is ~20x smaller and its decoupled weight decay ~500x larger than SGD's), ``batch_size`` and
the augmentation strengths. A space with one optimizer searches only that optimizer's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isseg.engine.tune_pace import (
    pace_key,
    recipe_batch,
    recipe_model_value,
    recipe_optimizer,
    recipe_value,
    values_key,
)
from isseg.recipes import Recipe

OPTIMIZERS = ("sgd", "adamw")
RATES = ("lr", "adamw_lr", "adamw_weight_decay")
ADAMW_START = {"adamw_lr": 1e-3, "adamw_weight_decay": 0.05}  # torch's AdamW rate; detectors' usual AdamW decay
AUGMENTATIONS = ("horizontal_flip", "color_jitter", "scale_jitter")


@dataclass(frozen=True)
class SearchSpace:
    """The values searched: ``optimizer`` one of the choices; its learning rate log-uniform in ``lr`` (SGD) or
    ``adamw_lr``; AdamW's weight decay log-uniform in ``adamw_weight_decay`` (SGD keeps the recipe's);
    ``batch_size`` one of the choices; the augmentation strengths uniform in their ranges (``(x, x)`` fixes one);
    ``positive_fraction``, the share of positives in the RoI head's sampled proposals (preset field
    ``roi.positive_fraction``), one of the choices; a fraction above the recipe's keeps the mask head at the
    recipe's positives per image (``roi.mask_positives_per_image``, :func:`isseg.engine.tune_pace.with_values`).
    """

    lr: tuple[float, float] = (0.005, 0.08)
    batch_size: tuple[int, ...] = (2, 4, 8)
    horizontal_flip: tuple[float, float] = (0.0, 0.5)
    color_jitter: tuple[float, float] = (0.0, 0.5)
    scale_jitter: tuple[float, float] = (0.0, 0.4)
    optimizer: tuple[str, ...] = OPTIMIZERS
    adamw_lr: tuple[float, float] = (2e-4, 4e-3)
    adamw_weight_decay: tuple[float, float] = (0.01, 0.1)
    positive_fraction: tuple[float, ...] = (0.25, 0.5)

    def check(self) -> None:
        for name in RATES:
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name.replace('_', '-')} range must be 0 < low <= high, got {[low, high]}")
        if not self.batch_size or min(self.batch_size) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {list(self.batch_size)}")
        if not self.positive_fraction or not all(0 < f <= 1 for f in self.positive_fraction):
            raise ValueError(f"positive fractions must be in (0, 1], got {list(self.positive_fraction)}")
        if not self.optimizer or not set(self.optimizer) <= set(OPTIMIZERS):
            raise ValueError(f"optimizers must be among {list(OPTIMIZERS)}, got {list(self.optimizer)}")
        bounds = {"horizontal_flip": (0.0, 1.0), "color_jitter": (0.0, 1.0), "scale_jitter": (0.0, 0.95)}
        for name, (lo, hi) in bounds.items():
            low, high = getattr(self, name)
            if not lo <= low <= high <= hi:
                raise ValueError(f"{name.replace('_', '-')} range must lie in [{lo}, {hi}], got {[low, high]}")


def base_values(recipe: Recipe) -> dict[str, Any]:
    """The base recipe's own values as a trial's parameters (TrainConfig's defaults where it sets none)."""
    from isseg.engine.train_config import default_lr

    batch = recipe_batch(recipe)
    optimizer = recipe_optimizer(recipe)
    lr = float(recipe.train.get("lr") or default_lr(batch))
    decay = float(recipe_value(recipe, "weight_decay"))
    rate = {"lr": lr} if optimizer == "sgd" else {"adamw_lr": lr, "adamw_weight_decay": decay}
    return {"optimizer": optimizer, **rate, "batch_size": batch, **{k: recipe_value(recipe, k) for k in AUGMENTATIONS},
            "positive_fraction": float(recipe_model_value(recipe, "positive_fraction"))}


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """A trial's parameters, sampled from ``space`` (see the module's docstring for their names)."""
    optimizer = trial.suggest_categorical("optimizer", list(space.optimizer))
    if optimizer == "adamw":
        params = {"adamw_lr": trial.suggest_float("adamw_lr", *space.adamw_lr, log=True),
                  "adamw_weight_decay": trial.suggest_float("adamw_weight_decay", *space.adamw_weight_decay,
                                                            log=True)}
    else:
        params = {"lr": trial.suggest_float("lr", *space.lr, log=True)}
    params["batch_size"] = trial.suggest_categorical("batch_size", list(space.batch_size))
    for name in AUGMENTATIONS:
        params[name] = trial.suggest_float(name, *getattr(space, name))
    params["positive_fraction"] = trial.suggest_categorical("positive_fraction", list(space.positive_fraction))
    return {"optimizer": optimizer, **params}


def train_values(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters as the recipe's training values: ``adamw_lr`` -> ``lr``, ``adamw_weight_decay`` ->
    ``weight_decay``; a trial without ``optimizer`` (a study of an earlier version) is SGD."""
    values = dict(params)
    if "adamw_lr" in values:
        values["lr"] = values.pop("adamw_lr")
    if "adamw_weight_decay" in values:
        values["weight_decay"] = values.pop("adamw_weight_decay")
    return values


def anchor_params(base: dict[str, Any], space: SearchSpace) -> list[dict[str, Any]]:
    """The first trials after the base recipe's: for each other optimizer of ``space``, the base recipe's values
    with that optimizer's usual starting rates (AdamW: :data:`ADAMW_START`; SGD: ``0.02 x batch / 16``), clipped
    into the space; then, for each other positive fraction, the base recipe's values with it. The sampler's first,
    random trials scatter over rates that differ 20-fold between the optimizers, and change every value at once;
    these give each optimizer one run at a sensible point, and each discrete model choice one run where only it
    differs from the recipe (:func:`anchor_name` names them)."""
    from isseg.engine.train_config import default_lr

    anchors = []
    for optimizer in space.optimizer:
        if optimizer == base["optimizer"]:
            continue
        start = {"lr": default_lr(int(base["batch_size"]))} if optimizer == "sgd" else dict(ADAMW_START)
        start = {k: min(max(v, getattr(space, k)[0]), getattr(space, k)[1]) for k, v in start.items()}
        anchors.append({**{k: v for k, v in base.items() if k not in RATES}, "optimizer": optimizer, **start})
    for fraction in space.positive_fraction:
        if float(fraction) != float(base["positive_fraction"]):
            anchors.append({**base, "positive_fraction": float(fraction)})
    return anchors


def anchor_name(params: dict[str, Any], base: dict[str, Any]) -> str:
    """What an anchor (:func:`anchor_params`) changes from the base recipe: its optimizer (``"adamw"``), else its
    positive fraction (``"positive fraction 0.5"``)."""
    if params["optimizer"] != base["optimizer"]:
        return str(params["optimizer"])
    return f"positive fraction {float(params['positive_fraction']):g}"


def pace_variants(base: dict[str, Any], space: SearchSpace) -> dict[str, dict[str, Any]]:
    """What the pace times (:func:`isseg.engine.tune_pace.measure_pace`): every batch size of ``space`` with every
    optimizer at the base recipe's positive fraction, and every other positive fraction at the base recipe's batch
    size and optimizer (:func:`full_pace` composes the rest); each optimizer at the base recipe's rates or its
    starting point's (:func:`anchor_params`), as training values keyed by
    :func:`isseg.engine.tune_pace.values_key`."""
    starts = {base["optimizer"]: base, **{a["optimizer"]: a for a in anchor_params(base, space)}}
    rates = {o: train_values({k: v for k, v in starts[o].items() if k in RATES}) for o in space.optimizer}
    fraction = base["positive_fraction"]
    shapes = [(b, o, fraction) for o in space.optimizer for b in space.batch_size]
    shapes += [(base["batch_size"], base["optimizer"], f) for f in space.positive_fraction if f != fraction]
    variants = {}
    for batch, optimizer, f in shapes:
        values = {"batch_size": batch, "optimizer": optimizer, **rates[optimizer], "positive_fraction": f}
        variants[values_key(values)] = values
    return variants


def full_pace(measured: dict[str, float], base: dict[str, Any], space: SearchSpace) -> dict[str, float]:
    """The pace of every batch size, optimizer and positive fraction of ``space`` from what :func:`pace_variants`
    timed: a shape that was not timed takes its batch size and optimizer's step at the base positive fraction,
    scaled as that fraction scaled the base recipe's step (the RoI head's share of a step grows alike)."""
    key0 = values_key(base)
    pace = dict(measured)
    for optimizer in space.optimizer:
        for batch in space.batch_size:
            for f in space.positive_fraction:
                key = pace_key(batch, optimizer, f)
                if key not in pace:
                    scale = measured[values_key({**base, "positive_fraction": f})] / measured[key0]
                    pace[key] = measured[pace_key(batch, optimizer, base["positive_fraction"])] * scale
    return pace


def learning_rate(params: dict[str, Any]) -> float | None:
    """The trial's learning rate, whichever optimizer it used."""
    return params.get("lr", params.get("adamw_lr"))


def covering_space(space: SearchSpace, base: dict[str, Any], train_images: int) -> SearchSpace:
    """``space`` widened to hold the base recipe's own values (its trial is the first one), without batch sizes
    larger than the training set."""
    widen = lambda r, v: (min(r[0], float(v)), max(r[1], float(v)))  # noqa: E731
    batches = {b for b in set(space.batch_size) | {int(base["batch_size"])} if b <= train_images}
    if not batches:
        raise ValueError(f"every batch size {sorted(space.batch_size)} exceeds the {train_images} training images")
    rates = {k: widen(getattr(space, k), base[k]) for k in RATES if k in base}
    optimizers = tuple(o for o in OPTIMIZERS if o in space.optimizer or o == base["optimizer"])
    fractions = tuple(sorted({float(f) for f in space.positive_fraction} | {float(base["positive_fraction"])}))
    return SearchSpace(**{**space.__dict__, **rates, "batch_size": tuple(sorted(batches)), "optimizer": optimizers,
                          "positive_fraction": fractions,
                          **{k: widen(getattr(space, k), base[k]) for k in AUGMENTATIONS}})
