"""Training recipes: a named, complete set of training choices (model preset and overrides, input size, starting
weights, schedule, augmentation), selected with one flag: ``isseg train --recipe fast-cpu`` (or ``--recipe
FILE.yaml``, e.g. the best configuration ``isseg tune`` found). Options given on the command line win over the
recipe's.

A recipe file is YAML with these keys (all but ``description`` optional):

- ``description``: one line, shown by ``isseg info``;
- ``preset``: the model preset (default ``security-0002``); ``model_name``: the trained model's name (the
  exported file is named after it and the classes; default the preset's); ``weights``: a checkpoint path or
  registry name to start from (default: random weights);
- ``input_size``: ``[A, B]`` (the preset's ``input.size``), or ``auto``: the median size of the training
  images, its long side clipped to ``input_size_range`` (default ``[128, 320]``) and both sides rounded to a
  multiple of 32 (a "fit" canvas in the images' orientation); absent: the preset's;
- ``overrides``: preset fields, as ``--set`` takes them (``backbone.depth=18``);
- ``train``: :class:`isseg.engine.train_config.TrainConfig` fields (``iterations``, ``batch_size``, ``lr``,
  ``schedule``, ``horizontal_flip``, ``color_jitter``, ``scale_jitter``, ...);
- ``measured``: what the recipe gave when measured (``isseg info`` lists it; ``benchmarks/train_recipes.py``
  writes it).

The built-in recipes are the ``*.yaml`` files next to this module.
"""

from __future__ import annotations

import dataclasses
import statistics
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isseg.engine.train_config import TrainConfig, check_values

RECIPES_DIR = Path(__file__).parent
_KEYS = ("description", "preset", "model_name", "weights", "input_size", "input_size_range", "overrides", "train",
         "measured")
# TrainConfig fields a recipe does not set: the data, the run folder, and what the keys above set
_NOT_TRAIN = {"data", "images", "output", "val_data", "val_images", "preset", "overrides", "weights", "resume",
              "recipe"}
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in _NOT_TRAIN)


