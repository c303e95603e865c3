"""``isseg info``: what isseg offers, and what a preset costs.

isseg info                      presets, training recipes (with their measured time and AP), registry weights
isseg info --preset security-0002 --flops   parameters and GFLOPs at the preset's input size
isseg info --recipe fast-cpu    a recipe's full definition
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="show this preset's full definition")
    parser.add_argument("--recipe", metavar="NAME|FILE", help="show this training recipe's full definition")
    parser.add_argument("--flops", action="store_true", help="also count parameters and GFLOPs (slow-ish)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="input size for --flops (default: the preset's fixed size, else 768 1024)")


def run(args: argparse.Namespace) -> int:
    from isseg.config import PRESETS, get_config
    from isseg.weights.registry import REGISTRY

    if args.recipe is not None:
        import yaml

        from isseg.recipes import load_recipe

        recipe = load_recipe(args.recipe)
        print(f"recipe {recipe.name} ({recipe.source}):")
        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False, width=110).rstrip())
        return 0
    if args.preset is None:
        print("presets:")
        for name in PRESETS:
            cfg = get_config(name)
            print(f"  {name:22s} {cfg.backbone.style}-style R{cfg.backbone.depth}-FPN, "
                  f"input {cfg.input.channel_order.upper()} {_size(cfg)}, {cfg.num_classes} classes")
        print_recipes()
        print("registry weights (downloaded on first use into $ISSEG_CACHE, default ~/.cache/isseg):")
        for entry in REGISTRY.values():
            ap = f"box AP {entry.box_ap} / mask AP {entry.mask_ap}" if entry.box_ap else ""
            print(f"  {entry.name:26s} preset {entry.preset:20s} {ap}")
        note = torch_build_note()
        if note:
            print(note)
        return 0
    if args.size is not None and min(args.size) < 32:
        raise ValueError(f"--size: expected H and W >= 32, got {args.size[0]} {args.size[1]}")
    cfg = get_config(args.preset)
    for section, value in cfg.to_dict().items():
        print(f"{section}: {value}")
    if args.flops:
        from isseg.model.complexity import count_flops, count_parameters
        from isseg.model.mask_rcnn import MaskRCNN

        model = MaskRCNN(cfg)
        h, w = args.size or (cfg.input.size if cfg.input.resize == "fit" else (768, 1024))
        flops = count_flops(model, h, w)
        print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M trainable+frozen convs "
              f"({count_parameters(model) / 1e6:.2f} M with frozen-BN affine)")
        print(f"GFLOPs at {h}x{w} (1000 proposals, 100 masks): {flops['total']:.1f} = "
              + ", ".join(f"{k} {v:.1f}" for k, v in flops.items() if k != "total"))
    return 0


def print_recipes() -> None:
    """The built-in recipes, each with what it measured (``measured`` of its file)."""
    from isseg.recipes import builtin_recipes, load_recipe

    print("training recipes (isseg train --recipe NAME; isseg info --recipe NAME shows one):")
    for name in builtin_recipes():
        recipe = load_recipe(name)
        print(f"  {name:22s} {recipe.description}")
        m = recipe.measured
        if m.get("mask_AP") is not None:
            stop = ", stopped by its time cap" if m.get("stopped_by_time") else ""
            print(f"  {'':22s} measured: mask AP {m['mask_AP']:.3f} / box AP {m.get('box_AP', 0):.3f} on the "
                  f"synthetic set, {m.get('minutes_training')} min of training ({m.get('iterations')} iterations"
                  f"{stop}; {m.get('machine', '')})")
        elif m.get("note"):
            print(f"  {'':22s} measured: {m['note']}")


def _size(cfg) -> str:
    i = cfg.input
    return f"fit {i.size[0]}x{i.size[1]}" if i.resize == "fit" else f"short {i.size[0]} / long {i.size[1]}"


def torch_build_note() -> str | None:
    """A line when torch is a CUDA build on a machine without a GPU: those wheels (torch, nvidia-*, triton:
    5.2 GB measured) bring nothing there, and pip installs them without saying so."""
    import torch

    if torch.version.cuda and not torch.cuda.is_available():
        return (f"note: torch {torch.__version__} is a CUDA build but this machine has no usable GPU; the CPU "
                "wheels are ~5 GB smaller: pip install torch torchvision --index-url "
                "https://download.pytorch.org/whl/cpu (README, set-up)")
    return None
