"""What isseg's training RoIAlign (isseg.model.roi_align) buys: whole training steps of each recipe, and the
RoIAlign alone, with torchvision's operator and with isseg's, interleaved in one process.

    .venv/bin/python benchmarks/train_step.py [--recipes fast-cpu finetune-seed] [--steps 8] [--rounds 3]

1. For each recipe, one training run exactly as ``isseg train --recipe NAME`` makes it (random initial weights;
   the synthetic set of ``benchmarks/train_recipes.py``, resized to the recipe's input), which switches the kernel
   every ``--steps`` steps, ``--rounds`` segments each, the two alternating (so that a shared host's drift hits
   both); prints the median seconds per step of each and their ratio.
2. The RoIAlign alone, forward and backward at fast-cpu's box pool (256 RoIs over a 4 x 64 x 32 x 32 P2, 7 x 7,
   sampling 2) and the seed's (512 RoIs of 8-112 px over a 2 x 256 x 192 x 256 P2, adaptive sampling): ms per
   call of each kernel.

Threads: each recipe's own (fast-cpu: 1); the RoIAlign alone: 1. Say which CPU you ran it on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent


def time_recipe(recipe_name: str, steps: int, rounds: int, out: Path, warm: int = 2) -> dict[str, float]:
    """Seconds per step of ``recipe_name``'s training with each RoIAlign: one run of ``isseg.engine.train`` whose
    iteration hook switches the kernel every ``steps`` steps after ``warm`` warm-up steps (torchvision's first) and
    records when each step ends; the medians over the ``rounds`` segments of each kernel, and their ratio."""
    sys.path.insert(0, str(HERE))
    from train_recipes import synthetic_set

    import isseg.model.roi_heads as roi_heads
    from isseg.engine.trainer import train
    from isseg.model.roi_align import use_rows
    from isseg.recipes import load_recipe, train_config

    data = synthetic_set(out / "synth")
    recipe = load_recipe(recipe_name)
    total = warm + 2 * steps * rounds
    cfg = train_config(recipe, str(data["train_json"]), str(data["train_images"]), str(out / recipe.name),
                       weights="", progress=False, iterations=total + 1, eval_every=10**6, checkpoint_every=10**6)
    ends: dict[int, float] = {}

    def switch(iteration: int, values: dict[str, float], model: torch.nn.Module) -> None:
        ends[iteration] = time.perf_counter()
        segment = (iteration - warm) // steps  # the segment of the next step
        roi_heads.use_rows = use_rows if iteration >= warm and segment % 2 else (lambda feat: False)

    roi_heads.use_rows = lambda feat: False
    try:
        train(cfg, on_iteration_end=switch)  # the last step also writes the checkpoint: not timed
    finally:
        roi_heads.use_rows = use_rows
    times: dict[str, list[float]] = {"torchvision": [], "isseg": []}
    for segment in range(2 * rounds):
        first = warm + segment * steps  # the step before the segment's first
        times["isseg" if segment % 2 else "torchvision"].append((ends[first + steps] - ends[first]) / steps)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {**median, "ratio": median["torchvision"] / median["isseg"]}


def _rois(count: int, images: int, low: float, high: float, extent: tuple[int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = low + torch.rand(count, 2, generator=g) * (high - low)
    xy = torch.rand(count, 2, generator=g) * (torch.tensor([extent[1], extent[0]]) - size)
    return torch.cat([torch.randint(0, images, (count, 1), generator=g).float(), xy, xy + size], 1)


def time_roi_align(rounds: int) -> dict[str, dict[str, float]]:
    from torchvision.ops import roi_align

    from isseg.model.roi_align import roi_align_rows

    torch.set_num_threads(1)
    cases = {"fast-cpu box pool": ((4, 64, 32, 32), _rois(256, 4, 6, 60, (128, 128)), 2),
             "seed box pool (P2)": ((2, 256, 192, 256), _rois(512, 2, 8, 112, (768, 1024)), 0)}
    result = {}
    for name, (shape, rois, ratio) in cases.items():
        feat = torch.randn(shape, requires_grad=True)
        upstream = torch.randn(rois.shape[0], shape[1], 7, 7)
        ms: dict[str, list[float]] = {"torchvision": [], "isseg": []}
        for _ in range(rounds + 1):
            for label, fn in (("torchvision", roi_align), ("isseg", roi_align_rows)):
                feat.grad = None
                start = time.perf_counter()
                (fn(feat, rois, 7, 0.25, ratio, True) * upstream).sum().backward()
                ms[label].append((time.perf_counter() - start) * 1000)
        median = {k: statistics.median(v[1:]) for k, v in ms.items()}
        result[name] = {**median, "ratio": median["torchvision"] / median["isseg"]}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="*", default=["fast-cpu", "finetune-seed"])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--output", default="runs/train-step")
    args = p.parse_args(argv)
    for name, row in time_roi_align(args.rounds * 3).items():
        print(f"RoIAlign fwd+bwd, {name}: torchvision {row['torchvision']:.1f} ms, isseg {row['isseg']:.1f} ms "
              f"({row['ratio']:.2f}x)")
    for recipe in args.recipes:
        row = time_recipe(recipe, args.steps, args.rounds, Path(args.output))
        print(f"training step, {recipe}: torchvision {row['torchvision']:.3f} s, isseg {row['isseg']:.3f} s "
              f"({row['ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
