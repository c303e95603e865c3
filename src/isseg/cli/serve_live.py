"""The live-view options of ``isseg serve`` (``--stream`` and what ``isseg track`` does to it), kept apart from the
server's own options: :func:`add_live_arguments` adds the argument group, :func:`stream_specs` turns them into
checked :class:`isseg.serve.live.StreamSpec` objects before any model loads (a bad URL, zones file or option is one
line), with the tracking options built by ``isseg track``'s own :func:`isseg.cli.track.track_options`.

    isseg serve model.xml --stream cam=rtsp://user:pass@10.0.0.5/live --zones zones.yaml --privacy person
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    live = p.add_argument_group("live view (see docs/serve.md): track streams in the server, watch them on the page, "
                                "GET /v2/streams")
    live.add_argument("--stream", action="append", default=[], metavar="[NAME=]URL",
                      help="a stream (rtsp://, http(s)://...mjpg/.ts/.m3u8) or camera index to track with the "
                           "first detections model (repeatable)")
    live.add_argument("--zones", help="--stream: JSON or YAML file of named lines and polygon zones (docs/tracking.md)")
    live.add_argument("--events", action="append", default=[], metavar="FILE|URL",
                      help="--stream: JSON Lines file or http(s) webhook for the events (repeatable)")
    live.add_argument("--privacy", metavar="CLASSES",
                      help="--stream: comma-separated class names whose masks are hidden in every served frame")
    live.add_argument("--privacy-mode", choices=("pixelate", "fill"), default="pixelate",
                      help="--stream: how hidden masks look (default pixelate)")
    live.add_argument("--track-classes", metavar="CLASSES", help="--stream: class names or indices to track and "
                      "draw (default: all; privacy still sees every class)")
    live.add_argument("--track-threshold", type=float, default=0.5,
                      help="--stream: score from which a detection takes part in the first association "
                           "stage; a new track needs max(0.6, this) (default 0.5)")
    live.add_argument("--track-buffer", type=int, default=30, help="--stream: frames a lost track keeps its ID (30)")
    live.add_argument("--stream-fps", type=float, default=0.0,
                      help="--stream: at most this many frames inferred per second, to leave the model to the "
                           "requests (default 0: as many as it takes)")


def stream_specs(args: argparse.Namespace) -> list[Any]:
    """The checked :class:`isseg.serve.live.StreamSpec` of each ``--stream`` (none: []); ``ValueError`` in one line
    for a bad URL, zones file or value, or for live-view options without ``--stream``."""
    if not args.stream:
        given = [f for f, v in (("--zones", args.zones), ("--events", args.events), ("--privacy", args.privacy),
                                ("--track-classes", args.track_classes)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --stream")
        return []
    if args.ray:
        raise ValueError("--stream with --ray: the live view runs in one server process; serve without --ray")
    from isseg.cli import checks
    from isseg.cli.track import track_options
    from isseg.serve.live import parse_stream

    checks.in_range(args.track_threshold, "--track-threshold", 0.0, 1.0)
    checks.at_least(args.track_buffer, "--track-buffer", 0)
    if args.stream_fps < 0:
        raise ValueError(f"--stream-fps must be >= 0, got {args.stream_fps}")
    tracking = argparse.Namespace(threshold=args.track_threshold, low_threshold=min(0.1, args.track_threshold),
                                  track_buffer=args.track_buffer, zones=args.zones, events=args.events,
                                  output=".", privacy=args.privacy, privacy_mode=args.privacy_mode, classes=None)
    options = replace(track_options(tracking, ()), events=tuple(args.events))  # zones read and checked here
    specs = [parse_stream(raw, track=options, classes=args.track_classes, max_fps=args.stream_fps)
             for raw in args.stream]
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--stream: two streams are named {', '.join(twice)}; name them with NAME=URL")
    return specs
