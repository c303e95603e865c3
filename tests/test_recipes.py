"""Training recipes: the built-in files, a file round trip, one clear error per bad field, the command line winning
over the recipe, the automatic input size, ``isseg train --recipe`` and ``isseg info``, and exports named after
the model they hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from isseg.recipes import (
    Recipe,
    auto_input_size,
    builtin_recipes,
    load_recipe,
    recipe_from_dict,
    save_recipe,
    train_config,
)


def test_builtin_recipes_load_and_round_trip(tmp_path: Path) -> None:
    assert {"fast-cpu", "finetune-seed", "scratch"} <= set(builtin_recipes())
    for name in builtin_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.description
        again = load_recipe(save_recipe(recipe, tmp_path / f"{name}.yaml"))
        assert again.to_dict() == recipe.to_dict() and again.name == name
    fast = load_recipe("fast-cpu")
    assert "backbone.depth=18" in fast.overrides and fast.input_size == "auto"
    assert load_recipe("finetune-seed").weights == "security-0002-snapshot"
    made = Recipe(name="mine", description="d", input_size=(256, 320), overrides=("roi.score_thresh=0.1",),
                  train={"iterations": 10, "steps": [0.5, 0.8], "amp": None}, measured={"mask_AP": 0.5})
    assert load_recipe(save_recipe(made, tmp_path / "mine.yaml")).to_dict() == made.to_dict()


@pytest.mark.parametrize("content, message", [
    ("description: x\nbogus: 1\n", "unknown key(s) ['bogus']"),
    ("train:\n  speed: 3\n", "train: unknown option(s) ['speed']"),
    ("train:\n  lr: fast\n", "train: lr: 'fast' is not a valid"),
    ("train:\n  batch_size: 0\n", "train: batch-size must be >= 1"),
    ("train:\n  schedule: linear\n", "train: schedule: 'linear'"),
    ("train:\n  color_jitter: 2.0\n", "train: color-jitter must be in [0, 1]"),
    ("input_size: big\n", "input_size must be 'auto' or [A, B]"),
    ("input_size_range: [300, 100]\n", "input_size_range must be [low, high]"),
    ("overrides: backbone.depth=18\n", "'overrides' must be a list of KEY=VALUE"),
    ("- a list\n", "a recipe is a mapping"),
    ("train: [unclosed\n", "not valid YAML"),
])  # fmt: skip
def test_bad_recipe_is_one_line_naming_the_file_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        load_recipe(path)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text


def test_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown recipe 'fastest'; built-in recipes: \["):
        load_recipe("fastest")
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def _coco(path: Path, sizes: list[tuple[int, int]]) -> Path:
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": w, "height": h} for i, (w, h) in enumerate(sizes)]
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    return path


def test_auto_input_size(tmp_path: Path) -> None:
    assert auto_input_size(_coco(tmp_path / "a.json", [(640, 480)] * 3), 128, 320) == (256, 320)  # 240 -> 256
    assert auto_input_size(_coco(tmp_path / "b.json", [(480, 640), (480, 640), (640, 480)]), 128, 320) == (320, 256)
    assert auto_input_size(_coco(tmp_path / "c.json", [(96, 96)]), 128, 320) == (128, 128)  # small: the lower bound
    assert auto_input_size(_coco(tmp_path / "d.json", [(1333, 800)]), 128, 1024) == (608, 1024)
    with pytest.raises(ValueError, match="no images"):
        auto_input_size(_coco(tmp_path / "e.json", []), 128, 320)


def test_command_line_wins_over_the_recipe(tmp_path: Path) -> None:
    ann = _coco(tmp_path / "a.json", [(128, 128)])
    fast = load_recipe("fast-cpu")
    cfg = train_config(fast, str(ann), ".", "out")
    assert (cfg.iterations, cfg.batch_size, cfg.lr, cfg.schedule, cfg.recipe) == (1600, 4, 0.02, "cosine", "fast-cpu")
    assert cfg.overrides[0] == "name=fast-cpu" and "input.size=[128,128]" in cfg.overrides
    cfg = train_config(fast, str(ann), ".", "out", batch_size=2, lr=None, overrides=("roi.score_thresh=0.2",),
                       epochs=3)
    assert cfg.batch_size == 2 and cfg.lr == 0.02  # None: not given on the command line
    assert cfg.overrides[-1] == "roi.score_thresh=0.2" and cfg.epochs == 3 and cfg.iterations is None
    assert train_config(fast, str(ann), ".", "out", iterations=7).iterations == 7


def test_export_names_follow_the_model() -> None:
    from isseg.config import get_config
    from isseg.deploy.export import default_name

    assert default_name(get_config("security-0002")) == "security-0002"  # the seed's own preset and classes
    assert default_name(get_config("security-0002"), "int8") == "security-0002-int8"
    cfg = get_config("security-0002", class_names=("person", "fork lift"))
    assert default_name(cfg) == "security-0002-person_fork-lift"
    many = get_config("torchvision-v2", class_names=tuple(f"c{i}" for i in range(12)))
    assert default_name(many, "fp16") == "torchvision-v2-c0_c1_c2+9-fp16"


@pytest.mark.usefixtures("one_torch_thread")
def test_cli_train_with_a_recipe_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from isseg.cli.main import main
    from isseg.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", 3, seed=2, image_size=96, val_fraction=0.0, max_objects=2)
    out = tmp_path / "run"
    args = ["train", "--recipe", "fast-cpu", "--data", str(data["train_json"]), "--images",
            str(data["train_images"]), "--output", str(out), "--iterations", "1", "--batch-size", "1",
            "--workers", "0", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "recipe fast-cpu: 1 iterations, batch 1" in capsys.readouterr().out
    state = torch.load(out / "last.pth", weights_only=False)
    config, train = state["config"], state["train"]["config"]
    assert config["name"] == "fast-cpu" and config["backbone"]["depth"] == 18
    assert tuple(config["input"]["size"]) == (128, 128) and tuple(config["input"]["train_sizes"]) == (128,)
    assert (train["recipe"], train["batch_size"], train["lr"], train["threads"]) == ("fast-cpu", 1, 0.02, 1)

    assert main(["train", "--recipe", "nope", "--data", "x.json", "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "unknown recipe 'nope'" in err and err.count("\n") == 1

    assert main(["info"]) == 0
    listing = capsys.readouterr().out
    assert "training recipes" in listing and all(f"  {n} " in listing for n in builtin_recipes())
    assert main(["info", "--recipe", "fast-cpu"]) == 0
    assert "backbone.depth=18" in capsys.readouterr().out


def test_recipe_from_dict_checks_types() -> None:
    with pytest.raises(ValueError, match="train: iterations: 1.5 is not a valid"):
        recipe_from_dict({"train": {"iterations": 1.5}}, "x", "x.yaml")
    with pytest.raises(ValueError, match="train: horizontal_flip: True is not a valid"):
        recipe_from_dict({"train": {"horizontal_flip": True}}, "x", "x.yaml")
    assert recipe_from_dict({"train": {"lr": 1, "steps": [0.5]}}, "x").train == {"lr": 1, "steps": [0.5]}
