"""The arguments, checks, model loading and report that ``isseg predict`` and ``isseg track`` share: one set of
stream options (:class:`isseg.stream.StreamOptions`), one way to load the Predictor (``--mode auto`` measured,
``--tile``), one summary of a run."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isseg.cli import checks
from isseg.cli.tiling_args import add_tiling_arguments, describe_tiling, tiling_from_args
from isseg.stream.options import RECORDS_NAME


def add_stream_arguments(p: argparse.ArgumentParser, output: str = "isseg_predictions") -> None:
    """The inputs, model, output and reading options ``isseg predict`` and ``isseg track`` share."""
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders, globs, manifests (.txt), video files, camera indices (0, 1, ...), "
                   "stream URLs (rtsp://, rtmp://, http(s)://) or a .streams file of URLs")
    src = p.add_argument_group("model (one of)")
    src.add_argument("--model", "-m", help="exported model: OpenVINO IR (.xml) or ONNX (.onnx)")
    src.add_argument("--weights", "-w", help="checkpoint path or registry name (PyTorch, or exported on the fly "
                     "with --backend openvino/onnx)")
    p.add_argument("--preset", help="preset of a foreign checkpoint (torchvision / detectron2 / mmdetection)")
    p.add_argument("--backend", choices=("torch", "openvino", "onnx"), help="default: from the model file type")
    p.add_argument("--device", help="CPU / GPU / AUTO (OpenVINO), cpu / cuda (PyTorch, ONNX Runtime); any case")
    p.add_argument("--precision", help="OpenVINO inference precision: f32, bf16, f16 "
                   "(default: the device's, or f32 where it runs faster here, measured once)")
    p.add_argument("--classes", help="comma-separated class names or indices to keep (default: all)")
    p.add_argument("--output", "-o", default=output, help="output folder (default: %(default)s)")
    p.add_argument("--no-images", action="store_true", help="do not write drawn images / videos")
    p.add_argument("--no-json", action="store_true", help=f"do not write {RECORDS_NAME}, results.json, images.json")
    p.add_argument("--no-masks", action="store_true", help="boxes only (faster; no segmentation in the JSON)")
    p.add_argument("--limit", "--max-frames", dest="limit", type=int, default=0,
                   help="stop each video, camera or stream after N frames (0: all; a live source runs until Ctrl-C)")
    p.add_argument("--vid-stride", type=int, default=1, help="keep every N-th frame of videos and streams")
    p.add_argument("--live", choices=("newest", "buffered"), default="newest",
                   help="live sources: newest (default) keeps only the newest frame, so lag never builds up; "
                   "buffered queues frames and skips none")
    p.add_argument("--mode", choices=("auto", "latency", "throughput"), default="auto",
                   help="OpenVINO performance mode. throughput: several images / frames in flight on the CPU's "
                   "streams (results stay in input order); latency: one at a time; auto (default): for a folder / "
                   "several images / a video, the faster of the two on this machine (an IR is measured on the first "
                   "frame once per machine and model, then remembered in $ISSEG_CACHE/modes.json; throughput for a "
                   "model exported on the fly), latency for one image or a live source")
    p.add_argument("--async", dest="mode", action="store_const", const="throughput",
                   help="same as --mode throughput")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no --mode auto line")
    add_tiling_arguments(p)


def check_arguments(args: argparse.Namespace) -> None:
    """What both paths (local and ``--ray``) check before anything is loaded: one clear line for the first
    problem."""
    if not args.model and not args.weights:
        raise ValueError("pass --model (an exported .xml / .onnx) or --weights (a checkpoint)")
    if args.model and args.weights:
        raise ValueError("pass either --model or --weights, not both")
    checks.in_range(args.threshold, "--threshold", 0.0, 1.0)
    checks.at_least(args.limit, "--limit", 0)
    checks.at_least(args.vid_stride, "--vid-stride", 1)
    if getattr(args, "resume", False) and args.no_json:
        raise ValueError(f"--resume reads OUTPUT/{RECORDS_NAME}, which --no-json does not write")
    if args.no_json and args.no_images:
        raise ValueError("--no-json and --no-images together would write nothing")
    args.tiling = tiling_from_args(args)
    if getattr(args, "ray", None) and args.tiling is not None:
        raise ValueError("--tile / --no-tile with --ray: the Ray path runs the model as exported; export it with "
                         "isseg export --tile to tile there")
    checks.output_dir(args.output, "--output", create=False)  # made when the run writes: a failed start leaves none


def stream_options(args: argparse.Namespace):  # noqa: ANN201 - isseg.stream.StreamOptions, imported late
    """The run's options from the (checked) arguments."""
    from isseg.sources.frames import ReadOptions
    from isseg.stream.options import StreamOptions

    partial = Path(args.output) / f"{RECORDS_NAME}.partial"
    resume = getattr(args, "resume", False)  # (isseg track has no --resume)
    if partial.is_file() and not resume and not args.no_json:  # never wipe an interrupted run's results
        raise ValueError(f"{partial} holds the results of an interrupted run: pass --resume to finish it, or "
                         "delete the file to start over")
    read = ReadOptions(limit=args.limit, stride=args.vid_stride, live_mode=args.live)
    return StreamOptions(output=args.output, write_images=not args.no_images, write_records=not args.no_json,
                         masks=not args.no_masks, classes=args.classes, resume=resume, read=read,
                         progress=not args.quiet)


