"""Frame-to-event latency of ``isseg track`` on a live stream, and whether lag builds up.

    .venv/bin/python benchmarks/track_latency.py --model exported/security-0002.xml --seconds 60
    .venv/bin/python benchmarks/track_latency.py --seconds 60          # a seeded random model at 320x416

A GStreamer RTSP server on loopback (``isseg.testing.streams.RtspServer``, a moving test pattern at ``--fps``)
is tracked by the streaming engine with a line across the frame, in the newest-frame mode (the default for live
sources) and in buffered mode. For every frame the tracker sees, the latency is the time from its capture (the
reader thread's ``captured``) to the moment its detections, tracks and events exist (the processor runs right
after inference); events are emitted at that same moment. Printed per mode: frames processed, frames the
reader dropped, latency p50 / p95 / max over the first and the last third of the run (equal thirds: no lag
building up).

``--restart-every S`` kills the stream server every S seconds and starts it again half a second later on the
same port (the engine must reconnect by itself); the run then also prints the restarts, the reconnections the
tracker saw (frames with a ``gap``) and the process's resident memory at the start and end of the run:

    .venv/bin/python benchmarks/track_latency.py --seconds 1800 --modes newest --restart-every 300
"""

from __future__ import annotations

import argparse
import resource
import statistics
import threading
import time
from pathlib import Path

from isseg.stream import FrameProcessor, StreamEngine, StreamOptions


class Clock(FrameProcessor):
    """Records (capture -> processed) latency of each frame."""

    def __init__(self, latencies: list[float]) -> None:
        self.latencies = latencies
        self.gaps = 0

    def process(self, frame, detections):  # noqa: ANN001, ANN201
        self.latencies.append(time.time() - frame.captured)
        self.gaps += frame.gap is not None
        return detections


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


class Restarter:
    """Kills ``server`` every ``every`` seconds and starts it again on its port 0.5 s later."""

    def __init__(self, server, every: float | None) -> None:  # noqa: ANN001
        self.server, self.every, self.count = server, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Restarter:
        if self.every:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.server.stop()
            time.sleep(0.5)
            self.server.start()
            self.count += 1


def _model(path: str | None) -> str:
    if path:
        return path
    import tempfile

    from isseg.deploy.export import at_size, export
    from isseg.testing.random_weights import realistic_random_model

    folder = tempfile.mkdtemp(prefix="isseg-track-latency-")
    return str(export(at_size(realistic_random_model("security-0002", seed=1), (320, 416)), folder, "openvino"))


def _thirds(values: list[float]) -> str:
    n = len(values) // 3
    if n < 2:
        return "too few frames"
    parts = []
    for name, part in (("first third", values[:n]), ("last third", values[-n:])):
        q = statistics.quantiles(part, n=20)
        parts.append(f"{name}: p50 {1000 * statistics.median(part):.0f} ms, p95 {1000 * q[18]:.0f} ms, "
                     f"max {1000 * max(part):.0f} ms")
    return "; ".join(parts)


def run(model: str, seconds: float, fps: int, live_mode: str, restart_every: float | None = None) -> None:
    from isseg.deploy.predictor import Predictor
    from isseg.sources import ReadOptions, Source
    from isseg.testing.streams import RtspServer
    from isseg.track import parse_zones
    from isseg.track.processor import TrackOptions, TrackSession

    zones = parse_zones({"units": "fraction", "lines": [{"name": "mid", "points": [[0.5, 0.0], [0.5, 1.0]]}]})
    latencies: list[float] = []
    clock = Clock(latencies)
    with RtspServer(fps=fps, width=640, height=480) as server, Predictor(model, threshold=0.1) as predictor, \
            TrackSession(TrackOptions(zones=zones)) as session:
        source = Source("stream", server.url)

        def processors(src: Source) -> list[FrameProcessor]:
            return [*session.processors(src), clock]

        options = StreamOptions(output=None, read=ReadOptions(live_mode=live_mode, open_timeout=5))
        engine = StreamEngine(predictor, options, processors=processors)
        started, rss = time.monotonic(), []
        results = engine.results([source])
        with Restarter(server, restart_every) as restarter:
            for _ in results:
                rss.append(_rss_mb())
                if time.monotonic() - started > seconds:
                    break
        results.close()
    if restart_every:
        n = len(rss) // 3
        print(f"{live_mode}: {restarter.count} server restart(s), {clock.gaps} reconnection(s) seen; resident "
              f"memory {rss[0]:.0f} MB after the first frame, median {statistics.median(rss[n:2 * n]):.0f} MB "
              f"over the middle third, {rss[-1]:.0f} MB at the end")
    print(f"{live_mode}: {len(latencies)} frames tracked in {seconds:.0f} s of a {fps} fps stream, "
          f"{session.events} event(s); capture -> tracks and events: {_thirds(latencies)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="an exported .xml / .onnx (default: a seeded random model at 320x416)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--modes", nargs="+", default=["newest", "buffered"], choices=["newest", "buffered"])
    ap.add_argument("--restart-every", type=float, help="kill and restart the stream server every this many seconds")
    args = ap.parse_args()
    model = _model(args.model)
    for mode in args.modes:
        run(model, args.seconds, args.fps, mode, args.restart_every)


if __name__ == "__main__":
    main()
