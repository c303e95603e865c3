"""Tracking, lines and zones, events and privacy as one :class:`isseg.stream.FrameProcessor` per source, so that
``isseg track``, the server's live view and any Python user run them on the one streaming engine.

    options = TrackOptions(zones=load_zones("zones.yaml"), privacy=PrivacyConfig(classes=("person",)))
    with TrackSession(options, class_names=predictor.class_names) as session:
        engine = StreamEngine(predictor, StreamOptions(output="runs/cam"), processors=session.processors)
        run_stream(engine, ["rtsp://cam/live"])
    print(session.summaries)

Per frame, in order: every detection the Predictor returns (its threshold is the tracker's ``low_score``) is
kept for privacy, the chosen classes go to the tracker, whose confirmed tracks (``track_ids`` set, masks kept)
are what the run records and draws; the analytics turn them into events. Every picture the engine writes or
serves is hidden first (:meth:`TrackingProcessor.hide`), with the masks of all the frame's detections of the
private classes and the held masks of tracks just lost. Times: the source's clock for a video file, the
capture time for a live source (whose own clock may restart when it reconnects).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isseg.model.detections import Detections
from isseg.sources.frames import Frame
from isseg.sources.inputs import Source
from isseg.stream.engine import FrameProcessor
from isseg.track.analytics import Analytics
from isseg.track.draw import draw_analytics
from isseg.track.events import Event, open_event_sink
from isseg.track.privacy import Privacy, PrivacyConfig
from isseg.track.tracker import Tracker
from isseg.track.tracker_config import TrackerConfig
from isseg.track.zones import ZoneConfig


@dataclass(frozen=True)
class TrackOptions:
    """What a tracking run does besides inference.

    Attributes:
        tracker: the tracker's knobs (:class:`isseg.track.TrackerConfig`).
        zones: lines and zones to count and watch (None: no analytics).
        events: where events go: JSON Lines files and/or http(s) webhook URLs.
        privacy: what to hide in every written or served frame (None: nothing).
        classes: class indices to track, record and draw (None: all); privacy sees every class regardless.
    """

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    zones: ZoneConfig | None = None
    events: tuple[str, ...] = ()
    privacy: PrivacyConfig | None = None
    classes: tuple[int, ...] | None = None

    @property
    def detector_threshold(self) -> float:
        """The score the Predictor must keep down to: the tracker's low detections and privacy's."""
        low = self.tracker.low_score
        return min(low, self.privacy.min_score) if self.privacy is not None else low


class TrackingProcessor(FrameProcessor):
    """One source's tracker, analytics and privacy (see the module docstring)."""

    def __init__(self, source: Source, options: TrackOptions, session: TrackSession) -> None:
        self.source, self.options, self.session = source, options, session
        self.tracker = Tracker(options.tracker)
        self.analytics = Analytics(options.zones, source=source.location) if options.zones is not None else None
        self.privacy = Privacy(options.privacy) if options.privacy is not None else None
        self._all: Detections | None = None  # the frame's detections before tracking (what privacy hides)
        self._last: tuple[float, int] = (0.0, 0)

    def _time(self, frame: Frame) -> float:
        if self.source.live or frame.timestamp is None:
            return frame.captured
        return frame.timestamp

    def process(self, frame: Frame, detections: Detections) -> Detections:
        self._all = detections
        keep = self.options.classes
        chosen = detections if keep is None else detections.filter(np.isin(detections.labels, list(keep)))
        tracked = self.tracker.update(chosen, reuse_input=True)  # privacy reads the frame's detections as a set
        self._last = (self._time(frame), frame.index or 0)
        if self.analytics is not None:
            self.session.emit(self.analytics.update(tracked, *self._last, earlier=self.tracker.earlier))
        return tracked

    def hide(self, image: np.ndarray, frame: Frame, detections: Detections) -> np.ndarray:
        if self.privacy is None:
            return image
        return self.privacy.apply(image, self._all, detections).image

    def draw(self, image: np.ndarray, frame: Frame, detections: Detections) -> np.ndarray:
        return draw_analytics(image, self.analytics) if self.analytics is not None else image

    def close(self) -> None:
        if self.analytics is not None:
            self.session.emit(self.analytics.finish(*self._last))
            self.session.summaries[self.source.location] = self.analytics.summary()


class TrackSession:
    """The event sinks shared by every source of a run, and the processors of each source.

    ``processors`` is the factory :class:`isseg.stream.StreamEngine` takes; ``summaries`` holds each ended
    source's analytics summary; ``events`` counts the events emitted. Closing the session flushes the sinks (a
    webhook gets a few seconds to deliver what is queued).
    """

    def __init__(self, options: TrackOptions, class_names: Sequence[str] = ()) -> None:
        self.options = options
        if options.privacy is not None and class_names:
            unknown = [c for c in options.privacy.classes if c not in class_names]
            if unknown:
                raise ValueError(f"--privacy: unknown class(es) {', '.join(map(repr, unknown))}; the model's "
                                 f"classes are: {', '.join(class_names)}")
        self.sinks = [open_event_sink(target) for target in options.events]
        self.summaries: dict[str, dict[str, Any]] = {}
        self.events = 0

    def processors(self, source: Source) -> list[FrameProcessor]:
        return [TrackingProcessor(source, self.options, self)]

    def emit(self, events: list[Event]) -> None:
        if events:
            self.events += len(events)
            for sink in self.sinks:
                sink.write(events)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> TrackSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StderrLines(logging.Handler):
    """Each record as one ``prefix: message`` line on the current ``sys.stderr``."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.INFO)
        self.prefix = prefix

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{self.prefix}: {record.getMessage()}", file=sys.stderr)


def log_warnings_to_stderr(prefix: str) -> None:
    """The tracker's warnings (a webhook that is down, and back) as one ``prefix: ...`` line each on stderr."""
    logger = logging.getLogger("isseg.track")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrLines)]:
        logger.removeHandler(handler)
    logger.addHandler(_StderrLines(prefix))
    logger.setLevel(logging.INFO)
    logger.propagate = False
