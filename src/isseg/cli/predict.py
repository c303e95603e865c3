"""``isseg predict INPUT...``: segment images, folders, globs, manifests, videos, cameras and live streams; write
drawn images / videos and COCO-format results. Argument parsing only: the work is :class:`isseg.stream.StreamEngine`.

    isseg predict photos/ clip.mp4 "shots/*.png" --model out/security-0002.xml --output runs/
    isseg predict rtsp://cam/live 0 --weights model.pth --limit 300           # a stream and camera 0
    isseg predict photos/ --model out/security-0002.xml --output runs/ --resume   # finish an interrupted run
    isseg predict 4k-frames/ --model out/security-0002.xml --tile 768             # tiled: small objects in 4K

Writes into ``--output``: one drawn image per input image (same name), ``<name>.mp4`` per video, camera or stream,
``results.jsonl`` (one record per image or frame, streamed as it is computed, bad inputs as error records:
:mod:`isseg.engine.records`), and from those records ``results.json`` (COCO results) and ``images.json``. Options
and the output folder are checked before the model is loaded. A bad input is one line and the rest still runs; the
exit code is 1 when any input failed. Ctrl-C (or a crash) keeps everything computed (exit code 130).
``--tile SIZE`` (the ``--tile*`` options of :mod:`isseg.cli.tiling_args`) runs each frame as overlapping tiles
merged into one result: small objects in large frames.
"""

from __future__ import annotations

import argparse
import sys

from isseg.cli.streams import add_stream_arguments, check_arguments, finish, load_predictor, stream_options
from isseg.stream.options import RECORDS_NAME


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stream_arguments(p)
    p.add_argument("--threshold", "-t", type=float, default=None,
                   help="minimum score drawn and written, in [0, 1] (default: the model's own, its best-F1 threshold "
                   "when training stored one, else 0.5; use 0.05 for COCO AP evaluation)")
    p.add_argument("--resume", action="store_true",
                   help=f"skip the inputs already done in OUTPUT/{RECORDS_NAME} (or the .partial file of an "
                   "interrupted run) and add the rest; failed inputs are tried again")
    p.add_argument("--recursive", "-r", action="store_true", help="look for images in sub-folders too")
    ray = p.add_argument_group("Ray (isseg[ray]): resumable sharded runs over large image collections")
    ray.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                     help="run on Ray Data (no ADDRESS: the running cluster, else a local one; host:port, ray://...); "
                     "inputs may also be manifests and fsspec URIs; writes OUTPUT/shard-*.jsonl records and resumes")
    ray.add_argument("--shard-size", type=int, help="--ray: images per shard (default 256)")
    ray.add_argument("--actors", type=int, help="--ray: Predictor actors (default: cluster CPUs / --cpus-per-actor)")
    ray.add_argument("--cpus-per-actor", type=float, help="--ray: CPUs (threads) per actor (default 2)")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    if args.ray:  # the Ray path: isseg.cluster (resumable shards)
        from isseg.cli.predict_ray import run as run_ray

        return run_ray(args)
    from isseg.sources.inputs import expand_inputs
    from isseg.stream import StreamEngine

    options = stream_options(args)
    sources, input_errors = expand_inputs(args.inputs, args.recursive)
    loaded = load_predictor(args, sources, input_errors, args.threshold or 0.0, "predict")
    if loaded is None:
        return 1
    predictor, t_load = loaded
    if args.threshold is None:  # the model's own threshold (its best-F1 one when training stored it)
        args.threshold = predictor.threshold = predictor.default_threshold
    with predictor:
        engine = StreamEngine(predictor, options, log=lambda m: print(f"isseg predict: {m}", file=sys.stderr))
        return finish(engine, sources, input_errors, args, t_load, "predict", f"detection(s) >= {args.threshold}")

