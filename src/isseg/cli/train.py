"""``isseg train``: train or fine-tune on a COCO-format dataset (one process, or DDP under torchrun).

    isseg train --data train.json --images imgs/ --val-data val.json --val-images imgs/ \\
        --weights security-0002 --output runs/exp --epochs 12
    isseg train --recipe fast-cpu --data train.json --images imgs/ ...   # a named recipe (isseg info lists them)
    isseg train --recipe runs/tune/best_recipe.yaml ...                  # or a recipe file (isseg tune writes one)
    isseg train --tile 512 --tile-overlap 0.2 ...     # train on tiles; export / predict then tile with them
    torchrun --nproc_per_node 4 -m isseg train ...   # same options; --batch-size is per process

Options given on the command line win over the recipe's; without a recipe, an option not given takes
``TrainConfig``'s default (the numbers in the help texts).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="PATH",
                      help="training annotations: a COCO json, or a dataset in another format (--format)")
    data.add_argument("--images", metavar="DIR", help="training image directory (for a COCO json)")
    data.add_argument("--format", metavar="FORMAT",
                      help="dataset format of --data / --val-data (default: auto-detect): coco, yolo-seg, cvat, "
                           "voc, labelme, datumaro; others are converted to RUN_DIR/data/*.json")
    data.add_argument("--subset", metavar="NAME", help="training split of a multi-split dataset (e.g. train)")
    data.add_argument("--val-subset", metavar="NAME",
                      help="validation split (of --val-data, or of --data when --val-data is not given)")
    data.add_argument("--val-data", metavar="PATH", help="validation annotations; enables best.pth")
    data.add_argument("--val-images", metavar="DIR", help="validation image directory")
    data.add_argument("--workers", type=int, help="DataLoader worker processes (default 2)")
    data.add_argument("--no-flip", action="store_true", help="disable the random horizontal flip")
    data.add_argument("--flip", dest="horizontal_flip", type=float, metavar="P",
                      help="probability of the random horizontal flip (default 0.5)")
    data.add_argument("--color-jitter", type=float, metavar="S",
                      help="contrast / brightness jitter strength in [0, 1] (default 0: off)")
    data.add_argument("--scale-jitter", type=float, metavar="S",
                      help="training sizes over [1-S, 1+S] x the input size, S in [0, 1) (default 0: the preset's)")
    _tile_arguments(data)
    data.add_argument("--skip-bad-images", action="store_true",
                      help="train on the other images when the pre-flight finds missing or corrupt ones "
                           "(default: list them and stop)")

    model = p.add_argument_group("model")
    model.add_argument("--recipe", metavar="NAME|FILE",
                       help="a training recipe: fast-cpu, finetune-seed, scratch (isseg info), or a recipe .yaml")
    model.add_argument("--preset", help="model preset (default security-0002)")
    model.add_argument("--weights", metavar="CKPT|NAME",
                       help="initial weights: checkpoint path or registry name; the class-specific layers "
                            "are re-initialized when the dataset has other classes")
    model.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset field, e.g. --set input.size=[384,512] "
                            "--set roi.batch_size_per_image=256 (repeatable)")
    model.add_argument("--freeze-stages", type=int, metavar="K",
                       help="freeze the stem and the first K ResNet stages (0..4; default: the preset's)")

    run = p.add_argument_group("run")
    run.add_argument("--output", default="runs/train", metavar="RUN_DIR",
                     help="run folder: last.pth, best.pth, metrics.jsonl / .csv (default runs/train)")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="passes over the data (default 12)")
    length.add_argument("--iterations", type=int, help="optimizer steps (overrides --epochs)")
    run.add_argument("--eval-every", type=int, metavar="ITERS",
                     help="validate every ITERS iterations (default: each epoch and at the end)")
    run.add_argument("--checkpoint-every", type=int, metavar="ITERS",
                     help="write last.pth every ITERS iterations (default: each epoch and at the end)")
    run.add_argument("--log-every", type=int, metavar="ITERS", help="metrics row period (default 20)")
    run.add_argument("--max-minutes", type=float, metavar="M",
                     help="stop after M minutes of training (then validate and checkpoint as at the end)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    run.add_argument("--threads", type=int, help="CPU threads per process (default: torch's; try 1 on a busy machine)")
    run.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                     help="continue from RUN_DIR/last.pth (if present), or from CKPT")
    run.add_argument("--seed", type=int, help="the one seed of the run (default 0)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")

    opt = p.add_argument_group("optimization")
    opt.add_argument("--batch-size", type=int, help="images per process (default 2)")
    opt.add_argument("--lr", type=float, help="base learning rate (default 0.02 * global batch / 16)")
    opt.add_argument("--optimizer", choices=("sgd", "adamw"), help="(default sgd)")
    opt.add_argument("--momentum", type=float, help="SGD momentum, AdamW's beta1 (default 0.9)")
    opt.add_argument("--weight-decay", type=float, help="(default 1e-4)")
    opt.add_argument("--warmup-iters", type=int, help="linear warm-up length (default 500)")
    opt.add_argument("--warmup-factor", type=float, help="lr factor at iteration 0 (default 0.001)")
    opt.add_argument("--schedule", choices=("step", "cosine", "constant"), help="(default step)")
    opt.add_argument("--steps", type=float, nargs="+", metavar="S",
                     help="step decay points: fractions of the run (< 1) or iterations (default 0.67 0.89)")
    opt.add_argument("--gamma", type=float, help="step decay factor (default 0.1)")
    opt.add_argument("--clip-grad", type=float, metavar="MAX_NORM", help="clip the global gradient norm")
    opt.add_argument("--amp", nargs="?", const="auto", choices=("auto", "bf16", "fp16"),
                     help="mixed precision: bf16 on CPU, fp16 (default) or bf16 on CUDA")
    opt.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm for trainable BN (DDP, CUDA)")


def _tile_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--tile", type=int, metavar="SIZE",
                       help="train on SIZE x SIZE tiles sampled around the annotations (isseg data stats suggests "
                            "SIZE); the checkpoint stores the tiling, so export and predict tile with it")
    group.add_argument("--tile-overlap", type=float, metavar="F",
                       help="overlap of the stored tiling, a fraction of SIZE in [0, 1) (default 0.2)")
    group.add_argument("--tile-empty", type=float, metavar="F",
                       help="fraction of background tiles among the training tiles (default 0.15)")


# command-line option -> TrainConfig field, for the options that map one to one
_OPTIONS = (
    "preset", "weights", "epochs", "iterations", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
    "warmup_iters", "warmup_factor", "schedule", "gamma", "clip_grad", "amp", "freeze_stages", "eval_every",
    "checkpoint_every", "log_every", "workers", "threads", "seed", "horizontal_flip", "color_jitter", "scale_jitter",
    "max_minutes", "tile", "tile_overlap", "tile_empty",
)  # fmt: skip


def train_config(args: argparse.Namespace):  # noqa: ANN201 - TrainConfig, imported late
    """The run's ``TrainConfig``: the recipe's (``--recipe``) or ``TrainConfig``'s defaults, then every option
    given on the command line."""
    from isseg.engine.train_config import TrainConfig

    given = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    if args.steps is not None:
        given["steps"] = tuple(args.steps)
    if args.no_flip:
        given["horizontal_flip"] = 0.0
    if args.sync_bn:
        given["sync_bn"] = True
    common = dict(data=args.data, images=args.images, output=args.output, val_data=args.val_data,
                  val_images=args.val_images, device=args.device, resume=args.resume, progress=not args.no_progress,
                  skip_bad_images=args.skip_bad_images)
    if args.recipe is None:
        return TrainConfig(overrides=tuple(args.overrides), **common, **given)
    from isseg.recipes import load_recipe
    from isseg.recipes import train_config as from_recipe

    recipe = load_recipe(args.recipe)
    common.update(given)
    data, images, output = common.pop("data"), common.pop("images"), common.pop("output")
    return from_recipe(recipe, data, images, output, overrides=tuple(args.overrides), **common)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from isseg.cli import checks
    from isseg.data.formats import prepare_coco
    from isseg.engine.trainer import train

    checks.output_dir(args.output, "--output")  # before any conversion, loading or training
    if args.recipe is not None:
        from isseg.recipes import load_recipe

        load_recipe(args.recipe)  # a bad recipe fails before any conversion
    args.device = args.device.strip().lower()  # "CPU", "CUDA:0" as torch spells them
    verbose, converted = os.environ.get("RANK", "0") == "0", Path(args.output) / "data"
    if args.val_subset and args.val_data is None:  # both splits from one dataset
        args.val_data, args.val_images = args.data, args.images
    args.data, args.images = prepare_coco(args.data, args.images, args.format, args.subset, converted, "train",
                                          verbose)
    if args.val_data is not None:
        args.val_data, args.val_images = prepare_coco(args.val_data, args.val_images, args.format, args.val_subset,
                                                      converted, "val", verbose)
    cfg = train_config(args)
    if verbose and cfg.recipe:
        print(f"isseg train: recipe {cfg.recipe}: {cfg.iterations or cfg.epochs} "
              f"{'iterations' if cfg.iterations else 'epochs'}, batch {cfg.batch_size}, preset {cfg.preset}"
              + (f", weights {cfg.weights}" if cfg.weights else ", random weights"))
    if verbose and cfg.tile is not None:
        print(f"isseg train: training on {cfg.tile}x{cfg.tile} tiles around the annotations "
              f"({cfg.tile_empty:.0%} background); the checkpoints store the tiling for export and predict")
    result = train(cfg)
    if result.is_main:
        print(f"isseg train: {result.iteration} iterations; last checkpoint {result.last_checkpoint}")
        if result.best_checkpoint is not None:
            from isseg.engine.threshold import checkpoint_threshold

            threshold = checkpoint_threshold(result.best_checkpoint)
            print(f"isseg train: best mask AP {result.best_metric:.4f} -> {result.best_checkpoint}"
                  + (f" (best-F1 confidence threshold {threshold:g}, deployed by isseg export)"
                     if threshold is not None else ""))
        if result.stopped_by_time:
            print(f"isseg train: stopped by --max-minutes {cfg.max_minutes:g} at iteration {result.iteration}")
    return 0
