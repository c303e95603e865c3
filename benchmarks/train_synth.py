"""Proof that training works: Mask R-CNN from scratch on the procedural shapes dataset, on a CPU.

    .venv/bin/python benchmarks/train_synth.py --output runs/synth-bench-r18

1. writes ``--images`` synthetic images (``isseg.data.synth.make_synthetic_dataset``; the last
   ``--val-fraction`` of them are the held-out split, never trained on);
2. trains the real model from random weights (security-0002 layout, with the small-model and small-image
   settings below) for ``--iterations`` steps, or until ``--time-budget-minutes`` of wall time are spent
   (then the weights reached are evaluated; the report says ``stopped_by_time_budget``);
3. prints and writes ``<output>/benchmark.json``: box and mask AP of the final weights (saved as
   ``<output>/final.pth``) on the held-out split and the wall time (``--eval-every N`` adds periodic
   held-out evaluations, which cost time).

The target is mask AP >= 0.5 within 30 minutes on a 2-core CPU. The settings that make that budget
possible (all ``--set`` overrides of the preset, see docs/training.md):

- a ResNet-18 backbone (``--depth``; the preset's ResNet-50 is 2x the backbone compute for little gain on
  this data);
- 128 px images and input, anchors 16..256 px (the preset's 32..512 suit 800 px images);
- GroupNorm in the backbone and no frozen stage: from random weights, frozen BN would not normalize;
- a 64-channel FPN / RPN / mask head (128 channels measured 1.7x slower per step: the 4-conv mask head
  runs at 14x14 on every positive RoI) and a 512-wide box head; 64 sampled RoIs per image; fewer
  proposals;
- bf16 autocast (about 1.3x faster on CPUs with AVX512-BF16) and, by default, one CPU thread: on a
  machine shared with other jobs, two OpenMP threads spin-wait on each other and run several times
  slower than one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def small_image_overrides(size: int, depth: int = 18, norm: str = "gn", fpn_channels: int = 64,
                          representation_size: int = 512, rois: int = 64) -> list[str]:
    """Preset overrides for training from scratch at ``size`` px on a CPU (see the module docstring)."""
    return [
        f"input.size=[{size},{size}]", f"input.train_sizes=[{size}]",
        "anchors.sizes=[16,32,64,128,256]",
        f"backbone.depth={depth}", f"backbone.norm={norm}", "backbone.frozen_stages=0",
        f"backbone.fpn_channels={fpn_channels}",
        "rpn.pre_nms_top_n_train=1000", "rpn.post_nms_top_n_train=500",
        "rpn.pre_nms_top_n_test=500", "rpn.post_nms_top_n_test=200",
        f"roi.batch_size_per_image={rois}", f"roi.representation_size={representation_size}",
    ]  # fmt: skip


class _TimeUp(Exception):
    """Raised from the iteration hook when the training time budget is spent."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="runs/synth-bench-r18", help="run folder (data/ and the checkpoints)")
    p.add_argument("--images", type=int, default=1200, help="synthetic images in all (default 1200)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share (default 0.1)")
    p.add_argument("--size", type=int, default=128, help="image and input size in px (default 128)")
    p.add_argument("--iterations", type=int, default=3600, help="training steps (default 3600)")
    p.add_argument("--depth", type=int, default=18, choices=(18, 34, 50, 101), help="ResNet depth (default 18)")
    p.add_argument("--norm", default="gn", choices=("gn", "bn"), help="backbone normalization (default gn)")
    p.add_argument("--fpn-channels", type=int, default=64, help="FPN / RPN / mask head width (default 64)")
    p.add_argument("--representation-size", type=int, default=512, help="box head width (default 512)")
    p.add_argument("--rois", type=int, default=64, help="sampled RoIs per training image (default 64)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra preset override, applied last (repeatable)")
    p.add_argument("--time-budget-minutes", type=float, default=27.0,
                   help="stop training once this much wall time (data included) is spent, then evaluate the "
                   "weights reached; 0 disables (default 27, so the whole run stays within 30 min)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--eval-every", type=int, default=0,
                   help="held-out evaluation period in steps (default 0: only the final evaluation)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, see the docstring)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (default 1)")
    p.add_argument("--no-amp", action="store_true", help="train in float32 instead of bf16 autocast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--target", type=float, default=0.5, help="mask AP to call the run a pass")
    args = p.parse_args(argv)

    import torch

    from isseg.data.synth import make_synthetic_dataset
    from isseg.engine.evaluate import evaluate
    from isseg.engine.trainer import TrainConfig, train
    from isseg.weights.loading import load_model, save_checkpoint

    torch.set_num_threads(args.threads)
    periodic = args.eval_every > 0
    out = Path(args.output)
    start = time.perf_counter()
    data = make_synthetic_dataset(out / "data", args.images, seed=args.seed, image_size=args.size,
                                  val_fraction=args.val_fraction)
    t_data = time.perf_counter() - start
    print(f"data: {args.images} images of {args.size} px in {t_data:.0f} s -> {out / 'data'}", flush=True)

    cfg = TrainConfig(
        data=str(data["train_json"]), images=str(data["train_images"]),
        val_data=str(data["val_json"]) if periodic else None,
        val_images=str(data["val_images"]) if periodic else None, output=str(out / "train"),
        overrides=tuple(small_image_overrides(args.size, args.depth, args.norm, args.fpn_channels,
                                              args.representation_size, args.rois) + args.set),
        iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, warmup_iters=min(200, args.iterations // 5),
        schedule="cosine", clip_grad=10.0, amp=None if args.no_amp else "bf16",
        eval_every=args.eval_every if periodic else None, checkpoint_every=args.eval_every if periodic else 200,
        log_every=20, workers=args.workers, threads=args.threads, seed=args.seed,
        resume=args.resume, progress=sys.stderr.isatty(),
    )  # fmt: skip
    budget = args.time_budget_minutes * 60.0
    stopped: dict[str, object] = {}

    def stop_on_budget(iteration: int, losses: dict[str, float], model: torch.nn.Module) -> None:
        if budget > 0 and time.perf_counter() - start + eval_reserve > budget and iteration < args.iterations:
            stopped.update(iteration=iteration, model=model)
            raise _TimeUp

    eval_reserve = 60.0  # the final held-out evaluation and its model load
    result = None
    try:
        result = train(cfg, on_iteration_end=stop_on_budget)
    except _TimeUp:
        print(f"time budget of {args.time_budget_minutes:g} min reached after {stopped['iteration']} of "
              f"{args.iterations} iterations: evaluating the weights reached", flush=True)
    t_train = time.perf_counter() - start - t_data

    if result is not None:
        model = load_model(result.last_checkpoint)  # the final weights: no selection on the held-out split
        iterations = result.iteration
    else:
        model = stopped["model"]  # the weights after the last finished step
        iterations = int(stopped["iteration"])  # type: ignore[call-overload]
    model.eval()
    weights = save_checkpoint(out / "final.pth", model, iteration=iterations)  # exactly the weights evaluated
    with torch.no_grad():
        final = evaluate(model, data["val_json"], data["val_images"], progress=False)
    wall = time.perf_counter() - start
    report = {
        "command": "benchmarks/train_synth.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "mask_AP": final["segm"]["AP"], "mask_AP50": final["segm"]["AP50"],
        "box_AP": final["bbox"]["AP"], "box_AP50": final["bbox"]["AP50"],
        "best_mask_AP_during_training": result.best_metric if result is not None else None,
        "val_images": final["images"], "train_images": args.images - final["images"],
        "weights": str(weights), "iterations": iterations, "iterations_planned": args.iterations,
        "stopped_by_time_budget": result is None,
        "batch_size": args.batch_size, "threads": args.threads,
        "model": {"depth": args.depth, "norm": args.norm, "fpn_channels": args.fpn_channels,
                  "representation_size": args.representation_size, "rois_per_image": args.rois,
                  "size": args.size, "extra_overrides": args.set},
        "seconds": {"data": t_data, "train": t_train, "total": wall},
        "target_mask_AP": args.target, "pass": final["segm"]["AP"] >= args.target,
    }  # fmt: skip
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"held-out mask AP {report['mask_AP']:.3f} (box AP {report['box_AP']:.3f}) after {iterations} "
          f"iterations, {wall / 60:.1f} min in all: {'PASS' if report['pass'] else 'below'} target {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
