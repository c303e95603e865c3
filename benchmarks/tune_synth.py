"""Does ``isseg tune`` beat the default recipe within the same training budget? Measured on the synthetic set.

    .venv/bin/python benchmarks/tune_synth.py --output runs/tune-bench --budget-minutes 75 --trial-fraction 0.5 \
        --default-reports runs/recipes/fast-cpu/benchmark.json runs/recipes/fast-cpu-seed1/benchmark.json
    .venv/bin/python benchmarks/tune_synth.py --output runs/tune-bench --resume     # after an interruption

1. the synthetic set of ``benchmarks/train_recipes.py`` (480 training, 120 held-out images of 128 px) and, for the
   search's own validation, ``--val-count`` more images from another seed: the held-out images never steer the
   search;
2. ``isseg tune`` of the ``--recipe`` (default fast-cpu) within ``--budget-minutes``, ``--jobs`` trials at once
   (default 2), each trial as long as the recipe (``--trial-length``: in wall time, the default, or in training
   images) times ``--trial-fraction``, ASHA pruning at each of its 3 validations, then the
   confirmation runs (the ``--confirm-top`` best trials and the base recipe with another seed; the best mean wins);
3. the recipe chosen, trained at the recipe's full length (the same wall time or number of training images as the
   default recipe) with each of ``--seeds``, two at a time (``benchmarks/train_recipes.py``, one thread each), its final
   weights evaluated on the held-out images, against the default recipe's runs of ``benchmarks/train_recipes.py``
   with the same seeds (``--default-reports``, one per seed; trained here when absent). When the search keeps the
   base recipe, there is nothing to retrain: the tuned recipe is the default.

Writes ``<output>/tune_benchmark.json`` (each run's AP, iterations, minutes, the means, the best values, the
search's trials, and the verdict: ``tuned_beats_default`` needs a higher mean mask AP *and* mean training minutes
within ``--time-tolerance`` of the default's, since a recipe that trains longer is not the same budget).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def _train_seeds(recipe: str, seeds: list[int], out: Path) -> list[dict[str, object]]:
    """``benchmarks/train_recipes.py RECIPE --seed S`` for every seed, two processes at a time."""
    reports: list[dict[str, object]] = []
    for i in range(0, len(seeds), 2):
        procs = [subprocess.Popen([sys.executable, str(HERE / "train_recipes.py"), recipe, "--output", str(out),
                                   "--seed", str(s)]) for s in seeds[i:i + 2]]  # fmt: skip
        if any(p.wait() != 0 for p in procs):
            raise SystemExit(f"benchmarks/train_recipes.py {recipe} failed")
    from isseg.recipes import load_recipe

    name = load_recipe(recipe).name
    for s in seeds:
        reports.append({"seed": s, **json.loads((out / f"{name}-seed{s}" / "benchmark.json").read_text())})
    return reports


def _mean(reports: list[dict[str, object]], key: str) -> float:
    return round(sum(float(r[key]) for r in reports) / len(reports), 4)


def verdict(tuned: dict[str, float], default: dict[str, float], tolerance: float) -> dict[str, object]:
    """Did the tuned recipe beat the default *within the same budget*? Higher mean mask AP, and mean training
    minutes at most ``1 + tolerance`` times the default's (minutes of runs trained at other times of a shared host
    drift, so read ``tuned_minutes_ratio`` with that in mind)."""
    ratio = tuned["minutes_training"] / default["minutes_training"]
    higher = tuned["mask_AP"] > default["mask_AP"]
    within = ratio <= 1 + tolerance
    return {"tuned_higher_mask_AP": higher, "tuned_minutes_ratio": round(ratio, 3), "tuned_within_budget": within,
            "tuned_beats_default": higher and within}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="runs/tune-bench")
    p.add_argument("--recipe", default="fast-cpu")
    p.add_argument("--budget-minutes", type=float, default=75.0)
    p.add_argument("--trial-fraction", type=float, default=0.5)
    p.add_argument("--val-count", type=int, default=240, help="the search's validation images (default 240)")
    p.add_argument("--confirm-top", type=int, default=2)
    p.add_argument("--confirm-share", type=float, default=0.35)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds of the final runs")
    p.add_argument("--default-reports", nargs="+", help="benchmark.json of train_recipes.py, one per seed")
    p.add_argument("--jobs", type=int, default=2, help="trials at once (default 2: one per core, 1 thread each)")
    p.add_argument("--lr", type=float, nargs=2, default=(0.005, 0.08), metavar=("LOW", "HIGH"),
                   help="the search's learning-rate range (default: isseg tune's)")
    p.add_argument("--trial-length", choices=("time", "images"), default="time")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8], metavar="B",
                   help="the batch sizes searched (default 2 4 8; the recipe's alone: trials of equal length without "
                        "a measured pace)")
    p.add_argument("--optimizers", nargs="+", choices=("sgd", "adamw"), default=["sgd", "adamw"])
    p.add_argument("--positive-fractions", type=float, nargs="+", default=[0.25, 0.5], metavar="F",
                   help="RoI positive fractions to try (default 0.25 0.5)")
    p.add_argument("--time-tolerance", type=float, default=0.03,
                   help="the tuned runs' mean training minutes may exceed the default's by this share (default 0.03)")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)

    sys.path.insert(0, str(HERE))
    from train_recipes import synthetic_set

    from isseg.data.synth import make_synthetic_dataset
    from isseg.engine.tune import SearchSpace, TuneConfig, tune

    out = Path(args.output)
    data = synthetic_set(out / "synth")
    tune_val = out / "tune-val"
    if not (tune_val / "train.json").is_file():
        make_synthetic_dataset(tune_val, args.val_count, seed=1, image_size=128, val_fraction=0.0)
    start = time.perf_counter()
    search = tune(TuneConfig(recipe=args.recipe, data=str(data["train_json"]), images=str(data["train_images"]),
                             val_data=str(tune_val / "train.json"), val_images=str(tune_val / "train"),
                             output=str(out / "search"), budget_minutes=args.budget_minutes,
                             trial_fraction=args.trial_fraction, trial_length=args.trial_length,
                             confirm_top=args.confirm_top,
                             confirm_share=args.confirm_share, resume=args.resume or (out / "search").exists(),
                             jobs=args.jobs, space=SearchSpace(lr=tuple(args.lr), batch_size=tuple(args.batch_sizes),
                                                                optimizer=tuple(args.optimizers),
                                                                positive_fraction=tuple(args.positive_fractions)),
                             progress=sys.stderr.isatty()))  # fmt: skip
    search_minutes = (time.perf_counter() - start) / 60
    best = search["best"]
    if best is None:
        print("no trial finished within the budget")
        return 1
    if args.default_reports:
        default = [{"seed": s, "from": f, **json.loads(Path(f).read_text())}
                   for s, f in zip(args.seeds, args.default_reports, strict=True)]
    else:
        default = _train_seeds(args.recipe, args.seeds, out / "default")
    tuned = default if best["base_recipe"] else _train_seeds(str(search["files"]["recipe"]), args.seeds, out)
    keys = ("mask_AP", "box_AP", "mask_AP50", "minutes_training")
    report = {"default": default, "tuned": tuned, "tuned_is_default": bool(best["base_recipe"]),
              "mean_default": {k: _mean(default, k) for k in keys}, "mean_tuned": {k: _mean(tuned, k) for k in keys},
              "best": best, "trials": search["trials"], "search_minutes_this_session": round(search_minutes, 1),
              "search_minutes_all": round(search["minutes"], 1), "trials_table": str(search["files"]["markdown"]),
              "trials_plot": str(search["files"]["plot"])}  # fmt: skip
    report.update(verdict(report["mean_tuned"], report["mean_default"], args.time_tolerance))
    (out / "tune_benchmark.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
