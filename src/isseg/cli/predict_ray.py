"""``isseg predict ... --ray [ADDRESS]``: the Ray path of ``isseg predict`` (``isseg.cli.predict`` dispatches here
after the checks both paths share)."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    """Run ``isseg predict``'s arguments through :func:`isseg.cluster.predict_ray`; exit code 1 when any input
    failed (as ``isseg predict``)."""
    from isseg.cluster.pipeline import predict_ray

    if args.limit or args.vid_stride != 1:
        print("isseg predict: --ray ignores --limit and --vid-stride (images only)", file=sys.stderr)
    if args.threshold is None:  # the model's own threshold (its metadata; one load here, seconds for a big run)
        from isseg.deploy.predictor import Predictor

        with Predictor(args.model or args.weights, backend=args.backend, preset=args.preset) as predictor:
            args.threshold = predictor.default_threshold
    summary = predict_ray(args.inputs, args.model or args.weights, args.output, address=args.ray, actors=args.actors,
                          cpus_per_actor=args.cpus_per_actor, shard_size=args.shard_size, backend=args.backend,
                          device=args.device, threshold=args.threshold, precision=args.precision, preset=args.preset,
                          masks=not args.no_masks, classes=args.classes, recursive=args.recursive,
                          coco=not args.no_json, progress=not args.quiet, mode=args.mode,
                          gpus_per_actor=1.0 if (args.device or "").lower().startswith(("cuda", "gpu")) else 0.0)
    for e in summary["input_errors"]:
        print(f"isseg predict: {e}", file=sys.stderr)
    secs = summary["seconds"]
    print(f"isseg predict --ray: {summary['images']} image(s) in {summary['shards']} shard(s), {summary['errors']} "
          f"error(s), {summary['detections']} detection(s) >= {args.threshold}; {summary['images_computed']} "
          f"computed now, {summary['shards_done_before']} shard(s) found done; output in {summary['output']}")
    if summary["images_computed"]:
        pool = summary.get("pool", {})
        print(f"  Ray start {secs['ray_start']:.2f} s, first image started at {secs['first_image_started']:.2f} s "
              f"(actors up, model loaded), {pool.get('actors')} actor(s) x {pool.get('cpus_per_actor'):g} CPU, "
              f"{pool.get('mode')} mode; "
              f"{secs['pipeline']:.2f} s = {summary['images_per_s']:.2f} images/s end to end, "
              f"{summary['steady_images_per_s']:.2f} images/s once running")
    return 1 if summary["errors"] or summary["input_errors"] else 0
