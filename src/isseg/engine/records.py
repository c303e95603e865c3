"""Per-image result records: the one format of streamed predictions (``isseg predict``, Ray shards, the server).

A record is one JSON object per image or frame, one per line of a JSON Lines file::

    {"file": "photos/a.jpg", "image_id": 139, "height": 426, "width": 640, "frame": null, "error": null,
     "detections": [{"label": 0, "name": "person", "score": 0.98, "box": [x1, y1, x2, y2],
                     "mask": {"size": [426, 640], "counts": "..."}}]}

``box`` is in original-image pixels; ``mask`` is COCO compressed RLE (``counts`` a str) or null when masks were
not asked for; a tracked detection has its ``track_id``; a frame of a video or live source has ``timestamp``
(seconds on the source's own clock) and, when live, ``captured`` (Unix time it was read) and ``gap`` (seconds
without frames before it, after a reconnection). A bad image is a record with ``error`` set and no detections,
so a run never loses track of an input.

Files are written so that nothing is ever half-written: :class:`RecordWriter` appends complete lines to
``<name>.partial`` (flushed line by line) and renames it to its final name on :meth:`RecordWriter.close`;
:func:`write_records` writes a whole shard through a temporary file and a rename. Reading tolerates a partial
last line of an interrupted ``.partial`` file, which is how a resumed run finds what was already done.
:func:`write_coco_files` turns records into ``results.json`` and ``images.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PARTIAL_SUFFIX = ".partial"


def detections_record(det: Any, file: str, image_id: int | None = None, frame: int | None = None,
                      masks: bool = True, times: dict[str, float] | None = None) -> dict[str, Any]:
    """The record of one image's ``Detections`` (see the module docstring). A tracked detection has its
    ``track_id``; ``times`` (a video or live frame's ``timestamp``, ``captured``, ``gap``) join the record."""
    from isseg.data.masks import masks_to_rles

    n = len(det)
    rles: list[Any] = [None] * n
    if masks and det.masks is not None and n:
        rles = masks_to_rles(det.masks)
    names = det.names
    items = [{"label": int(det.labels[i]), "name": names[i], "score": round(float(det.scores[i]), 6),
              "box": [round(float(v), 3) for v in det.boxes[i]], "mask": rles[i]} for i in range(n)]
    track_ids = getattr(det, "track_ids", None)
    if track_ids is not None:
        for item, track_id in zip(items, track_ids):
            item["track_id"] = int(track_id)
    record = {"file": str(file), "image_id": image_id, "height": int(det.image_size[0]),
              "width": int(det.image_size[1]), "frame": frame, "error": None, "detections": items}
    record.update(times or {})
    return record


def error_record(file: str, error: str, image_id: int | None = None, frame: int | None = None) -> dict[str, Any]:
    """The record of an input that could not be processed: the run goes on, the input is accounted for."""
    return {"file": str(file), "image_id": image_id, "height": None, "width": None, "frame": frame,
            "error": str(error), "detections": []}


def record_to_detections(record: dict[str, Any], class_names: Sequence[str] = ()) -> Any:
    """A ``Detections`` back from a record (masks decoded when present)."""
    from isseg.data.masks import rle_to_mask
    from isseg.model.detections import Detections

    h, w = int(record["height"]), int(record["width"])
    items = record["detections"]
    boxes = np.array([d["box"] for d in items], np.float32).reshape(-1, 4)
    scores = np.array([d["score"] for d in items], np.float32)
    labels = np.array([d["label"] for d in items], np.int64)
    masks = None
    if items and all(d.get("mask") is not None for d in items):
        masks = np.stack([rle_to_mask(d["mask"]).astype(bool) for d in items])
    elif not items:
        masks = np.zeros((0, h, w), bool)
    return Detections(boxes, scores, labels, masks, tuple(class_names), (h, w))


def category_ids_for(class_names: Sequence[str]) -> list[int]:
    """The COCO category id of each class index: COCO's own ids for the 80 COCO classes, else 1..K."""
    from isseg.config import COCO_CATEGORY_IDS, COCO_CLASSES

    return list(COCO_CATEGORY_IDS) if tuple(class_names) == COCO_CLASSES else list(range(1, len(class_names) + 1))


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (file, frame): a later record (a resumed retry) replaces an earlier one, in first order."""
    by_key: dict[tuple[str, Any], dict[str, Any]] = {}
    for rec in records:
        by_key[(rec.get("file"), rec.get("frame"))] = rec
    return list(by_key.values())


def records_to_coco(records: Iterable[dict[str, Any]], category_ids: Sequence[int]
                    ) -> tuple[list[dict[str, Any]], list[int]]:
    """COCO result records (bbox ``[x, y, w, h]``, RLE segmentation) and the ids of the images without error."""
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    for rec in records:
        if rec.get("error") is not None:
            continue
        if rec.get("image_id") is None:
            raise ValueError(f"record of {rec.get('file')!r} has no image_id; cannot score it against COCO")
        image_id = int(rec["image_id"])
        image_ids.append(image_id)
        for d in rec["detections"]:
            x1, y1, x2, y2 = (float(v) for v in d["box"])
            out = {"image_id": image_id, "category_id": int(category_ids[int(d["label"])]),
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(d["score"])}
            if d.get("mask") is not None:
                out["segmentation"] = d["mask"]
            results.append(out)
    return results, image_ids


def write_coco_files(records: Iterable[dict[str, Any]], class_names: Sequence[str], folder: str | os.PathLike
                     ) -> tuple[Path, Path]:
    """``results.json`` (COCO results of every record with an image id; bbox and score rounded) and
    ``images.json`` (image id -> file, size, frame; the categories) in ``folder``, each written atomically."""
    from isseg.atomic import atomic_write

    category_ids = category_ids_for(class_names)
    good = [r for r in records if r.get("error") is None and r.get("image_id") is not None]
    results, _ = records_to_coco(good, category_ids)
    for r in results:
        r["bbox"] = [round(v, 2) for v in r["bbox"]]
        r["score"] = round(r["score"], 5)
    images = []
    for r in good:
        entry = {"id": int(r["image_id"]), "file_name": r["file"], "height": r["height"], "width": r["width"]}
        if r.get("frame") is not None:
            entry["frame"] = r["frame"]
        images.append(entry)
    categories = [{"id": c, "name": n} for c, n in zip(category_ids, class_names)]
    folder = Path(folder)
    results_path = atomic_write(folder / "results.json", json.dumps(results))
    images_path = atomic_write(folder / "images.json", json.dumps({"images": images, "categories": categories},
                                                                  indent=1))
    return results_path, images_path


# ------------------------------------------------------------------------------------------------ files
def read_records(path: str | os.PathLike, tolerate_partial: bool | None = None) -> list[dict[str, Any]]:
    """Records of one JSON Lines file. An unterminated last line (a process killed mid-write) is dropped when
    ``tolerate_partial`` (default: for ``.partial`` files); any other bad line is a ValueError naming the line."""
    path = Path(path)
    if tolerate_partial is None:
        tolerate_partial = path.name.endswith(PARTIAL_SUFFIX)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    records = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not a JSON record ({exc.msg})") from None
    if tail.strip():
        try:
            records.append(json.loads(tail))
        except json.JSONDecodeError as exc:
            if not tolerate_partial:
                raise ValueError(f"{path}: line {len(lines)} is not a JSON record ({exc.msg})") from None
    return records


def write_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write a whole file of records atomically (temporary file in the same folder, fsync, rename)."""
    from isseg.atomic import atomic_write

    return atomic_write(path, "".join(json.dumps(rec, separators=(",", ":")) + "\n" for rec in records))


class RecordWriter:
    """Append records to ``<path>.partial`` as they come (each line flushed), rename to ``path`` on close.

    ``resume=True`` keeps the records of an existing ``path`` or ``.partial`` file (:attr:`done` lists them) and
    appends after them; otherwise an existing file is replaced once the new one is complete.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, fsync_every: int = 50) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: list[dict[str, Any]] = []
        if resume:
            for source in (self.path, self.partial):
                if source.is_file():
                    self.done.extend(read_records(source, tolerate_partial=True))
        elif self.partial.exists():
            self.partial.unlink()
        # rewrite what is kept (drops a torn last line) and go on appending after it
        with open(self.partial, "w", encoding="utf-8") as f:
            for rec in self.done:
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        if resume and self.path.is_file():
            self.path.unlink()  # its records now live in the .partial file
        self._file = open(self.partial, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._fsync_every = max(1, int(fsync_every))
        self._since_sync = 0
        self.written = 0

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        self.written += 1
        self._since_sync += 1
        if self._since_sync >= self._fsync_every:
            os.fsync(self._file.fileno())
            self._since_sync = 0

    def close(self, finalize: bool = True) -> Path:
        """Close the file; with ``finalize`` rename it to its final name (an interrupted run keeps ``.partial``)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if finalize:
            os.replace(self.partial, self.path)
            return self.path
        return self.partial

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(finalize=exc_type is None)


def iter_record_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """``.jsonl`` files of the given files and folders (folders: every ``*.jsonl`` inside, sorted)."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            yield from sorted(p.glob("*.jsonl"))
        elif p.is_file():
            yield p
        else:
            raise FileNotFoundError(f"results not found: {p}")
