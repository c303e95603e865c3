"""Time one optimizer step of a recipe's model, fused against tensor by tensor (``isseg train`` fuses where torch can).

    .venv/bin/python benchmarks/optimizer_step.py                       # fast-cpu, 1 thread (its training threads)
    .venv/bin/python benchmarks/optimizer_step.py --recipe finetune-seed --threads 2

Builds the recipe's model (5 classes), gives every trainable parameter a random gradient and times ``step()`` of
each optimizer (SGD with momentum, AdamW) built by ``isseg.engine.train_setup.build_optimizer`` with ``fuse`` on
and off, in alternated rounds (the median of ``--rounds`` rounds of ``--steps`` steps). Prints milliseconds per step,
the parameter count and the rate at which the step streams memory (fp32 tensors read and written: SGD 5 per
parameter, AdamW 7), to set against the machine's memory bandwidth.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    import torch

    from isseg.config import get_config
    from isseg.engine.config_overrides import apply_overrides
    from isseg.engine.train_setup import build_optimizer
    from isseg.model.mask_rcnn import build_model
    from isseg.recipes import load_recipe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="fast-cpu", help="a built-in recipe name or a recipe file")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the recipes train on 1 per process)")
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--rounds", type=int, default=5, help="alternated rounds; the median is reported")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    config = apply_overrides(get_config(recipe.preset, class_names=tuple("abcde")), recipe.overrides)
    model = build_model(config)
    params = [q for q in model.parameters() if q.requires_grad]
    for q in params:
        q.grad = torch.randn_like(q) * 1e-3
    variants = {(kind, fuse): build_optimizer(model, 1e-3, 0.9, 1e-4, 0.0, kind, fuse)
                for kind in ("sgd", "adamw") for fuse in (True, False)}
    times: dict[tuple[str, bool], list[float]] = {k: [] for k in variants}
    for opt in variants.values():
        opt.step()  # state allocated outside the timing
    for _ in range(args.rounds):
        for key, opt in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            times[key].append((time.perf_counter() - start) / args.steps * 1000)
    count = sum(q.numel() for q in params)
    print(f"{args.recipe}: {count / 1e6:.1f} M trainable parameters, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    for (kind, fuse), ms in times.items():
        fused = variants[(kind, fuse)].defaults.get("fused")
        streamed = count * 4 * (7 if kind == "adamw" else 5)
        median = statistics.median(ms)
        print(f"  {kind:6s} {'fused' if fused else 'per tensor':10s} {median:7.1f} ms per step "
              f"(rounds {min(ms):.1f}-{max(ms):.1f}), {streamed / median / 1e6:5.1f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
