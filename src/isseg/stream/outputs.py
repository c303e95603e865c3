"""The output folder of a streaming run: records, drawn images and videos, COCO results; and what a resumed run
finds already done there.

Nothing computed is lost: each record is appended to ``results.jsonl.partial`` as it is computed
(:class:`isseg.engine.records.RecordWriter`); :meth:`OutputFolder.close` renames it and writes ``results.json`` and
``images.json`` from the records, each atomically, also after Ctrl-C or a crash (then ``.partial`` stays, for
``resume``). Drawn images get their input's name (made unique in input order, the same on a resumed run).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isseg.atomic import atomic_write
from isseg.engine.records import RecordWriter, latest_records, read_records, write_coco_files
from isseg.sources.inputs import Source
from isseg.stream.options import RECORDS_NAME, StreamOptions

_WRITABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageIds:
    """COCO file names (000000000139.jpg) give their numeric id; others a running number; never twice."""

    def __init__(self, used: Iterable[int] = ()) -> None:
        self.used = set(used)
        self.next = max(self.used, default=0) + 1

    def take(self, path: str | None = None) -> int:
        stem = Path(path).stem if path is not None else ""
        if stem.isdigit() and int(stem) not in self.used:
            i = int(stem)
        else:
            i = self.next
            while i in self.used:
                i += 1
        self.used.add(i)
        self.next = max(self.next, i + 1)
        return i


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem_1.suffix``, ``stem_2.suffix``... the first not in ``taken`` (which it joins)."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, i = name, 1
    while candidate in taken:
        candidate = f"{stem}_{i}{suffix}"
        i += 1
    taken.add(candidate)
    return candidate


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode by the file's suffix (PNG when OpenCV has no writer for it) and write atomically."""
    suffix = path.suffix.lower() if path.suffix.lower() in _WRITABLE_SUFFIXES else ".png"
    try:
        ok, encoded = cv2.imencode(suffix, image)
    except cv2.error:
        ok, encoded = False, None
    if not ok:
        raise OSError(f"{path}: cannot encode the drawn image")
    try:
        atomic_write(path, encoded.tobytes())
    except OSError as exc:
        raise OSError(f"{path}: cannot write the drawn image ({exc.strerror or exc})") from None


class VideoOut:
    """The drawn copy of one video or live source (``<name>.mp4``), opened at its first frame, when its size is
    known."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: Any = None

    def write(self, image: np.ndarray, fps: float | None) -> None:
        if self.writer is None:
            h, w = image.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, (w, h))
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: cannot write the drawn video")
        self.writer.write(image)

    def release(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class OutputFolder:
    """Records, drawn outputs and the COCO files of one run in ``options.output``.

    ``sources``: every source of the run, in order (drawn names are given in that order, so a resumed run reuses
    them). With ``options.resume`` the records already there are kept: :meth:`done_image` and :meth:`done_frame`
    say what needs no new inference.
    """

    def __init__(self, options: StreamOptions, sources: Sequence[Source], class_names: Sequence[str]) -> None:
        self.folder = Path(str(options.output))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.options, self.class_names = options, tuple(class_names)
        self.writer = RecordWriter(self.folder / RECORDS_NAME, resume=options.resume) \
            if options.write_records else None
        previous = self.writer.done if self.writer is not None else []
        self._done_images = {r["file"] for r in previous if r.get("error") is None and r.get("frame") is None}
        self._done_frames = {(r["file"], int(r["frame"])): r for r in previous
                             if r.get("error") is None and r.get("frame") is not None}
        self.ids = ImageIds(int(r["image_id"]) for r in previous if r.get("image_id") is not None)
        taken: set[str] = set()
        self._names = {s: unique_name(s.name, taken) for s in sources if s.kind == "image"}
        for s in sources:
            if s.kind != "image":
                self._names[s] = unique_name(f"{Path(s.name).stem}.mp4", taken)
        self._videos: dict[Source, VideoOut] = {}

    def done_image(self, source: Source) -> bool:
        return source.location in self._done_images

    def done_frame(self, source: Source, index: int) -> dict[str, Any] | None:
        """The record of a frame an earlier run computed, or None."""
        return self._done_frames.get((source.location, index))

    def record(self, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(record)

    def drawn(self, source: Source, image: np.ndarray, fps: float | None = None) -> None:
        """Write the drawn picture of an image, or the next frame of a video / live source's drawn video."""
        path = self.folder / self._names[source]
        if source.kind == "image":
            write_image(path, image)
            return
        video = self._videos.get(source)
        if video is None:
            video = self._videos[source] = VideoOut(path)
        video.write(image, fps)

    def end_source(self, source: Source) -> None:
        video = self._videos.pop(source, None)
        if video is not None:
            video.release()

    def close(self, interrupted: bool) -> list[Path]:
        """Close the videos and the records (kept as ``.partial`` when interrupted) and write the COCO files from
        the records; -> the files written."""
        for source in list(self._videos):
            self.end_source(source)
        if self.writer is None:
            return []
        records_file = self.writer.close(finalize=not interrupted)
        records = latest_records(read_records(records_file, tolerate_partial=True))
        results, images = write_coco_files(records, self.class_names, self.folder)
        return [results, images, records_file]
