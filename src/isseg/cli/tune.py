"""``isseg tune``: search a recipe's optimizer, learning rate, batch size and augmentation strengths with Optuna,
within a wall-clock budget (docs/training.md, "Hyper-parameter search").

    isseg tune --recipe fast-cpu --data train.json --images train/ --val-data val.json --val-images val/ \\
        --output runs/tune --budget-minutes 60
    isseg tune ... --output runs/tune --resume            # after a kill: continues the same search
    isseg train --recipe runs/tune/best_recipe.yaml ...   # train with the best values found

Writes ``study.db`` (the search, resumable), ``trials.csv`` / ``trials.md`` / ``trials.png`` and
``best_recipe.yaml`` into ``--output``, and each trial's run folder into ``--output/trials/``.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="fast-cpu", metavar="NAME|FILE", help="the recipe to tune (default fast-cpu)")
    p.add_argument("--data", required=True, metavar="ANN.json", help="training annotations (COCO json)")
    p.add_argument("--images", required=True, metavar="DIR", help="training image folder")
    p.add_argument("--val-data", required=True, metavar="ANN.json", help="validation annotations (COCO json)")
    p.add_argument("--val-images", required=True, metavar="DIR", help="validation image folder")
    p.add_argument("--output", default="runs/tune", metavar="DIR", help="search folder (default runs/tune)")
    p.add_argument("--budget-minutes", type=float, default=60.0,
                   help="wall time of the whole search, all sessions together (default 60)")
    p.add_argument("--trials", type=int,
                   help="stop the search after this many finished trials, then confirm (default: the budget decides)")
    p.add_argument("--resume", action="store_true", help="continue the search in --output after an interruption")
    p.add_argument("--pruner", choices=("asha", "median", "none"), default="asha",
                   help="stop unpromising trials at a validation: asha (successive halving, default), median, none")
    p.add_argument("--evaluations", type=int, default=3, help="validations per trial, the pruner's rungs (default 3)")
    p.add_argument("--trial-length", choices=("time", "images"), default="time",
                   help="each trial trains for the recipe's wall time, whatever batch size it samples (time, "
                        "default: each batch size's steps are timed first), or on the recipe's number of images")
    p.add_argument("--trial-fraction", type=float, default=1.0, metavar="F",
                   help="each trial trains for this share of that length (default 1: all); the best recipe keeps "
                        "the full length")
    p.add_argument("--lr", type=float, nargs=2, default=(0.005, 0.08), metavar=("LOW", "HIGH"),
                   help="SGD's learning-rate range, searched log-uniformly (default 0.005 0.08)")
    p.add_argument("--optimizers", nargs="+", choices=("sgd", "adamw"), default=("sgd", "adamw"), metavar="OPT",
                   help="optimizers to try: sgd, adamw (default both; each with its own ranges)")
    p.add_argument("--adamw-lr", type=float, nargs=2, default=(2e-4, 4e-3), metavar=("LOW", "HIGH"),
                   help="AdamW's learning-rate range, log-uniform (default 0.0002 0.004)")
    p.add_argument("--adamw-weight-decay", type=float, nargs=2, default=(0.01, 0.1), metavar=("LOW", "HIGH"),
                   help="AdamW's (decoupled) weight-decay range, log-uniform (default 0.01 0.1)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=(2, 4, 8), metavar="B", help="(default 2 4 8)")
    p.add_argument("--flip", type=float, nargs=2, default=(0.0, 0.5), metavar=("LOW", "HIGH"),
                   help="horizontal flip probability range (default 0 0.5)")
    p.add_argument("--color-jitter", type=float, nargs=2, default=(0.0, 0.5), metavar=("LOW", "HIGH"),
                   help="contrast / brightness jitter range (default 0 0.5)")
    p.add_argument("--scale-jitter", type=float, nargs=2, default=(0.0, 0.4), metavar=("LOW", "HIGH"),
                   help="training scale jitter range (default 0 0.4)")
    p.add_argument("--positive-fractions", type=float, nargs="+", default=(0.25, 0.5), metavar="F",
                   help="shares of positives in the RoI head's sampled proposals to try (preset field "
                        "roi.positive_fraction; above the recipe's, the mask head keeps the recipe's number of "
                        "positives, roi.mask_positives_per_image; default 0.25 0.5)")
    p.add_argument("--confirm-top", type=int, default=2, metavar="K",
                   help="before choosing, train the K best trials and the base recipe again with other seeds; the "
                        "best mean wins (default 2; 0: choose on one run each)")
    p.add_argument("--confirm-seeds", type=int, default=1, metavar="N", help="other seeds per confirmed trial "
                                                                             "(default 1)")
    p.add_argument("--confirm-share", type=float, default=0.3, metavar="F",
                   help="share of the budget kept for the confirmation runs (default 0.3)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="trials at once, each in its own process sharing the study (default 1); the cores are "
                        "shared between them unless the recipe sets its threads (fast-cpu: 1, so one job per core)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. for log files)")


def run(args: argparse.Namespace) -> int:
    from isseg.cli import checks
    from isseg.engine.tune import SearchSpace, TuneConfig, tune

    try:
        import optuna  # noqa: F401
    except ImportError:
        raise RuntimeError("isseg tune needs Optuna: pip install 'isseg[tune]'") from None
    checks.output_dir(args.output, "--output")
    space = SearchSpace(lr=tuple(args.lr), batch_size=tuple(args.batch_sizes), horizontal_flip=tuple(args.flip),
                        color_jitter=tuple(args.color_jitter), scale_jitter=tuple(args.scale_jitter),
                        optimizer=tuple(args.optimizers), adamw_lr=tuple(args.adamw_lr),
                        adamw_weight_decay=tuple(args.adamw_weight_decay),
                        positive_fraction=tuple(args.positive_fractions))
    cfg = TuneConfig(recipe=args.recipe, data=args.data, images=args.images, val_data=args.val_data,
                     val_images=args.val_images, output=args.output, budget_minutes=args.budget_minutes,
                     max_trials=args.trials, space=space, evaluations=args.evaluations, pruner=args.pruner,
                     trial_fraction=args.trial_fraction, trial_length=args.trial_length,
                     confirm_top=args.confirm_top,
                     confirm_seeds=args.confirm_seeds, confirm_share=args.confirm_share, jobs=args.jobs,
                     seed=args.seed, resume=args.resume, progress=not args.no_progress)
    result = tune(cfg)
    files = result["files"]
    print(f"isseg tune: {result['trials']} trial(s) in {result['minutes']:.1f} min; table {files['markdown']}, "
          f"plot {files['plot']}")
    best = result["best"]
    if best is None:
        print("isseg tune: no trial finished within the budget; raise --budget-minutes")
        return 1
    values = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in best.items()
                       if k not in ("trial", "mask_AP", "runs", "base_recipe"))
    mean = f"mean of {best['runs']} seeds, " if best["runs"] > 1 else ""
    kept = "the base recipe: no trial beat it; " if best["base_recipe"] else ""
    print(f"isseg tune: best trial {best['trial']}: validation mask AP {best['mask_AP']:.4f} ({kept}{mean}{values})")
    print(f"isseg tune: train with it: isseg train --recipe {files['recipe']} --data ... --images ...")
    return 0
