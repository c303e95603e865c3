"""The input list of a cluster run: folders, globs, manifest files and fsspec URIs -> one sorted list of images.

The list must be deterministic, because the shard layout (fixed-size chunks of it) is what makes a resumed run
exact: the same inputs always give the same list in the same order, whatever the file system returns.

- a folder (local or ``scheme://bucket/prefix/``): the image files in it (``recursive``: in sub-folders too);
- a glob (``photos/*.jpg``, ``s3://bucket/**/*.png``): the files it matches;
- a manifest (``.txt`` / ``.lst`` / ``.list`` / ``.manifest``): one image path or URI a line, ``#`` comments and
  blank lines ignored, relative paths taken from the manifest's folder;
- anything else: one image (its decoding decides).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm"}
MANIFEST_SUFFIXES = {".txt", ".lst", ".list", ".manifest"}


def is_uri(path: str) -> bool:
    """``scheme://...`` other than a Windows drive; such inputs go through fsspec."""
    head, sep, _ = path.partition("://")
    return bool(sep) and head.isidentifier() and len(head) > 1


def _suffix(path: str) -> str:
    return os.path.splitext(path.rstrip("/"))[1].lower()


def _is_image(path: str) -> bool:
    return _suffix(path) in IMAGE_SUFFIXES


def _fs(uri: str):  # noqa: ANN202 - fsspec types are optional
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with the ray extra
        raise ValueError(f"{uri}: URIs need fsspec (pip install 'isseg[ray]')") from None
    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"{uri}: cannot open this URI ({exc})") from None


def _with_protocol(fs: object, path: str) -> str:
    """fsspec returns paths without their scheme; put it back so that workers can open them again."""
    return path if is_uri(path) else fs.unstrip_protocol(path)  # type: ignore[attr-defined]


def _read_manifest(path: str) -> tuple[list[str], list[str]]:
    if is_uri(path):
        fs, p = _fs(path)
        with fs.open(p, "rt", encoding="utf-8") as f:
            text = f.read()
        base = path.rsplit("/", 1)[0]
    else:
        text = Path(path).read_text(encoding="utf-8")
        base = str(Path(path).parent)
    items: list[str] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_uri(entry) or os.path.isabs(entry):
            items.append(entry)
        elif is_uri(base):
            items.append(f"{base}/{entry}")
        else:
            items.append(os.path.normpath(os.path.join(base, entry)))
        if glob.has_magic(entry):
            errors.append(f"{path}: line {number}: a manifest lists files, not patterns ({entry!r})")
            items.pop()
    if not items and not errors:
        errors.append(f"{path}: the manifest lists no image")
    return items, errors


def _expand_uri(raw: str, recursive: bool) -> tuple[list[str], list[str]]:
    fs, path = _fs(raw)
    if glob.has_magic(path):
        found = sorted(p for p in fs.glob(path) if not fs.isdir(p))
        if not found:
            return [], [f"{raw}: no file matches this pattern"]
        return [_with_protocol(fs, p) for p in found], []
    if fs.isdir(path):
        listing = fs.find(path) if recursive else [e["name"] for e in fs.ls(path, detail=True)
                                                   if e.get("type") != "directory"]
        found = sorted(p for p in listing if _is_image(p))
        if not found:
            return [], [f"{raw}: no images in this folder"]
        return [_with_protocol(fs, p) for p in found], []
    if fs.isfile(path):
        if _suffix(path) in MANIFEST_SUFFIXES:
            return _read_manifest(raw)
        return [raw], []
    return [], [f"{raw}: no such file or folder"]


def _expand_local(raw: str, recursive: bool) -> tuple[list[str], list[str]]:
    path = Path(raw)
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        found = sorted(str(f) for f in path.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        return found, ([] if found else [f"{raw}: no images in this folder"])
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return _read_manifest(raw)
        return [str(path)], []
    if glob.has_magic(raw):
        found = sorted(m for m in glob.glob(raw, recursive=True) if Path(m).is_file())
        return found, ([] if found else [f"{raw}: no file matches this pattern"])
    return [], [f"{raw}: no such file, folder or manifest"]


def list_inputs(inputs: Iterable[str], recursive: bool = False) -> tuple[list[str], list[str]]:
    """-> (sorted, de-duplicated image paths / URIs, one error line per input that gave nothing).

    Paths are kept as written (``photos/a.jpg`` stays relative), so the records name files the way
    ``isseg predict`` does.
    """
    found: set[str] = set()
    errors: list[str] = []
    for raw in inputs:
        raw = str(raw)
        items, errs = _expand_uri(raw, recursive) if is_uri(raw) else _expand_local(raw, recursive)
        found.update(items)
        errors.extend(errs)
    return sorted(found), errors


def read_bytes(path: str) -> bytes:
    """The bytes of one input, local or fsspec URI (called in the Ray workers)."""
    if is_uri(path):
        fs, p = _fs(path)
        with fs.open(p, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()