@dataclass(frozen=True)
class Recipe:
    """A training recipe (see the module docstring for each field); ``source`` is the file it was read from."""

    name: str
    description: str = ""
    preset: str = "security-0002"
    model_name: str | None = None
    weights: str | None = None
    input_size: tuple[int, int] | str | None = None
    input_size_range: tuple[int, int] = (128, 320)
    overrides: tuple[str, ...] = ()
    train: Mapping[str, Any] = field(default_factory=dict)
    measured: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The recipe as its file holds it (``name`` and ``source`` are the file's)."""
        out: dict[str, Any] = {"description": self.description, "preset": self.preset}
        for key in ("model_name", "weights"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.input_size is not None:
            out["input_size"] = self.input_size if isinstance(self.input_size, str) else list(self.input_size)
            out["input_size_range"] = list(self.input_size_range)
        out["overrides"] = list(self.overrides)
        out["train"] = dict(self.train)
        if self.measured:
            out["measured"] = dict(self.measured)
        return out


def builtin_recipes() -> list[str]:
    """Names of the recipes that come with isseg."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A built-in recipe by name, or a recipe file; one ``ValueError`` naming the file and the field for bad
    content."""
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix.lower() in (".yaml", ".yml") or "/" in str(name_or_path):
            raise FileNotFoundError(f"recipe file not found: {path}")
        if str(name_or_path) not in builtin_recipes():
            raise ValueError(f"unknown recipe {str(name_or_path)!r}; built-in recipes: {builtin_recipes()} "
                             "(or a recipe .yaml file)")
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return recipe_from_dict(data, path.stem, str(path))


def recipe_from_dict(data: Any, name: str, source: str = "<recipe>") -> Recipe:
    """Check a recipe mapping (the file's content) and build the :class:`Recipe`."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping of {list(_KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; a recipe has {list(_KEYS)}")
    train = data.get("train") or {}
    if not isinstance(train, dict):
        raise ValueError(f"{source}: 'train' must be a mapping of training options")
    bad = sorted(set(train) - set(TRAIN_KEYS))
    if bad:
        raise ValueError(f"{source}: train: unknown option(s) {bad}; expected some of {sorted(TRAIN_KEYS)}")
    overrides = data.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ValueError(f"{source}: 'overrides' must be a list of KEY=VALUE strings, e.g. backbone.depth=18")
    size = data.get("input_size")
    if size is not None and size != "auto" and not (isinstance(size, list) and len(size) == 2
                                                     and all(isinstance(v, int) and v >= 32 for v in size)):
        raise ValueError(f"{source}: input_size must be 'auto' or [A, B] (integers >= 32), got {size!r}")
    low, high = data.get("input_size_range") or [128, 320]
    if not (isinstance(low, int) and isinstance(high, int) and 32 <= low <= high):
        raise ValueError(f"{source}: input_size_range must be [low, high] with 32 <= low <= high, got {[low, high]}")
    recipe = Recipe(name=name, description=str(data.get("description") or ""),
                    preset=str(data.get("preset") or "security-0002"), model_name=data.get("model_name"),
                    weights=data.get("weights"), input_size=tuple(size) if isinstance(size, list) else size,
                    input_size_range=(low, high), overrides=tuple(overrides), train=dict(train),
                    measured=dict(data.get("measured") or {}), source=source)
    _check_train(recipe)
    return recipe


def _check_train(recipe: Recipe) -> None:
    """The ``train`` options make a valid ``TrainConfig`` (types and ranges), named after the recipe file."""
    hints = typing.get_type_hints(TrainConfig)
    for key, value in recipe.train.items():
        if not _matches(value, hints[key]):
            raise ValueError(f"{recipe.source}: train: {key}: {value!r} is not a valid {_hint_name(hints[key])}")
    try:
        check_values(TrainConfig(data="", images="", **_typed(recipe.train)))
    except ValueError as exc:
        raise ValueError(f"{recipe.source}: train: {exc}") from None


def _matches(value: Any, hint: Any) -> bool:
    """``value`` (as YAML gives it) fits the type ``hint`` of a TrainConfig field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _hint_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _typed(train: Mapping[str, Any]) -> dict[str, Any]:
    """YAML values as TrainConfig takes them: lists become tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in train.items()}


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write ``recipe`` as a YAML file (atomically) that :func:`load_recipe` reads back as the same recipe."""
    import yaml

    from isseg.atomic import atomic_write

    text = yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None, width=110)
    return atomic_write(path, text)


def auto_input_size(annotation_json: str | Path, low: int, high: int, divisor: int = 32) -> tuple[int, int]:
    """(H, W) of a "fit" canvas for a dataset: the median image's long side clipped to [low, high], its aspect
    ratio kept, both sides rounded to a multiple of ``divisor`` (at least one)."""
    from isseg.data.coco import load_coco_json

    images = load_coco_json(annotation_json)["images"]
    if not images:
        raise ValueError(f"{annotation_json}: no images to size the input from")
    longs = [max(int(i["width"]), int(i["height"])) for i in images]
    ratio = statistics.median(min(int(i["width"]), int(i["height"])) / max(longs[k], 1) for k, i in enumerate(images))
    long_side = min(max(statistics.median(longs), low), high)
    rounded = lambda v: max(divisor, int(round(v / divisor)) * divisor)  # noqa: E731
    long_px, short_px = rounded(long_side), rounded(long_side * ratio)
    landscape = sum(int(i["width"]) >= int(i["height"]) for i in images) * 2 >= len(images)
    return (short_px, long_px) if landscape else (long_px, short_px)


def train_config(recipe: Recipe, data: str, images: str, output: str, **options: Any) -> TrainConfig:
    """The :class:`TrainConfig` of ``recipe`` for a dataset: the recipe's choices, then ``options`` (the
    command line's, which win; ``overrides`` are appended to the recipe's, ``preset`` / ``weights`` replace
    them)."""
    overrides = list(recipe.overrides)
    if recipe.model_name:
        overrides.insert(0, f"name={recipe.model_name}")
    if recipe.input_size == "auto":
        h, w = auto_input_size(data, *recipe.input_size_range)
        overrides += [f"input.size=[{h},{w}]", f"input.train_sizes=[{h}]"]  # one scale (fit: the canvas height)
    elif recipe.input_size is not None:
        overrides.append(f"input.size=[{recipe.input_size[0]},{recipe.input_size[1]}]")
    overrides += list(options.pop("overrides", ()))
    fields: dict[str, Any] = {"preset": recipe.preset, "weights": recipe.weights, **_typed(recipe.train)}
    fields.update({k: v for k, v in options.items() if v is not None})
    if "iterations" in options and options["iterations"] is not None:
        fields.pop("epochs", None)
    elif options.get("epochs") is not None:
        fields["iterations"] = None
    return TrainConfig(data=data, images=images, output=output, overrides=tuple(overrides), recipe=recipe.name,
                       **fields)
