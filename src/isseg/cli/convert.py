"""``isseg convert SRC DST``: turn a torchvision / detectron2 / mmdetection (or isseg) checkpoint into an
isseg checkpoint that carries its preset and class names, so that every other command takes it without flags.

``--to detectron2 | mmdet2 | mmdet3`` goes the other way (an isseg or any supported checkpoint written in
that library's layout), for users who move a model back.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from isseg.cli import checks

TARGETS = ("isseg", "detectron2", "mmdet2", "mmdet3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from isseg.config import PRESETS

    parser.add_argument("src", help="checkpoint file (.pth / .pt / .pkl) or registry weights name")
    parser.add_argument("dst", help="output file")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="preset of the model (default: the checkpoint's own, else the layout's natural "
        "preset: detectron2-r50-fpn, mmdet-r50-caffe-fpn, torchvision-v1/v2)",
    )
    parser.add_argument(
        "--classes",
        metavar="NAMES.TXT",
        default=None,
        help="class names, one per line, in the order the converted model should use (needed "
        "for detectron2 files, which store none; reorders mmdetection classes)",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="write the checkpoint even when keys are missing or unused (they are listed)",
    )
    parser.add_argument("--to", choices=TARGETS, default="isseg", help="output layout (default: isseg)")


def read_class_names(path: str | Path) -> list[str]:
    """One name per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class names file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"{path}: no class names in the file")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate class names {duplicates}")
    return names


def _read(src: str) -> tuple[Any, str]:
    """Raw checkpoint; detectron2 ``.pkl`` files go through the restricted unpickler."""
    from isseg.weights import registry
    from isseg.weights.detectron2 import read_detectron2_pkl
    from isseg.weights.loading import read_checkpoint

    path = Path(src)
    if not path.exists() and src in registry.REGISTRY:
        path = registry.resolve(src)
    if path.suffix == ".pkl" and path.is_file():
        return read_detectron2_pkl(path), str(path)
    return read_checkpoint(src)


def run(args: argparse.Namespace) -> int:
    import torch

    from isseg.model.mask_rcnn import MaskRCNN
    from isseg.weights.loading import apply_checkpoint, checkpoint_config, save_checkpoint

    names = read_class_names(args.classes) if args.classes else None
    dst = checks.output_file(args.dst, "dst")  # before minutes of reading and converting
    ckpt, source = _read(args.src)
    config = checkpoint_config(ckpt, source, args.preset, len(names) if names else None)
    if names is not None:
        config = config.with_classes(names)
    model = MaskRCNN(config)
    report = apply_checkpoint(model, ckpt, source, strict=not args.partial)
    generic = _is_generic(config.class_names)
    if generic:
        _correct_class_note(report, config.num_classes)
    print(report)
    if args.to == "isseg":
        save_checkpoint(
            dst,
            model,
            converted_from={"source": source, "layout": report.layout, "notes": list(report.notes)},
        )
    else:
        state = model.state_dict()
        dst.parent.mkdir(parents=True, exist_ok=True)
        if args.to == "detectron2":
            from isseg.weights.detectron2 import to_detectron2, write_detectron2_pkl

            out = to_detectron2(state, config)
            if dst.suffix == ".pkl":
                write_detectron2_pkl(out, dst)
            else:
                torch.save(out, dst)
        else:
            from isseg.weights.mmdet import to_mmdet

            torch.save(to_mmdet(state, config, version=int(args.to[-1])), dst)
    print(
        f"wrote {dst} ({args.to} layout): preset {config.name!r}, {config.num_classes} classes "
        f"({', '.join(config.class_names[:5])}{', ...' if config.num_classes > 5 else ''})"
        + ("; name them with --classes NAMES.TXT" if generic else "")
    )
    return 0


def _is_generic(names: tuple[str, ...] | list[str]) -> bool:
    return all(n == f"class_{i}" for i, n in enumerate(names))


def _correct_class_note(report: Any, count: int) -> None:
    """The loader's note says the preset's names are used; when the preset has none for this class count the
    names written are generic, and the note must say so (and how to give real ones)."""
    last = f"class_{count - 1}"
    text = (f"class names: not stored in the checkpoint, and the preset has no names for {count} classes; "
            f"writing generic names class_0 ... {last} (pass --classes NAMES.TXT to name them)")
    replaced = [text if n.startswith("class names:") else n for n in report.notes]
    report.notes[:] = replaced if text in replaced else [*replaced, text]
