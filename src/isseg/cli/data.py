"""``isseg data``: look at a dataset in any supported format, or convert it.

    isseg data stats cvat_export/                      # format auto-detected; object sizes and a tile size
    isseg data stats train.json --input-size 768 1024 # the tile size for a model of that input
    isseg data convert yolo_export/ --format yolo-seg --subset val --output val.json    # -> COCO
    isseg data convert train.json --images imgs/ --to cvat --output cvat_out/          # COCO -> CVAT
"""

from __future__ import annotations

import argparse
import json

from isseg.data.formats import ALIASES, FORMATS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="dataset: a COCO .json, a folder, or a YOLO data.yaml")
    p.add_argument("--format", metavar="FORMAT",
                   help=f"input format (default: auto-detect): {', '.join(FORMATS)}, or a Datumaro importer name")
    p.add_argument("--images", metavar="DIR", help="image folder of a COCO .json (default: the file's folder)")
    p.add_argument("--subset", metavar="NAME", help="only this split (train, val, ...); default all")
    p.add_argument("--classes", metavar="A,B,...", help="class order to use (default: the format's label order)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    stats = sub.add_parser("stats", help="images, instances per class, polygons / RLE / crowd, sizes")
    _common(stats)
    stats.add_argument("--json", action="store_true", help="print the numbers as JSON")
    stats.add_argument("--preset", default="security-0002",
                       help="model preset whose input size the tile size is suggested for (default %(default)s)")
    stats.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                       help="the model's input (a fit canvas H W, or short/long sides; default: the preset's)")
    stats.add_argument("--object-fraction", type=float, default=0.08, metavar="F",
                       help="share of the tile side a typical object should span (default %(default)s: about "
                            "60 px of a 768 px input)")
    convert = sub.add_parser("convert", help="convert to COCO (default) or another format")
    _common(convert)
    convert.add_argument("--to", default="coco", metavar="FORMAT",
                         help="output format: coco (default), yolo-seg, cvat, voc, labelme, datumaro")
    convert.add_argument("--output", required=True, metavar="PATH", help="output .json (coco) or folder")
    convert.add_argument("--output-subset", default="train", metavar="NAME",
                         help="split name written into folder formats (default train)")


def run(args: argparse.Namespace) -> int:
    from isseg.data.formats import dataset_stats, export_dataset, load_dataset

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if args.data_command == "stats":
        input_size = _input_size(args)  # bad options fail before the dataset is read
    loaded = load_dataset(args.path, args.format, images=args.images, subset=args.subset, classes=classes)
    if args.data_command == "stats":
        from isseg.tiling.suggest import format_suggestion

        stats = dataset_stats(loaded, input_size, args.object_fraction)
        if args.json:
            print(json.dumps(stats, indent=2))
            return 0
        print(f"{stats['source']}: {stats['format']}, {stats['images']} images "
              f"({stats['images_without_annotations']} without annotations), {stats['annotations']} instances; "
              f"images under {stats['image_dir']}")
        print(f"regions: {stats['polygons']} polygons, {stats['rle']} RLE masks, {stats['crowd']} crowd; "
              f"size: {stats['small']} small, {stats['medium']} medium, {stats['large']} large")
        width = max([len(c["name"]) for c in stats["classes"]] + [5])
        print(f"  {'id':>3}  {'class':<{width}}  instances")
        for c in stats["classes"]:
            print(f"  {c['id']:>3}  {c['name']:<{width}}  {c['instances']:>9}")
        for reason, count in stats["skipped"].items():
            print(f"left out: {count} x {reason}")
        print(format_suggestion(stats["object_sizes"], stats["tiling_suggestion"]))
        return 0
    target = ALIASES.get(args.to.lower(), args.to.lower())
    out = export_dataset(loaded, args.output, target, subset=args.output_subset)
    print(f"isseg data: {len(loaded.coco['images'])} images, {len(loaded.coco['annotations'])} instances "
          f"({loaded.format}) -> {out} ({target})")
    if target == "coco":
        print(f"isseg data: images stay in {loaded.image_dir} (pass it as --images)")
    for reason, count in loaded.skipped.items():
        print(f"left out or approximated: {count} x {reason}")
    return 0


def _input_size(args: argparse.Namespace) -> tuple[int, int]:
    """The model input the tile size is suggested for: ``--input-size``, else the preset's; checked."""
    from isseg.cli import checks
    from isseg.config import get_config

    if not 0.0 < args.object_fraction < 1.0:
        raise ValueError(f"--object-fraction: expected a fraction in (0, 1), got {args.object_fraction}")
    if args.input_size is not None:
        for value in args.input_size:
            checks.at_least(value, "--input-size", 32)
        return int(args.input_size[0]), int(args.input_size[1])
    size = get_config(args.preset).input.size
    return int(size[0]), int(size[1])
