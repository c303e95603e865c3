"""The model of the tiling benchmark: a small Mask R-CNN trained from scratch on ``tiling_data.py``'s images.

    .venv/bin/python benchmarks/tiling_train.py --output runs/tiling-model --device cuda --minutes 6

Writes ``--train`` training images of 512 px (``benchmarks/tiling_data.py``), trains the small-model preset of
``benchmarks/train_synth.py`` (ResNet-18 with GroupNorm, 64-channel FPN, anchors 16..256) at a 512x512
canvas for ``--iterations`` steps or ``--minutes`` of wall time, and saves ``<output>/final.pth`` (an isseg
checkpoint: ``isseg export`` and the Predictor read it). ``--split-mb N`` also writes the checkpoint in parts
of at most N MiB (``final.pth.part0``...; ``cat final.pth.part* > final.pth`` joins them), to carry it off a
machine that returns small files only. The model is for benchmarking tiling, nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiling_data import write_split  # noqa: E402
from train_synth import small_image_overrides  # noqa: E402


class _TimeUp(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="runs/tiling-model")
    p.add_argument("--train", type=int, default=3000, help="training images (default 3000)")
    p.add_argument("--size", type=int, default=512, help="training image size and canvas (default 512)")
    p.add_argument("--iterations", type=int, default=4000)
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this much training time (0: none)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="processes writing the training images")
    p.add_argument("--split-mb", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from isseg.engine.trainer import TrainConfig, train
    from isseg.weights.loading import load_model, save_checkpoint

    out = Path(args.output)
    t0 = time.perf_counter()
    if not (out / "train.json").is_file():
        write_split(out / "train", out / "train.json", args.train, (args.size, args.size), (2, 10), args.seed, 0,
                    jobs=args.jobs)
    print(f"data: {args.train} images in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = TrainConfig(
        data=str(out / "train.json"), images=str(out / "train"), output=str(out / "run"),
        overrides=tuple(small_image_overrides(args.size)),
        iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
        warmup_iters=min(200, args.iterations // 5), schedule="cosine", clip_grad=10.0, amp="bf16",
        checkpoint_every=500, log_every=50, workers=args.workers, threads=args.threads, device=args.device,
        seed=args.seed, progress=False, tensorboard=False,
    )  # fmt: skip
    start = time.perf_counter()
    stopped: dict[str, object] = {}

    def stop_on_time(iteration: int, losses: dict[str, float], model: torch.nn.Module) -> None:
        if args.minutes > 0 and time.perf_counter() - start > args.minutes * 60 and iteration < args.iterations:
            stopped.update(iteration=iteration, model=model)
            raise _TimeUp

    try:
        result = train(cfg, on_iteration_end=stop_on_time)
        model, iterations = load_model(result.last_checkpoint), result.iteration
    except _TimeUp:
        model, iterations = stopped["model"], int(stopped["iteration"])  # type: ignore[assignment,call-overload]
    model = model.float().cpu().eval()  # type: ignore[attr-defined]
    path = save_checkpoint(out / "final.pth", model, iteration=iterations)
    report = {"iterations": iterations, "planned": args.iterations, "train_seconds": time.perf_counter() - start,
              "batch_size": args.batch_size, "images": args.train, "size": args.size, "device": args.device}
    (out / "train_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report), flush=True)
    if args.split_mb > 0:
        data, step = path.read_bytes(), int(args.split_mb * 2**20)
        for k in range(0, len(data), step):
            (out / f"final.pth.part{k // step}").write_bytes(data[k : k + step])
    return 0


if __name__ == "__main__":
    sys.exit(main())
