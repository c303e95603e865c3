"""The server's live view: streams tracked in the background by the served model, watched over HTTP.

Each stream (``isseg serve MODEL --stream [NAME=]URL``) has one :class:`LiveStream`: a thread that reads the
stream in newest-frame mode (:class:`isseg.sources.LiveReader`: a slow model skips frames, lag never builds
up; a stream that drops is reopened with back-off) and runs every frame through the one streaming engine
(:class:`isseg.stream.StreamEngine`) with the tracking session of ``isseg track``
(:class:`isseg.track.processor.TrackSession`: tracker, lines and zones, events, privacy). Its Predictor is the
served detections model's own pool (:class:`SharedPredictor`): a frame borrows a free Predictor as a request
does and gives it back at once, and nothing is loaded twice. Requests go first: before it takes a frame, the
worker waits while requests are admitted to the model (up to ``StreamSpec.requests_first_s``), so a request
waits for at most the one frame already being inferred, and under a steady load the stream still gets a frame
every ``requests_first_s`` plus one inference. The frames skip the admission queue (the stream is not a
request; its reader keeps one frame at most).

What is served is the engine's own picture of the frame (:meth:`StreamEngine.render`): the privacy masks are
applied first, always, then the tracks, lines and counts are drawn; a frame whose rendering failed is never
published. :class:`LiveViews` holds the streams of an app; :mod:`isseg.serve.routes_live` serves them.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from isseg.serve.detections import DetectionsModel
from isseg.sources.frames import Frame, LiveReader, ReadOptions
from isseg.sources.inputs import Source, expand_inputs
from isseg.stream.engine import FrameResult, StreamEngine
from isseg.stream.options import StreamOptions, class_indices
from isseg.track.events import Event
from isseg.track.processor import TrackingProcessor, TrackOptions, TrackSession

LAST_EVENTS = 20  # events kept for the status
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True)
class StreamSpec:
    """One stream to watch.

    Attributes:
        name: its name in the URLs (``/v2/streams/NAME/...``): letters, digits, ``_ . -``.
        url: a stream URL (``rtsp://``, ``http(s)://`` MJPEG / MPEG-TS / HLS, ...) or a camera index.
        track: what ``isseg track`` does besides inference (tracker, zones, event sinks, privacy); its
            ``classes`` are replaced by ``classes`` resolved against the model's class names.
        classes: class names or indices to track and draw (None: all); privacy sees every class.
        max_fps: at most this many frames inferred per second (0: as many as the model takes).
        jpeg_quality: of the served JPEG frames (1..100).
        model: the detections model that runs the stream (None: the server's first).
        requests_first_s: before it takes a frame, the worker waits while requests are admitted to the model,
            up to this long (0: it never waits): requests go first, the stream still gets a frame at least every
            ``requests_first_s`` plus one inference.
    """

    name: str
    url: str
    track: TrackOptions = field(default_factory=TrackOptions)
    classes: str | None = None
    max_fps: float = 0.0
    jpeg_quality: int = 80
    model: str | None = None
    requests_first_s: float = 1.0

    def source(self) -> Source:
        """The live :class:`Source` of ``url``; one clear ``ValueError`` when it is not a stream or camera."""
        found, _ = expand_inputs([self.url])
        if len(found) != 1 or not found[0].live:
            raise ValueError(f"--stream {redact(self.url)}: expected a stream URL (rtsp://, rtmp://, http(s)://"
                             "...mjpg / .ts / .m3u8, udp://, srt://) or a camera index")
        return found[0]


def parse_stream(raw: str, **options: Any) -> StreamSpec:
    """``[NAME=]URL`` -> a checked :class:`StreamSpec` (default name: the last part of the URL's path, its stem)."""
    name, sep, url = raw.partition("=")
    if not sep or "://" in name or not _NAME.match(name):
        name, url = "", raw
    spec = StreamSpec(name or "stream", url, **options)
    source = spec.source()
    if not name:
        stem = source.name.rsplit(".", 1)[0] if "." in source.name else source.name
        name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem)[:64].lstrip("_.-") or "stream"
    elif not _NAME.match(name):
        raise ValueError(f"--stream {name}=...: a name is letters, digits and _ . - (at most 64)")
    return replace(spec, name=name)


def redact(url: str) -> str:
    """``url`` without its credentials (user and password) and with the values of its query hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{p.split('=', 1)[0]}=***" if "=" in p else p for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class SharedPredictor:
    """What :class:`StreamEngine` needs of a Predictor, on a served :class:`DetectionsModel`'s pool: each frame
    borrows a free Predictor (:meth:`DetectionsModel.detect_image`) and gives it back."""

    def __init__(self, model: DetectionsModel, threshold: float) -> None:
        self.model, self.threshold = model, float(threshold)
        self.class_names = tuple(model.class_names)

    def predict_stream(self, images: Iterator[Any], threshold: float | None = None, errors: str = "return",
                       masks: bool = True) -> Iterator[Any]:
        """Detections (or the error) of each HxWx3 uint8 BGR image, in order; an exception item stays one."""
        thr = self.threshold if threshold is None else threshold
        for item in images:
            if isinstance(item, BaseException):
                yield item
                continue
            try:
                yield self.model.detect_image(item, thr, masks)[0]
            except (ValueError, RuntimeError, OSError) as exc:
                if errors == "raise":
                    raise
                yield exc


class _LiveSession(TrackSession):
    """A tracking session that also keeps the last events (for the status)."""

    def __init__(self, options: TrackOptions, class_names: Sequence[str]) -> None:
        super().__init__(options, class_names)
        self.last: deque[Event] = deque(maxlen=LAST_EVENTS)

    def emit(self, events: list[Event]) -> None:
        self.last.extend(events)
        super().emit(events)


class LiveStream:
    """One stream's worker thread and its newest published frame (see the module docstring)."""

    def __init__(self, spec: StreamSpec, model: DetectionsModel, log: Callable[[str], None]) -> None:
        self.spec, self.log = spec, log
        self.source = spec.source()
        keep = class_indices(spec.classes, model.class_names, "--track-classes")
        options = replace(spec.track, classes=keep)
        self.session = _LiveSession(options, model.class_names)  # unknown --privacy classes: one line, here
        self.engine = StreamEngine(SharedPredictor(model, options.detector_threshold),
                                   StreamOptions(output=None, read=ReadOptions(live_mode="newest")),
                                   processors=self.session.processors, log=self._say)
        self.model = model
        self._failing = False  # the last frame was an error (one line per outage)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader: LiveReader | None = None
        self.jpeg: bytes | None = None
        self.seq = 0  # published frames
        self.errors = 0
        self.state = "starting"
        self._times: deque[float] = deque(maxlen=64)
        self._snapshot: dict[str, Any] = {"tracks": 0, "track_ids": [], "lines": {}, "zones": {}}
        self._last: tuple[float, float] = (0.0, 0.0)  # (captured, published) of the newest frame
        self._thread = threading.Thread(target=self._run, name=f"isseg-live-{spec.name}", daemon=True)

    # ------------------------------------------------------------------------------------------ the worker
    def _say(self, message: str) -> None:
        """One line about this stream, its URL without credentials."""
        self.log(message.replace(self.spec.url, redact(self.spec.url)))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _frames(self) -> Iterator[Frame]:
        """The stream's newest frames until stopped or ended, at most ``max_fps`` a second."""
        wake = threading.Condition()
        reader = self._reader = LiveReader(self.source, self.engine.options.read, self.engine.log, wake)
        step = 1.0 / self.spec.max_fps if self.spec.max_fps > 0 else 0.0
        next_at = 0.0
        try:
            while not self._stop.is_set():
                if step and self._stop.wait(max(0.0, next_at - time.monotonic())):
                    return
                self._requests_first()
                frame = reader.poll()
                if frame is not None:
                    next_at = time.monotonic() + step
                    yield frame
                elif reader.finished:
                    return
                else:
                    with wake:
                        wake.wait(0.1)
        finally:
            reader.stop()

    def _requests_first(self) -> None:
        """Wait while the model has requests admitted, up to ``requests_first_s``."""
        until = time.monotonic() + self.spec.requests_first_s
        while self.model.queue_depth > 0 and time.monotonic() < until and not self._stop.is_set():
            self._stop.wait(0.01)

    def _run(self) -> None:
        wait = 0.5
        try:
            while not self._stop.is_set():
                results = self.engine.process(self._frames())
                try:
                    for result in results:
                        self._publish(result)
                        wait = 0.5
                finally:
                    results.close()
                if self._stop.is_set():
                    break
                self.state = "reconnecting"  # the reader ended (could not open, or gave up): start it again
                self._stop.wait(wait)
                wait = min(wait * 2, 10.0)
        except Exception as exc:  # noqa: BLE001 - a broken worker must say so, not take the server down
            self._say(f"stream '{self.spec.name}' stopped: {type(exc).__name__}: {exc}")
        finally:
            self.state = "stopped"
            self.engine.close()
            self.session.close()

    def _publish(self, result: FrameResult) -> None:
        """Render (privacy first), encode and publish one result; a frame that fails is counted, not sent."""
        import cv2

        if result.error is not None:
            self.errors += 1
            if not self._failing:
                self._say(f"stream '{self.spec.name}': {result.message}; retrying")
            self._failing = True
            return
        self._failing = False
        try:
            image = self.engine.render(result)  # hide() of every processor before anything is drawn
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.spec.jpeg_quality])
        except (ValueError, RuntimeError, cv2.error) as exc:
            self.errors += 1
            self._say(f"stream '{self.spec.name}': frame {result.frame.index} not served: {exc}")
            return
        if not ok:
            self.errors += 1
            return
        snapshot = self._status_of(result)
        now = time.time()
        with self._lock:
            self.jpeg = buf.tobytes()
            self.seq += 1
            self._snapshot = snapshot
            self._last = (result.frame.captured, now)
            self._times.append(now)
            self.state = "live"

    def _status_of(self, result: FrameResult) -> dict[str, Any]:
        """Tracks, line counts and zone occupancy after ``result`` (made in the worker thread)."""
        det = result.detections
        ids = [] if det is None or det.track_ids is None else [int(t) for t in det.track_ids]
        processor = next((p for p in self.engine.for_source(result.frame.source)
                          if isinstance(p, TrackingProcessor)), None)
        analytics = processor.analytics if processor is not None else None
        return {"tracks": len(ids), "track_ids": ids, "frame_index": result.frame.index,
                "lines": analytics.line_counts() if analytics is not None else {},
                "zones": analytics.occupancy() if analytics is not None else {},
                "events": [e.to_dict() for e in self.session.last], "events_total": self.session.events}

    # ------------------------------------------------------------------------------------------ what is read
    def newest(self) -> tuple[int, bytes | None]:
        """(sequence number, JPEG bytes) of the newest published frame."""
        with self._lock:
            return self.seq, self.jpeg

    def summary(self) -> dict[str, Any]:
        """Name, redacted URL, state, frames, frames per second (last few seconds), lag and counts."""
        with self._lock:
            times, (captured, published), snap = list(self._times), self._last, self._snapshot
            frames = self.seq
        now = time.time()
        recent = [t for t in times if now - t <= 5.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        reader = self._reader
        return {"name": self.spec.name, "url": redact(self.spec.url), "state": self.state, "frames": frames,
                "fps": round(fps, 2), "lag_s": round(published - captured, 3) if frames else None,
                "age_s": round(now - published, 3) if frames else None, "errors": self.errors,
                "dropped": reader.dropped if reader else 0, "reconnects": reader.reconnects if reader else 0,
                "tracks": snap["tracks"], "lines": snap["lines"], "zones": snap["zones"]}

    def status(self) -> dict[str, Any]:
        """:meth:`summary` with the track IDs, the frame index and the last events."""
        with self._lock:
            snap = dict(self._snapshot)
        return {**self.summary(), **snap}


class LiveViews:
    """The streams of an app, by name; ``stop_when`` (set by the runner, e.g. uvicorn's ``should_exit``) ends the
    open MJPEG answers when the server shuts down."""

    def __init__(self, specs: Sequence[StreamSpec], models: Sequence[Any],
                 log: Callable[[str], None] = print) -> None:
        detectors = {m.name: m for m in models if isinstance(m, DetectionsModel)}
        self.streams: dict[str, LiveStream] = {}
        self.stop_when: Callable[[], bool] = lambda: False
        self._closed = False
        for spec in specs:
            if spec.name in self.streams:
                raise ValueError(f"--stream: two streams are named '{spec.name}'; name them with NAME=URL")
            model = detectors.get(spec.model) if spec.model else next(iter(detectors.values()), None)
            if model is None:
                raise ValueError(f"--stream {spec.name}: needs a detections model; served: "
                                 f"{', '.join(detectors) or 'none'}")
            self.streams[spec.name] = LiveStream(spec, model, log)

    @property
    def closing(self) -> bool:
        return self._closed or self.stop_when()

    def start(self) -> None:
        for stream in self.streams.values():
            stream.start()

    def stop(self) -> None:
        self._closed = True
        for stream in self.streams.values():
            stream._stop.set()
        for stream in self.streams.values():
            stream.stop()