def _mode_probe(args: argparse.Namespace, backend: str, device: str | None, sources: list, command: str
                ) -> Callable[[], str] | None:
    """``--mode auto`` with an OpenVINO IR: measure which mode is faster here on the first frame (cached per
    machine and model: isseg.deploy.mode_probe); None (the rule: throughput) for a model exported on the fly."""
    if backend != "openvino" or not args.model:
        return None

    def probe() -> str:
        from isseg.deploy.mode_probe import faster_mode, first_image

        image = first_image(sources)
        if image is None:
            return "throughput"
        result = faster_mode(args.model, image, device or "CPU", args.precision)
        rates = ", ".join(f"{m} {r:.2f}" for m, r in result.rates.items())
        if not args.quiet:
            print(f"isseg {command}: --mode auto: {result.mode} ({'measured before' if result.cached else 'measured'}"
                  f": {rates} images/s)", file=sys.stderr)
        return result.mode

    return probe


def load_predictor(args: argparse.Namespace, sources: list, input_errors: list, threshold: float, command: str
                   ) -> tuple[Any, float] | None:
    """(the Predictor of ``--model`` / ``--weights``, its load time in s), or None (said why) with no source."""
    from isseg.deploy.predictor import Predictor
    from isseg.stream import choose_mode

    if not sources:
        for raw, problem in input_errors:
            print(f"isseg {command}: {raw}: {problem}", file=sys.stderr)
        print(f"isseg {command}: nothing to process ({len(input_errors)} input(s) failed)", file=sys.stderr)
        return None
    backend = checks.backend_of(args.model or args.weights, args.backend)
    device = checks.device_for(backend, args.device)
    t_load = time.perf_counter()
    mode = choose_mode(args.mode, backend, sources, _mode_probe(args, backend, device, sources, command))
    predictor = Predictor(args.model or args.weights, backend=args.backend, device=device, threshold=threshold,
                          precision=args.precision, preset=args.preset, mode=mode, tiling=args.tiling)
    if predictor.tiling is not None:
        origin = "the model's own" if args.tiling is None else "--tile"
        print(f"isseg {command}: tiled inference ({origin}): {describe_tiling(predictor.tiling, predictor.input_size)}",
              file=sys.stderr)
    return predictor, time.perf_counter() - t_load


def finish(engine: Any, sources: list, input_errors: list, args: argparse.Namespace, t_load: float, command: str,
           what: str = "detection(s)") -> int:
    """Run ``engine`` over the sources into the output folder and report: exit code 0, 1 (an input failed) or
    130 (interrupted: what was done is kept)."""
    from isseg.stream import run_stream

    summary = run_stream(engine, sources, input_errors)
    if summary.interrupted:
        where = ", ".join(str(p) for p in summary.written) or "nothing was written (--no-json)"
        finished = summary.done + summary.failed + summary.skipped
        resume = "; run the same command with --resume to finish" if command == "predict" else ""
        print(f"isseg {command}: interrupted after {finished} of {len(sources) + len(input_errors)} input(s); "
              f"partial results in {where}{resume}", file=sys.stderr)
        return 130
    skipped = f"; {summary.skipped} already done (--resume)" if summary.skipped else ""
    print(f"isseg {command}: {summary.done} input(s) processed, {summary.failed} failed{skipped}; "
          f"{summary.images} image(s), {summary.frames} video frame(s); {summary.detections} "
          f"{what}; output in {args.output}")
    n_img = max(1, summary.images - summary.skipped + summary.frames)
    parts = ", ".join(f"{k} {1000 * v / n_img:.1f}" for k, v in summary.seconds.items() if v > 0)
    runtime = engine.predictor.runtime
    wall = summary.wall
    print(f"  model load {t_load:.2f} s ({engine.predictor.backend}, {runtime.device}); per image ms: {parts}; "
          f"wall {wall:.2f} s = {n_img / wall if wall else 0:.2f} images/s")
    return 1 if summary.failed else 0
