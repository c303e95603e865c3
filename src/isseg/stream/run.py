"""One run of the streaming engine into an output folder: records first, then drawings; every input accounted
for; Ctrl-C (or a crash) keeps everything computed and says where.

A bad input is one line and an error record, and the rest still runs. A drawing that cannot be written fails its
input in one line but keeps its record. On Ctrl-C the records so far become ``results.json`` / ``images.json``
and ``results.jsonl.partial`` stays for ``resume``; :attr:`RunSummary.interrupted` is set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import cv2

from isseg.sources.frames import Frame
from isseg.sources.inputs import Source, expand_inputs
from isseg.stream.engine import FrameResult, RunSummary, StreamEngine
from isseg.stream.options import RECORDS_NAME
from isseg.stream.outputs import OutputFolder


def run_stream(engine: StreamEngine, sources: Sequence[Source | str], input_errors: Sequence[tuple[str, str]] = ()
               ) -> RunSummary:
    """Process ``sources`` (:class:`Source` objects, or inputs as ``isseg predict`` takes them) through ``engine``
    into ``engine.options.output``, as described in the module docstring."""
    listed = [s for s in sources if isinstance(s, Source)]
    named = [str(s) for s in sources if not isinstance(s, Source)]
    if named:
        found, errors = expand_inputs(named)
        listed, input_errors = listed + found, [*input_errors, *errors]
    return _Run(engine, listed, list(input_errors)).execute()


class _Run:
    """:func:`run_stream`: the loop over the results, the output folder and the summary."""

    def __init__(self, engine: StreamEngine, sources: list[Source], input_errors: list[tuple[str, str]]) -> None:
        self.engine, self.options = engine, engine.options
        self.sources, self.input_errors = sources, input_errors
        self.summary = RunSummary(seconds=engine.seconds)
        self.out = OutputFolder(self.options, sources, engine.predictor.class_names) if self.options.output \
            else None
        self.total = len(sources) + len(input_errors)
        self.started: set[Source] = set()
        self.failed_sources: set[Source] = set()

    # -------------------------------------------------------------------------------------------- per result
    def _fail(self, result: FrameResult) -> None:
        self.summary.failed += 1
        self.engine.log(result.message)
        if self.out is not None:
            self.out.record(result.record())

    def _handle(self, result: FrameResult) -> None:
        frame, source = result.frame, result.frame.source
        if result.error is not None:
            if frame.index is None or source.kind == "image":  # the input failed as a whole
                self.failed_sources.add(source)
            self._fail(result)
            return
        if source.kind != "image":
            self.started.add(source)
        det = result.detections
        self.summary.detections += len(det)
        if source.kind != "image":
            self.summary.frames += 1
        if self.out is None:
            return
        if not result.resumed:
            image_id = self.out.ids.take(source.location if source.kind == "image" else None)
            self.out.record(result.record(image_id, self.options.masks))
        try:
            self._draw(result)
        except (OSError, cv2.error) as exc:
            self.summary.failed += 1
            kept = f" (its detections are in {RECORDS_NAME})" if self.options.write_records else ""
            self.engine.log(f"{exc}{kept}")
            return
        if source.kind == "image":
            self.summary.done += 1

    def _draw(self, result: FrameResult) -> None:
        if not self.options.write_images:
            return
        t0 = time.perf_counter()
        image = self.engine.render(result, self.options.masks)
        t1 = time.perf_counter()
        self.out.drawn(result.frame.source, image, result.frame.fps)  # type: ignore[union-attr]
        self.summary.seconds["draw"] += t1 - t0
        self.summary.seconds["write"] += time.perf_counter() - t1

    def _end_source(self, source: Source) -> None:
        self.engine.end_source(source)
        if self.out is not None:
            self.out.end_source(source)
        if source in self.started and source not in self.failed_sources:
            self.summary.done += 1

    # -------------------------------------------------------------------------------------------- the loop
    def _pending(self) -> list[Source]:
        """The sources still to read: images already done (``resume``) are skipped."""
        if self.out is None or not self.options.resume:
            return self.sources
        todo = [s for s in self.sources if not (s.kind == "image" and self.out.done_image(s))]
        self.summary.skipped = len(self.sources) - len(todo)
        return todo

    def _loop(self, bar: Any) -> None:
        done = None
        if self.out is not None and self.options.resume:
            out = self.out
            done = lambda f: None if f.index is None else out.done_frame(f.source, f.index)  # noqa: E731
        active: dict[Source, None] = {}  # sources whose frames have come and that have not ended yet
        for result in self.engine.results(self._pending(), done):
            source = result.frame.source
            if not source.live:  # files come one after the other: a new one ends the previous one
                for other in [s for s in active if s != source and not s.live]:
                    self._end_source(other)
                    del active[other]
            active[source] = None
            self._handle(result)
            bar.update(1)
        for source in active:
            self._end_source(source)

    def execute(self) -> RunSummary:
        from tqdm import tqdm

        for raw, problem in self.input_errors:  # inputs that gave nothing: an error record each
            self._fail(FrameResult(Frame(Source("image", raw), None, None), None, ValueError(problem)))
        self.summary.images = sum(1 for s in self.sources if s.kind == "image")
        t_start = time.perf_counter()
        total = self.engine.expected_frames(self.sources)
        bar = tqdm(total=total, unit="img", disable=not self.options.progress, desc="isseg")
        try:
            self._loop(bar)
        except KeyboardInterrupt:
            self.summary.interrupted = True
        except BaseException:
            self.summary.written = self._close(interrupted=True)  # a crash keeps what was computed, then says where
            if self.summary.written:
                finished = self.summary.done + self.summary.failed + self.summary.skipped
                self.engine.log(f"stopped after {finished} of {self.total} input(s); what was done is in "
                                f"{', '.join(str(p) for p in self.summary.written)} (resume continues)")
            raise
        finally:
            bar.close()
        self.summary.written = self._close(self.summary.interrupted)
        self.summary.wall = time.perf_counter() - t_start
        return self.summary

    def _close(self, interrupted: bool) -> list[Any]:
        self.engine.close()
        return self.out.close(interrupted) if self.out is not None else []
