"""``isseg track SOURCE...``: segment and track videos, cameras and live streams on the streaming engine; count at
lines, watch zones, write events, hide people before a frame is stored.

    isseg track rtsp://cam/live --model out/security-0002.xml --zones zones.yaml --events events.jsonl
    isseg track clip.mp4 --weights model.pth --privacy person --events http://127.0.0.1:9000/hook -o runs/clip
    isseg track 4k-cam.mp4 --model out/security-0002.xml --tile 768 --zones zones.yaml   # tiled: small people

Writes into ``--output`` what ``isseg predict`` writes (records with a ``track_id`` per detection, drawn videos
with a colour per track and the counts), ``events.jsonl`` when there are zones or lines (``--events`` adds files
or webhook URLs), and ``summary.json`` (counts per line and class, zone entries, dwell). With ``--privacy`` every
drawn frame has the chosen classes' masks pixelated (or filled) before it is written.
"""

from __future__ import annotations

import argparse
import json
import sys

from isseg.cli import checks
from isseg.cli.streams import add_stream_arguments, check_arguments, finish, load_predictor, stream_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stream_arguments(p, output="isseg_tracks")
    p.add_argument("--threshold", "-t", type=float, default=0.5,
                   help="score at which a detection takes part in the first association stage and can start a "
                   "track (the tracker still sees detections down to --low-threshold)")
    p.add_argument("--low-threshold", type=float, default=0.1,
                   help="lowest score the tracker sees: low detections keep half-hidden objects' tracks (0.1)")
    p.add_argument("--track-buffer", type=int, default=30, help="frames a lost track keeps its ID (30)")
    p.add_argument("--zones", help="JSON or YAML file of named lines and polygon zones (docs/tracking.md)")
    p.add_argument("--events", action="append", default=[], metavar="FILE|URL",
                   help="JSON Lines file or http(s) webhook for the events (repeatable); default with --zones: "
                   "OUTPUT/events.jsonl")
    p.add_argument("--privacy", metavar="CLASSES", help="comma-separated class names whose masks are hidden in "
                   "every written frame, e.g. person")
    p.add_argument("--privacy-mode", choices=("pixelate", "fill"), default="pixelate",
                   help="how hidden masks look (default pixelate)")


def track_options(args: argparse.Namespace, class_names: tuple[str, ...]):  # noqa: ANN201 - TrackOptions
    """The tracking part of the arguments (zones file read and checked here, in one line when bad)."""
    from pathlib import Path

    from isseg.stream import class_indices
    from isseg.track import PrivacyConfig, TrackerConfig, load_zones
    from isseg.track.processor import TrackOptions

    defaults = TrackerConfig()
    tracker = TrackerConfig(high_score=args.threshold, low_score=args.low_threshold, lost_frames=args.track_buffer,
                            new_track_score=max(defaults.new_track_score, args.threshold))
    zones = load_zones(args.zones) if args.zones else None
    events = tuple(args.events) or ((str(Path(args.output) / "events.jsonl"),) if zones is not None else ())
    privacy = None
    if args.privacy:
        privacy = PrivacyConfig(classes=tuple(c.strip() for c in args.privacy.split(",") if c.strip()),
                                mode=args.privacy_mode, min_score=min(0.1, args.low_threshold))
    return TrackOptions(tracker, zones, events, privacy, class_indices(args.classes, class_names))


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from isseg.sources.inputs import expand_inputs
    from isseg.stream import StreamEngine
    from isseg.track import load_zones
    from isseg.track.processor import TrackSession, log_warnings_to_stderr

    check_arguments(args)
    checks.in_range(args.low_threshold, "--low-threshold", 0.0, args.threshold)
    checks.at_least(args.track_buffer, "--track-buffer", 0)
    if args.zones:
        load_zones(args.zones)  # a bad zones file: one line, before the model loads
    sources, input_errors = expand_inputs(args.inputs)
    log_warnings_to_stderr("isseg track")
    options = replace(stream_options(args), classes=None)  # the tracker filters classes, after privacy saw all
    threshold = min(args.low_threshold, 0.1) if args.privacy else args.low_threshold
    loaded = load_predictor(args, sources, input_errors, threshold, "track")
    if loaded is None:
        return 1
    predictor, t_load = loaded
    with predictor, TrackSession(track_options(args, predictor.class_names), predictor.class_names) as session:
        engine = StreamEngine(predictor, options, processors=session.processors,
                              log=lambda m: print(f"isseg track: {m}", file=sys.stderr))
        code = finish(engine, sources, input_errors, args, t_load, "track", "tracked detection(s)")
    if session.summaries and not args.no_json:
        from isseg.atomic import atomic_write

        atomic_write(f"{args.output}/summary.json", json.dumps(session.summaries, indent=1))
    for source, summary in session.summaries.items():
        print(f"  {source}: {_counts_line(summary)}")
    if session.events:
        print(f"  {session.events} event(s) to {', '.join(session.options.events)}")
    return code


def _counts_line(summary: dict) -> str:
    lines = [f"{name} in {sum(c['in'] for c in per.values())} / out {sum(c['out'] for c in per.values())}"
             for name, per in summary["lines"].items()]
    zones = [f"{name}: {sum(z['entries'].values())} entered, {sum(z['occupancy'].values())} inside"
             for name, z in summary["zones"].items()]
    return "; ".join(lines + zones) or "no lines or zones"
