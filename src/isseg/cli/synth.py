"""``isseg synth``: write a procedural COCO-format dataset (shapes on textured backgrounds), or a video sequence
with tracking ground truth.

    isseg synth --output data/shapes --num-images 500 --seed 0
    isseg train --data data/shapes/train.json --images data/shapes/train \\
        --val-data data/shapes/val.json --val-images data/shapes/val ...
    isseg synth --video --output data/seq0 --frames 300 --seed 0     # MOT ground truth, line crossings, zones
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output", required=True, metavar="DIR", help="folder for train/, val/ and the json files"
    )
    p.add_argument("--num-images", type=int, metavar="N", help="images in all (train + val); required without --video")
    p.add_argument(
        "--seed", type=int, default=0, help="the dataset is a pure function of the seed (default 0)"
    )
    p.add_argument("--size", type=int, default=320, metavar="PX", help="image side in pixels (default 320)")
    p.add_argument(
        "--val-fraction", type=float, default=0.2, help="held-out share of the images (default 0.2)"
    )
    p.add_argument("--max-objects", type=int, default=8, help="shapes drawn per image, at most (default 8)")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image file format (default jpg)")
    video = p.add_argument_group("video (--video): a sequence with moving, crossing, occluded objects and known "
                                 "line crossings (isseg.data.synth_video)")
    video.add_argument("--video", action="store_true", help="write a sequence instead of a dataset: img/ (or "
                       "video.mp4 with --mp4), gt/gt.txt (MOT), gt/crossings.json, zones.json for isseg track")
    video.add_argument("--frames", type=int, default=300, help="frames of the sequence (default 300)")
    video.add_argument("--mp4", action="store_true", help="one video.mp4 instead of a folder of frames")


def run(args: argparse.Namespace) -> int:
    import json

    from isseg.cli import checks
    from isseg.data.synth import CLASS_NAMES, make_synthetic_dataset

    if args.video:
        return _video(args)
    if args.num_images is None:
        raise ValueError("--num-images is required (or --video for a sequence)")
    checks.at_least(args.num_images, "--num-images", 1)
    checks.at_least(args.size, "--size", 16)
    checks.at_least(args.max_objects, "--max-objects", 1)
    checks.in_range(args.val_fraction, "--val-fraction", 0.0, 1.0)
    checks.output_dir(args.output, "--output")
    paths = make_synthetic_dataset(
        args.output, args.num_images, seed=args.seed, image_size=args.size, val_fraction=args.val_fraction,
        max_objects=args.max_objects, image_format=args.format,
    )  # fmt: skip
    for split in ("train", "val"):
        data = json.loads(paths[f"{split}_json"].read_text())
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} instances -> "
              f"{paths[f'{split}_json']} (images in {paths[f'{split}_images']})")  # fmt: skip
    print(f"classes: {', '.join(CLASS_NAMES)}")
    return 0


def _video(args: argparse.Namespace) -> int:
    from isseg.cli import checks
    from isseg.data.synth_video import VideoSpec, write_sequence

    checks.at_least(args.frames, "--frames", 1)
    checks.output_dir(args.output, "--output", create=False)
    paths = write_sequence(args.output, VideoSpec(frames=args.frames), seed=args.seed, video=args.mp4,
                           image_format=args.format)
    print(f"{args.frames} frames -> {paths['frames']}; ground truth {paths['gt']}, {paths['crossings']}; "
          f"lines and zone for isseg track --zones {paths['zones']}")
    return 0
