"""The one streaming engine: frames from any sources through a Predictor, in order, into results and outputs.

    for result in StreamEngine(predictor, StreamOptions(output=None)).results(["clip.mp4"]):
        print(result.frame.index, result.detections)                      # in order; nothing written
    summary = run_stream(StreamEngine(predictor, StreamOptions(output="runs/cam")),
                         ["photos/", "clip.mp4", "rtsp://cam/live"])         # files written, Ctrl-C safe, resumable

Frames come from :func:`isseg.sources.iter_frames` and go through ``Predictor.predict_stream``, which keeps
several requests in flight in OpenVINO's throughput mode and returns results in input order; a frame that could
not be read, or whose inference failed, is a result with its ``error`` and the stream goes on. A frame whose
record an earlier run left (``resume``) is not inferred again: its detections are read back from the record, in
its place in the order. :class:`FrameProcessor` objects (a tracker, zones and lines, privacy masks), one set per
source, see every result in order: they may change the detections, and hide or draw on every picture the
engine writes. :func:`isseg.stream.run.run_stream` runs an engine into an output folder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isseg.model.detections import Detections
from isseg.sources.frames import Frame, iter_frames, video_length
from isseg.sources.inputs import Source, expand_inputs
from isseg.stream.options import StreamOptions, class_indices


class FrameProcessor:
    """Per-source, per-frame work on the results, in frame order (subclass and override what you need)."""

    def process(self, frame: Frame, detections: Detections) -> Detections:
        """The detections of ``frame`` as the rest of the run sees them (recorded, drawn)."""
        return detections

    def hide(self, image: np.ndarray, frame: Frame, detections: Detections) -> np.ndarray:
        """Applied to every picture before it is drawn on or written (privacy masks)."""
        return image

    def draw(self, image: np.ndarray, frame: Frame, detections: Detections) -> np.ndarray:
        """Drawn over the detections (counts, zones, lines)."""
        return image

    def close(self) -> None:
        """The source has ended."""


ProcessorFactory = Callable[[Source], Sequence[FrameProcessor]]


def frame_times(frame: Frame) -> dict[str, float]:
    """The time fields of a frame's record: ``timestamp`` (the source's clock), and for live sources ``captured``
    and ``gap``."""
    times: dict[str, float] = {}
    if frame.timestamp is not None:
        times["timestamp"] = round(frame.timestamp, 3)
    if frame.source.live:
        times["captured"] = round(frame.captured, 3)
        if frame.gap is not None:
            times["gap"] = round(frame.gap, 3)
    return times


@dataclass
class FrameResult:
    """One frame's outcome: ``detections`` (after the class filter and the processors) or ``error``;
    ``resumed``: read back from an earlier run's record instead of inferred."""

    frame: Frame
    detections: Detections | None
    error: Exception | None = None
    resumed: bool = False

    @property
    def message(self) -> str:
        """The error as one line that names the input."""
        file, text = self.frame.source.location, str(self.error)
        return text if file in text else f"{file}: {text}"

    def record(self, image_id: int | None = None, masks: bool = True) -> dict[str, Any]:
        """This result as a record of :mod:`isseg.engine.records` (an error record when it failed)."""
        from isseg.engine.records import detections_record, error_record

        frame = self.frame
        if self.error is not None:
            return error_record(frame.source.location, self.message, image_id, frame.index)
        return detections_record(self.detections, frame.source.location, image_id, frame.index, masks,
                                 frame_times(frame))


