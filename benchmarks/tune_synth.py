"""Does ``isseg tune`` beat the default recipe within the same training budget? Measured on the synthetic set.

    .venv/bin/python benchmarks/tune_synth.py --output runs/tune-bench --budget-minutes 90 --trial-fraction 0.34
    .venv/bin/python benchmarks/tune_synth.py --output runs/tune-bench --resume     # after an interruption

1. the synthetic set of ``benchmarks/train_recipes.py`` (480 training, 120 held-out images of 128 px) and, for the
   search's own validation, 120 more images from another seed: the held-out images never steer the search;
2. ``isseg tune`` of the ``--recipe`` (default fast-cpu) within ``--budget-minutes``, each trial on
   ``--trial-fraction`` of the recipe's training images, ASHA pruning at each of its 3 validations;
3. the best recipe found trained at the recipe's full length (the same number of training images as the default
   recipe), its final weights evaluated on the held-out images, against the default recipe's run of
   ``benchmarks/train_recipes.py`` (``--default-report``; trained here when it is absent).

Writes ``<output>/tune_benchmark.json`` (both runs' AP, iterations, minutes, the best values, the search's trials).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _train_and_score(recipe: str, data: dict[str, Path], out: Path) -> dict[str, object]:
    """Train ``recipe`` at its own length (no validation during the run), evaluate the final weights."""
    import torch

    from isseg.engine.evaluate import evaluate
    from isseg.engine.trainer import train
    from isseg.recipes import load_recipe, train_config
    from isseg.weights.loading import load_model

    cfg = train_config(load_recipe(recipe), str(data["train_json"]), str(data["train_images"]), str(out),
                       progress=sys.stderr.isatty(), resume=True)
    result = train(cfg)
    model = load_model(result.last_checkpoint).eval()
    with torch.no_grad():
        final = evaluate(model, data["val_json"], data["val_images"], progress=False, analysis=False)
    return {"recipe": recipe, "iterations": result.iteration, "batch_size": cfg.batch_size, "lr": cfg.lr,
            "minutes_training": round(result.seconds / 60, 1), "mask_AP": round(final["segm"]["AP"], 4),
            "box_AP": round(final["bbox"]["AP"], 4), "mask_AP50": round(final["segm"]["AP50"], 4),
            "load_average": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="runs/tune-bench")
    p.add_argument("--recipe", default="fast-cpu")
    p.add_argument("--budget-minutes", type=float, default=90.0)
    p.add_argument("--trial-fraction", type=float, default=0.34)
    p.add_argument("--default-report", help="benchmark.json of benchmarks/train_recipes.py for the recipe")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).parent))
    from train_recipes import synthetic_set

    from isseg.data.synth import make_synthetic_dataset
    from isseg.engine.tune import TuneConfig, tune

    out = Path(args.output)
    data = synthetic_set(out / "synth")
    tune_val = out / "tune-val"
    if not (tune_val / "train.json").is_file():
        make_synthetic_dataset(tune_val, 120, seed=1, image_size=128, val_fraction=0.0)
    start = time.perf_counter()
    search = tune(TuneConfig(recipe=args.recipe, data=str(data["train_json"]), images=str(data["train_images"]),
                             val_data=str(tune_val / "train.json"), val_images=str(tune_val / "train"),
                             output=str(out / "search"), budget_minutes=args.budget_minutes,
                             trial_fraction=args.trial_fraction, resume=args.resume or (out / "search").exists(),
                             progress=sys.stderr.isatty()))
    search_minutes = (time.perf_counter() - start) / 60
    if search["best"] is None:
        print("no trial finished within the budget")
        return 1
    tuned = _train_and_score(str(search["files"]["recipe"]), data, out / "tuned")
    if args.default_report and Path(args.default_report).is_file():
        default = json.loads(Path(args.default_report).read_text())
        default = {"recipe": args.recipe, "from": args.default_report, **default}
    else:
        default = _train_and_score(args.recipe, data, out / "default")
    report = {"default": default, "tuned": tuned, "best_trial": search["best"], "trials": search["trials"],
              "search_minutes_this_session": round(search_minutes, 1),
              "search_minutes_all": round(search["minutes"], 1),
              "trials_table": str(search["files"]["markdown"]), "trials_plot": str(search["files"]["plot"]),
              "tuned_beats_default": tuned["mask_AP"] > default["mask_AP"]}  # fmt: skip
    (out / "tune_benchmark.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
