"""Measure the training recipes (``isseg train --recipe NAME``) on the synthetic set: wall time and held-out AP.

    .venv/bin/python benchmarks/train_recipes.py fast-cpu --output runs/recipes
    .venv/bin/python benchmarks/train_recipes.py scratch --max-minutes 30 --output runs/recipes
    .venv/bin/python benchmarks/train_recipes.py finetune-seed --iterations 10 --no-weights   # time per step only

1. writes the synthetic set once (``isseg synth --num-images 600 --size 128 --seed 0``: 480 training and 120
   held-out images of 5 shape classes) into ``<output>/synth``;
2. trains the recipe exactly as ``isseg train --recipe NAME`` would (``isseg.recipes.train_config``), with the
   held-out split as validation (so the run's ``best.pth`` and its best-F1 threshold are written as usual);
3. evaluates the final weights (``last.pth``: no selection on the held-out split) and writes
   ``<output>/<recipe>/benchmark.json``: minutes (training, and in all), iterations, box / mask AP and AP50, the
   best-F1 threshold, the machine's load average; ``--write-measured`` also puts these figures into the
   recipe file's ``measured`` block (``isseg info`` lists them).

``--max-minutes`` caps the training (the report says when it stopped the run); ``--iterations`` overrides the
recipe's length; ``--no-weights`` starts from random weights when the recipe's weights cannot be had (no
network: then only the time per step means something).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path


def synthetic_set(folder: Path) -> dict[str, Path]:
    """The synthetic set of every recipe and tune measurement (written once)."""
    from isseg.data.synth import make_synthetic_dataset

    if (folder / "val.json").is_file():
        return {"train_json": folder / "train.json", "train_images": folder / "train",
                "val_json": folder / "val.json", "val_images": folder / "val"}
    return make_synthetic_dataset(folder, 600, seed=0, image_size=128, val_fraction=0.2)


def write_measured(recipe_file: Path, measured: dict[str, object]) -> None:
    """Replace (or append) the ``measured:`` block at the end of a recipe file, keeping its comments."""
    import yaml

    text = recipe_file.read_text(encoding="utf-8")
    text = re.split(r"(?m)^measured:.*$", text)[0].rstrip() + "\n"
    block = yaml.safe_dump({"measured": measured}, sort_keys=False, width=110)
    recipe_file.write_text(text + block, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="a built-in recipe name or a recipe file")
    p.add_argument("--output", default="runs/recipes", help="folder of the synthetic set and the runs")
    p.add_argument("--max-minutes", type=float, help="cap the training time")
    p.add_argument("--iterations", type=int, help="override the recipe's length")
    p.add_argument("--no-weights", action="store_true", help="random initial weights instead of the recipe's")
    p.add_argument("--seed", type=int, help="the training seed (default: the recipe's, else 0)")
    p.add_argument("--write-measured", action="store_true", help="record the figures in the recipe file")
    args = p.parse_args(argv)

    import torch

    from isseg.engine.evaluate import evaluate
    from isseg.engine.threshold import checkpoint_threshold
    from isseg.engine.trainer import train
    from isseg.recipes import load_recipe, train_config
    from isseg.weights.loading import load_model

    recipe = load_recipe(args.recipe)
    out = Path(args.output)
    start = time.perf_counter()
    data = synthetic_set(out / "synth")
    run = out / (recipe.name if args.seed is None else f"{recipe.name}-seed{args.seed}")
    options: dict[str, object] = {"progress": sys.stderr.isatty(), "max_minutes": args.max_minutes,
                                  "iterations": args.iterations, "val_data": str(data["val_json"]),
                                  "val_images": str(data["val_images"]), "seed": args.seed}
    if args.no_weights:
        options["weights"] = ""
    cfg = train_config(recipe, str(data["train_json"]), str(data["train_images"]), str(run / "train"), **options)
    load_before = os.getloadavg()
    result = train(cfg)
    model = load_model(result.last_checkpoint).eval()
    with torch.no_grad():
        final = evaluate(model, data["val_json"], data["val_images"], progress=False, analysis=False)
    wall = time.perf_counter() - start
    measured = {
        "data": "isseg synth --num-images 600 --size 128 --seed 0 (480 training, 120 held-out images, 5 classes)",
        "iterations": result.iteration, "minutes_training": round(result.seconds / 60, 1),
        "minutes_total": round(wall / 60, 1), "mask_AP": round(final["segm"]["AP"], 3),
        "mask_AP50": round(final["segm"]["AP50"], 3), "box_AP": round(final["bbox"]["AP"], 3),
        "box_AP50": round(final["bbox"]["AP50"], 3),
        "confidence_threshold": checkpoint_threshold(result.last_checkpoint),
        "stopped_by_time": result.stopped_by_time, "initial_weights": cfg.weights or "random",
        "machine": f"{os.cpu_count()} CPU cores, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}",
        "command": "benchmarks/train_recipes.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }  # fmt: skip
    (run / "benchmark.json").write_text(json.dumps(measured, indent=2))
    print(json.dumps(measured, indent=2))
    if args.write_measured and recipe.source.endswith(".yaml"):
        write_measured(Path(recipe.source), measured)
        print(f"recorded in {recipe.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