@dataclass
class RunSummary:
    """What a run did: inputs processed / failed / already done, frames, detections, seconds per stage."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    images: int = 0
    frames: int = 0
    detections: int = 0
    interrupted: bool = False
    written: list[Any] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("decode", "infer", "draw", "write"),
                                                                          0.0))
    wall: float = 0.0


class _Resumed(Exception):  # noqa: N818 - not an error: carries a done frame's record through the ordered stream
    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__("resumed")
        self.record = record


def _log(message: str) -> None:
    print(f"isseg: {message}", file=sys.stderr)


class StreamEngine:
    """Ordered streaming of frames through one :class:`isseg.Predictor`; see the module docstring.

    Args:
        predictor: the model (any backend); its ``threshold`` and mode apply.
        options: :class:`StreamOptions` (output folder, what to write, classes, resume, how to read).
        processors: a function giving each source its :class:`FrameProcessor` objects (called once per source,
            when its first frame arrives).
        log: where one-line messages go (a bad input, a stream that reconnected).
    """

    def __init__(self, predictor: Any, options: StreamOptions | None = None,
                 processors: ProcessorFactory | None = None, log: Callable[[str], None] = _log) -> None:
        self.predictor, self.options = predictor, options or StreamOptions()
        self.processors, self.log = processors, log
        self.keep = class_indices(self.options.classes, predictor.class_names)
        self.seconds = dict.fromkeys(("decode", "infer", "draw", "write"), 0.0)
        self._per_source: dict[Source, Sequence[FrameProcessor]] = {}

    # ------------------------------------------------------------------------------------------- results
    def results(self, sources: Iterable[Source | str], done: Callable[[Frame], dict[str, Any] | None] | None = None
                ) -> Iterator[FrameResult]:
        """The result of every frame of ``sources`` (paths, URLs, or :class:`Source`), in order; ``done(frame)``
        gives the record of a frame that needs no inference. Nothing is written."""
        listed = [s if isinstance(s, Source) else None for s in sources]
        if any(s is None for s in listed):
            found, errors = expand_inputs([str(s) for s in sources if not isinstance(s, Source)])
            for raw, problem in errors:
                self.log(f"{raw}: {problem}")
            listed = [s for s in sources if isinstance(s, Source)] + found
        yield from self.process(iter_frames(listed, self.options.read, self.log), done)

    def _timed(self, frames: Iterator[Frame], done: Callable[[Frame], dict[str, Any] | None] | None,
               bypass: list[Frame]) -> Iterator[Any]:
        """What ``predict_stream`` gets: each frame's image, or its error, or a :class:`_Resumed` marker; the
        frames themselves go to ``bypass`` in the same order."""
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            self.seconds["decode"] += time.perf_counter() - t0
            if frame is None:
                return
            bypass.append(frame)
            record = done(frame) if done is not None and frame.error is None else None
            yield _Resumed(record) if record is not None else (frame.error or frame.image)

    def process(self, frames: Iterable[Frame], done: Callable[[Frame], dict[str, Any] | None] | None = None
                ) -> Iterator[FrameResult]:
        """The result of every frame, in order (frames from :func:`isseg.sources.iter_frames`, or made by the
        caller: the Ray actors pass the images their decode stage read)."""
        from isseg.engine.records import record_to_detections

        frames = iter(frames)
        order: list[Frame] = []
        stream = self.predictor.predict_stream(self._timed(frames, done, order), errors="return",
                                               masks=self.options.masks)
        position = 0
        while True:
            t0 = time.perf_counter()
            decoded = self.seconds["decode"]
            out = next(stream, None)
            if out is None:
                return
            frame = order[position]
            order[position] = None  # type: ignore[call-overload]  # the frame is the result's now
            position += 1
            if isinstance(out, _Resumed):
                det = record_to_detections(out.record, self.predictor.class_names)
                yield self._processed(FrameResult(frame, det, resumed=True))
                continue
            self.seconds["infer"] += time.perf_counter() - t0 - (self.seconds["decode"] - decoded)
            if isinstance(out, Exception):
                yield FrameResult(frame, None, out)
            else:
                yield self._processed(FrameResult(frame, out))
            if position > 64:  # keep the bookkeeping list short on endless streams
                del order[:position]
                position = 0

    def _processed(self, result: FrameResult) -> FrameResult:
        det = result.detections
        if self.keep is not None and not result.resumed:
            det = det.filter(np.isin(det.labels, list(self.keep)))
        for processor in self.for_source(result.frame.source):
            det = processor.process(result.frame, det)
        result.detections = det
        return result

    def for_source(self, source: Source) -> Sequence[FrameProcessor]:
        """The processors of ``source`` (made on first use)."""
        if source not in self._per_source:
            self._per_source[source] = list(self.processors(source)) if self.processors else []
        return self._per_source[source]

    def end_source(self, source: Source) -> None:
        """``close()`` the processors of a source that has ended."""
        for processor in self._per_source.pop(source, []):
            processor.close()

    def close(self) -> None:
        """End every source still open."""
        for source in list(self._per_source):
            self.end_source(source)

    def render(self, result: FrameResult, draw_masks: bool = True) -> np.ndarray:
        """The picture of a result as the engine writes it: the processors' ``hide`` first (always), then the
        detections, then the processors' ``draw``."""
        from isseg.deploy import visualize

        frame, det = result.frame, result.detections
        processors = self.for_source(frame.source)
        image = frame.image
        for processor in processors:
            image = processor.hide(image, frame, det)
        image = visualize.draw_detections(image, det, masks=draw_masks and det.masks is not None)
        for processor in processors:
            image = processor.draw(image, frame, det)
        return image

    def expected_frames(self, sources: Sequence[Source]) -> int | None:
        """Images plus video frames (from the headers, within the limit and stride); None with live sources."""
        if any(s.live for s in sources):
            return None
        read, total = self.options.read, 0
        for s in sources:
            n = 1 if s.kind == "image" else (video_length(s) or 0)
            n = -(-n // read.stride) if s.kind == "video" else n
            total += min(n, read.limit) if read.limit and s.kind == "video" else n
        return total
