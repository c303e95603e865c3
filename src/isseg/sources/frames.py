"""Frames from sources: still images, video files, cameras and live streams, each frame with its time.

- Still images are decoded by the one decoder (:func:`isseg.sources.decode.read_image_file`).
- Video files are read in order, every frame (``buffered``), in the caller's thread.
- Live sources (cameras, stream URLs) each get one reader thread. In ``newest`` mode (the default for live
  sources) the thread keeps only the newest frame, so a slow consumer skips frames instead of falling behind:
  lag never builds up. ``buffered`` mode queues up to :data:`LIVE_BUFFER` frames and makes the reader wait.
  A live source that drops is reopened with exponential back-off; the first frame after the outage carries the
  gap in seconds. A source that cannot be opened at all is one error, and the other sources go on.

:func:`iter_frames` yields the frames of many sources in one ordered sequence: images, then video files, then
all live sources at once, interleaved as their frames arrive.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from isseg.sources.decode import MAX_PIXELS, read_image_file
from isseg.sources.inputs import Source

LIVE_BUFFER = 30  # frames a live reader queues in buffered mode
Log = Callable[[str], None]


@dataclass(frozen=True)
class ReadOptions:
    """How frames are read.

    Attributes:
        limit: frames per video or live source (0: all; a live source then runs until stopped).
        stride: keep every ``stride``-th frame of a video or live source (1: all).
        live_mode: "newest" (keep only the newest frame: no lag; the default for live sources) or "buffered"
            (queue up to :data:`LIVE_BUFFER` frames; nothing skipped while the consumer keeps up).
        open_timeout: seconds to wait for a stream to open, and for a frame before it counts as dropped.
        reconnect_timeout: seconds a dropped live source is retried before it ends (0: retried forever).
        max_backoff: the longest wait between two reconnection attempts (they start at 0.5 s and double).
        max_pixels: pixel limit of a still image (see :func:`isseg.sources.decode.decode_image`).
    """

    limit: int = 0
    stride: int = 1
    live_mode: str = "newest"
    open_timeout: float = 10.0
    reconnect_timeout: float = 0.0
    max_backoff: float = 10.0
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0 (0: all frames), got {self.limit}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.live_mode not in ("newest", "buffered"):
            raise ValueError(f"live_mode must be 'newest' or 'buffered', got {self.live_mode!r}")
        if self.open_timeout <= 0 or self.reconnect_timeout < 0 or self.max_backoff <= 0:
            raise ValueError("open_timeout and max_backoff must be > 0, reconnect_timeout >= 0")


@dataclass
class Frame:
    """One image to process.

    Attributes:
        source: where it comes from.
        index: the frame's number in its video or live source (counting every frame, also those skipped by the
            stride); None for a still image.
        image: HxWx3 uint8 BGR, or None when it could not be read (``error`` says why).
        error: why the source or frame could not be read.
        timestamp: seconds on the source's own clock (position in the video, the stream's presentation
            time); None for a still image or where the source has no clock.
        captured: Unix time (s) at which the frame was read.
        fps: frames per second of the source after the stride (None: unknown, or a still image).
        gap: seconds without frames before this one, on the first frame after a live source reconnected.
    """

    source: Source
    index: int | None
    image: np.ndarray | None
    error: Exception | None = None
    timestamp: float | None = None
    captured: float = 0.0
    fps: float | None = None
    gap: float | None = None


def image_frame(source: Source, max_pixels: int = MAX_PIXELS) -> Frame:
    """The frame of a still image; a file that cannot be read is a frame with its error."""
    captured = time.time()
    try:
        return Frame(source, None, read_image_file(source.location, max_pixels=max_pixels), captured=captured)
    except (ValueError, OSError) as exc:
        return Frame(source, None, None, exc, captured=captured)


def open_capture(source: Source, timeout: float) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` of a video file, camera or stream; ValueError naming it when it cannot be."""
    if source.kind == "camera":
        cap = cv2.VideoCapture(int(source.location))
    else:
        ms = int(timeout * 1000)
        cap = cv2.VideoCapture(source.location, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    if not cap.isOpened():
        cap.release()
        what = {"camera": "camera", "stream": "stream", "video": "video file"}.get(source.kind, source.kind)
        raise ValueError(f"{source.location}: cannot open this {what}")
    return cap


def _fps(cap: cv2.VideoCapture, stride: int) -> float | None:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps / stride if 0.0 < fps < 1000.0 else None


def _timestamp(cap: cv2.VideoCapture) -> float | None:
    """The position of the frame just read, in seconds (None where the backend has no clock)."""
    ms = float(cap.get(cv2.CAP_PROP_POS_MSEC))
    return ms / 1000.0 if ms >= 0 else None


def video_frames(source: Source, options: ReadOptions = ReadOptions()) -> Iterator[Frame]:
    """Every ``stride``-th frame of a video file, in order, up to ``limit``; a file that cannot be opened or
    gives no frame is one frame with its error."""
    try:
        cap = open_capture(source, options.open_timeout)
    except ValueError as exc:
        yield Frame(source, None, None, exc, captured=time.time())
        return
    fps = _fps(cap, options.stride)
    produced = 0
    try:
        index = 0
        while not options.limit or produced < options.limit:
            if not cap.grab():
                break
            if index % options.stride == 0:
                ok, image = cap.retrieve()
                if ok:
                    yield Frame(source, index, image, timestamp=_timestamp(cap), captured=time.time(), fps=fps)
                    produced += 1
            index += 1
    finally:
        cap.release()
    if produced == 0:
        yield Frame(source, None, None, ValueError(f"{source.location}: no frames could be read"),
                    captured=time.time())


def video_length(source: Source) -> int | None:
    """Frames in a video file by its header (None when unknown)."""
    cap = cv2.VideoCapture(source.location)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    finally:
        cap.release()
    return n or None


class LiveReader:
    """One reader thread of a camera or stream URL (see the module docstring).

    ``poll()`` takes the next frame if one is there (None otherwise); ``finished`` is True once the source has
    ended (limit reached, gave up reconnecting, could not be opened) and every frame was taken.
    """

    def __init__(self, source: Source, options: ReadOptions, log: Log, wake: threading.Condition) -> None:
        self.source, self.options, self.log, self.wake = source, options, log, wake
        newest = options.live_mode == "newest"
        self._frames: deque[Frame] = deque(maxlen=1 if newest else None)
        self._room = threading.Semaphore(1 if newest else LIVE_BUFFER)
        self._newest = newest
        self._stop = threading.Event()
        self._ended = False
        self.dropped = 0  # frames overwritten before they were taken (newest mode)
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name=f"isseg-live-{source.name}", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        with self.wake:
            return self._ended and not self._frames

    def poll(self) -> Frame | None:
        with self.wake:
            frame = self._frames.popleft() if self._frames else None
        if frame is not None and not self._newest:
            self._room.release()
        return frame

    def stop(self) -> None:
        self._stop.set()
        self._room.release()
        self._thread.join(timeout=self.options.open_timeout + 1)

    def _put(self, frame: Frame) -> None:
        if not self._newest:
            while not self._room.acquire(timeout=0.2):  # buffered: wait for room (the consumer sets the pace)
                if self._stop.is_set():
                    return
        with self.wake:
            if self._newest and self._frames:
                self.dropped += 1
            self._frames.append(frame)
            self.wake.notify_all()

    def _end(self, error: Exception | None = None) -> None:
        if error is not None:
            self._put(Frame(self.source, None, None, error, captured=time.time()))
        with self.wake:
            self._ended = True
            self.wake.notify_all()

    def _reopen(self, lost_at: float) -> cv2.VideoCapture | None:
        """Reopen after a drop, with back-off; None when stopped or past ``reconnect_timeout``."""
        wait, attempt = 0.5, 0
        self.log(f"{self.source.location}: stream lost; reconnecting")
        while not self._stop.is_set():
            if self.options.reconnect_timeout and time.monotonic() - lost_at > self.options.reconnect_timeout:
                return None
            attempt += 1
            try:
                cap = open_capture(self.source, self.options.open_timeout)
            except ValueError:
                self._stop.wait(wait)
                wait = min(wait * 2, self.options.max_backoff)
                continue
            self.reconnects += 1
            self.log(f"{self.source.location}: reconnected after {time.monotonic() - lost_at:.1f} s "
                     f"({attempt} attempt(s))")
            return cap
        return None

    def _run(self) -> None:
        try:
            cap = open_capture(self.source, self.options.open_timeout)
        except ValueError as exc:
            self._end(exc)
            return
        index = 0
        gap: float | None = None
        fps = _fps(cap, self.options.stride)
        try:
            while not self._stop.is_set():
                if not cap.grab():
                    cap.release()
                    lost_at = time.monotonic()
                    cap = self._reopen(lost_at)
                    if cap is None:
                        break
                    gap = time.monotonic() - lost_at
                    continue
                if index % self.options.stride == 0:
                    ok, image = cap.retrieve()
                    if ok:
                        self._put(Frame(self.source, index, image, timestamp=_timestamp(cap), captured=time.time(),
                                        fps=fps, gap=gap))
                        gap = None
                index += 1
        finally:
            if cap is not None:
                cap.release()
            self._end()


def live_frames(sources: Iterable[Source], options: ReadOptions, log: Log) -> Iterator[Frame]:
    """The frames of several live sources at once, as they arrive (one reader thread each), up to ``limit``
    frames taken from each."""
    wake = threading.Condition()
    readers = [LiveReader(s, options, log, wake) for s in sources]
    taken = dict.fromkeys(readers, 0)
    try:
        while readers:
            got = False
            for reader in list(readers):
                frame = reader.poll()
                if frame is not None:
                    got = True
                    taken[reader] += frame.image is not None
                    yield frame
                if reader.finished or (options.limit and taken[reader] >= options.limit):
                    reader.stop()
                    readers.remove(reader)
            if not got and readers:
                with wake:
                    wake.wait(0.05)
    finally:
        for reader in readers:
            reader.stop()


def iter_frames(sources: Iterable[Source], options: ReadOptions = ReadOptions(), log: Log = print
                ) -> Iterator[Frame]:
    """Frames of ``sources`` in one sequence: still images, then video files in order, then every live source
    at once."""
    sources = list(sources)
    for source in sources:
        if source.kind == "image":
            yield image_frame(source, options.max_pixels)
    for source in sources:
        if source.kind == "video":
            yield from video_frames(source, options)
    live = [s for s in sources if s.live]
    if live:
        yield from live_frames(live, options, log)
