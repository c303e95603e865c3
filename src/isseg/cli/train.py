"""``isseg train``: train or fine-tune on a COCO-format dataset (one process, or DDP under torchrun).

    isseg train --data train.json --images imgs/ --val-data val.json --val-images imgs/ \\
        --weights security-0002 --output runs/exp --epochs 12
    torchrun --nproc_per_node 4 -m isseg train ...   # same options; --batch-size is per process
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
    data.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    data.add_argument("--no-flip", action="store_true", help="disable the random horizontal flip")
    data.add_argument("--skip-bad-images", action="store_true",
                      help="train on the other images when the pre-flight finds missing or corrupt ones "
                           "(default: list them and stop)")

    model = p.add_argument_group("model")
    model.add_argument("--preset", default="security-0002", help="model preset (default security-0002)")
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
    length.add_argument("--epochs", type=int, default=12, help="passes over the data (default 12)")
    length.add_argument("--iterations", type=int, help="optimizer steps (overrides --epochs)")
    run.add_argument("--eval-every", type=int, metavar="ITERS",
                     help="validate every ITERS iterations (default: each epoch and at the end)")
    run.add_argument("--checkpoint-every", type=int, metavar="ITERS",
                     help="write last.pth every ITERS iterations (default: each epoch and at the end)")
    run.add_argument("--log-every", type=int, default=20, metavar="ITERS", help="metrics row period")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    run.add_argument("--threads", type=int, help="CPU threads per process (default: torch's; try 1 on a busy machine)")
    run.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                     help="continue from RUN_DIR/last.pth (if present), or from CKPT")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")

    opt = p.add_argument_group("optimization")
    opt.add_argument("--batch-size", type=int, default=2, help="images per process (default 2)")
    opt.add_argument("--lr", type=float, help="base learning rate (default 0.02 * global batch / 16)")
    opt.add_argument("--momentum", type=float, default=0.9)
    opt.add_argument("--weight-decay", type=float, default=1e-4)
    opt.add_argument("--warmup-iters", type=int, default=500, help="linear warm-up length (default 500)")
    opt.add_argument("--warmup-factor", type=float, default=0.001, help="lr factor at iteration 0")
    opt.add_argument("--schedule", choices=("step", "cosine", "constant"), default="step")
    opt.add_argument("--steps", type=float, nargs="+", default=[0.67, 0.89], metavar="S",
                     help="step decay points: fractions of the run (< 1) or iterations (default 0.67 0.89)")
    opt.add_argument("--gamma", type=float, default=0.1, help="step decay factor (default 0.1)")
    opt.add_argument("--clip-grad", type=float, metavar="MAX_NORM", help="clip the global gradient norm")
    opt.add_argument("--amp", nargs="?", const="auto", choices=("auto", "bf16", "fp16"),
                     help="mixed precision: bf16 on CPU, fp16 (default) or bf16 on CUDA")
    opt.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm for trainable BN (DDP, CUDA)")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from isseg.cli import checks
    from isseg.data.formats import prepare_coco
    from isseg.engine.trainer import TrainConfig, train

    checks.output_dir(args.output, "--output")  # before any conversion, loading or training
    args.device = args.device.strip().lower()  # "CPU", "CUDA:0" as torch spells them
    verbose, converted = os.environ.get("RANK", "0") == "0", Path(args.output) / "data"
    if args.val_subset and args.val_data is None:  # both splits from one dataset
        args.val_data, args.val_images = args.data, args.images
    args.data, args.images = prepare_coco(args.data, args.images, args.format, args.subset, converted, "train",
                                          verbose)
    if args.val_data is not None:
        args.val_data, args.val_images = prepare_coco(args.val_data, args.val_images, args.format, args.val_subset,
                                                      converted, "val", verbose)
    cfg = TrainConfig(
        data=args.data, images=args.images, output=args.output, val_data=args.val_data,
        val_images=args.val_images, preset=args.preset, overrides=tuple(args.overrides), weights=args.weights,
        epochs=args.epochs, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, warmup_iters=args.warmup_iters,
        warmup_factor=args.warmup_factor, schedule=args.schedule, steps=tuple(args.steps), gamma=args.gamma,
        clip_grad=args.clip_grad, amp=args.amp, freeze_stages=args.freeze_stages, sync_bn=args.sync_bn,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        workers=args.workers, device=args.device, threads=args.threads, resume=args.resume, seed=args.seed,
        progress=not args.no_progress, horizontal_flip=0.0 if args.no_flip else 0.5,
        skip_bad_images=args.skip_bad_images,
    )  # fmt: skip
    result = train(cfg)
    if result.is_main:
        print(f"isseg train: {result.iteration} iterations; last checkpoint {result.last_checkpoint}")
        if result.best_checkpoint is not None:
            print(f"isseg train: best mask AP {result.best_metric:.4f} -> {result.best_checkpoint}")
    return 0
