"""The output folder of a cluster run, laid out so that a resumed run is exact.

    OUT/run.json           the run: shard size, image count, a digest of the input list, the model settings
    OUT/inputs.txt         the sorted input list (one path or URI a line)
    OUT/shard-00000.jsonl  records (``isseg.engine.records``) of inputs 0 .. S-1, in input order
    OUT/shard-00001.jsonl  inputs S .. 2S-1, ...
    OUT/summary.json       counts of the finished run; OUT/results.json: COCO results, on request

Shard ``k`` holds exactly the ``k``-th fixed-size chunk of the sorted input list and is written only when all
of its images are done, through a temporary file and a rename (:func:`isseg.engine.records.write_records`). So
a shard is either complete or absent, a restarted run recomputes exactly the chunks without a shard, and no
image can be lost or written twice. ``run.json`` pins the list: a restart with other inputs, another shard
size or other model settings is refused instead of mixing two runs in one folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from isseg.engine.records import read_records, write_records

FORMAT = "isseg-shards"
VERSION = 1


def _digest(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode("utf-8") + b"\n")
    return h.hexdigest()


def _write_text(path: Path, text: str) -> None:
    from isseg.atomic import atomic_write

    atomic_write(path, text)


class ShardLayout:
    """Fixed-size chunks of a sorted input list, one shard file each, in ``folder``."""

    def __init__(self, folder: str | os.PathLike, paths: Sequence[str], shard_size: int,
                 settings: dict[str, Any] | None = None) -> None:
        if shard_size < 1:
            raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
        self.folder = Path(folder)
        self.paths = list(paths)
        self.shard_size = int(shard_size)
        self.settings = dict(settings or {})
        self.count = (len(self.paths) + self.shard_size - 1) // self.shard_size
        self._width = max(5, len(str(max(0, self.count - 1))))

    # ------------------------------------------------------------------------------------------ the run
    @classmethod
    def open(cls, folder: str | os.PathLike, paths: Sequence[str], shard_size: int | None,
             settings: dict[str, Any] | None = None, default_shard_size: int = 256) -> ShardLayout:
        """Start a run in ``folder``, or check that it continues the run already there (same list, shard size
        and settings) and return its layout."""
        folder = Path(folder)
        run_file = folder / "run.json"
        settings = dict(settings or {})
        if run_file.is_file():
            try:
                run = json.loads(run_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{run_file}: not a JSON file ({exc.msg})") from None
            if run.get("format") != FORMAT:
                raise ValueError(f"{run_file}: not an isseg shard run (format {run.get('format')!r})")
            if shard_size is not None and int(shard_size) != int(run["shard_size"]):
                raise ValueError(f"{folder} holds a run with --shard-size {run['shard_size']}, not {shard_size}: "
                                 f"pass the same size to resume it, or another --output")
            if run["images"] != len(paths) or run["inputs_sha256"] != _digest(paths):
                raise ValueError(f"{folder} holds a run of another input list ({run['images']} images, "
                                 f"now {len(paths)}): pass the same inputs to resume it, or another --output")
            changed = sorted(k for k in set(settings) | set(run.get("settings", {}))
                             if settings.get(k) != run.get("settings", {}).get(k))
            if changed:
                raise ValueError(f"{folder} holds a run with other settings ({', '.join(changed)}): pass the "
                                 f"same ones to resume it, or another --output")
            return cls(folder, paths, int(run["shard_size"]), settings)
        layout = cls(folder, paths, default_shard_size if shard_size is None else int(shard_size), settings)
        folder.mkdir(parents=True, exist_ok=True)
        stale = sorted(folder.glob("shard-*.jsonl"))
        if stale:
            raise ValueError(f"{folder} has shard files but no run.json: not resumable; use another --output")
        _write_text(folder / "inputs.txt", "".join(p + "\n" for p in layout.paths))
        _write_text(run_file, json.dumps({"format": FORMAT, "version": VERSION, "shard_size": layout.shard_size,
                                          "images": len(layout.paths), "shards": layout.count,
                                          "inputs_sha256": _digest(layout.paths), "settings": settings},
                                         indent=1) + "\n")
        return layout

    # ------------------------------------------------------------------------------------------- shards
    def shard_path(self, k: int) -> Path:
        return self.folder / f"shard-{k:0{self._width}d}.jsonl"

    def chunk(self, k: int) -> range:
        """Indices into the input list of shard ``k``."""
        return range(k * self.shard_size, min(len(self.paths), (k + 1) * self.shard_size))

    def read(self, k: int) -> list[dict[str, Any]]:
        """Records of a written shard, checked to be exactly its chunk's files in order."""
        path = self.shard_path(k)
        records = read_records(path)
        expected = [self.paths[i] for i in self.chunk(k)]
        if [r.get("file") for r in records] != expected:
            raise ValueError(f"{path}: does not hold the records of its {len(expected)} inputs "
                             f"({len(records)} records); remove it to recompute it")
        return records

    def pending(self) -> list[int]:
        """Shards still to compute: those without a file (every existing one is checked). Removes temporary files
        that a killed run left behind."""
        for tmp in self.folder.glob(".shard-*.jsonl.tmp"):
            tmp.unlink(missing_ok=True)
        todo = []
        for k in range(self.count):
            if self.shard_path(k).is_file():
                self.read(k)
            else:
                todo.append(k)
        return todo

    def write(self, k: int, records: Sequence[dict[str, Any]]) -> Path:
        """Write shard ``k`` atomically; ``records`` must be its chunk's, in input order."""
        files = [r["file"] for r in records]
        expected = [self.paths[i] for i in self.chunk(k)]
        if files != expected:
            raise RuntimeError(f"shard {k}: records of {len(files)} files do not match its {len(expected)} inputs")
        return write_records(self.shard_path(k), records)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record of the run, in input order (all shards must be written)."""
        for k in range(self.count):
            yield from self.read(k)

    def summarize(self) -> dict[str, Any]:
        """Counts over every shard: images, images with an error, detections."""
        images = errors = detections = 0
        for rec in self.records():
            images += 1
            if rec.get("error") is not None:
                errors += 1
            detections += len(rec.get("detections") or ())
        return {"images": images, "errors": errors, "detections": detections, "shards": self.count}
