"""Inputs -> ordered sources: the one place that turns what a user names into things to read.

- an image file, or a file of unknown suffix (its decoding decides);
- a folder (local or ``scheme://bucket/prefix/``): the image files in it, sorted (``recursive``: sub-folders too);
- a glob (``photos/*.jpg``, ``s3://bucket/**/*.png``): the files it matches, sorted;
- a manifest (``.txt`` / ``.lst`` / ``.list`` / ``.manifest``): one image path or URI a line, ``#`` comments and
  blank lines ignored, relative paths taken from the manifest's folder;
- a video file (``.mp4``, ``.avi``, ...);
- a camera index (``0``, ``1``, ... when no such file exists);
- a stream URL (``rtsp://``, ``rtmp://``, ``http(s)://`` MJPEG / HLS / MPEG-TS, ``udp://``, ``srt://``);
- a ``.streams`` file: one stream URL, camera index or video file a line, all read at once.

Sources keep the order of the inputs; a folder, glob or manifest is expanded in sorted order. An input that gives
nothing is one ``(input, problem)`` line, and the others still run.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from isseg.sources.decode import IMAGE_SUFFIXES, is_uri, open_uri

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
MANIFEST_SUFFIXES = (".txt", ".lst", ".list", ".manifest")
STREAMS_SUFFIX = ".streams"
# schemes read as live streams by OpenCV's FFMPEG backend (everything else with a scheme goes through fsspec)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp")
# http(s) URLs of these suffixes are live streams, not files: HLS playlists, MPEG-TS, MJPEG
LIVE_HTTP_SUFFIXES = (".m3u8", ".ts", ".mjpg", ".mjpeg", ".cgi", "")
KINDS = ("image", "video", "camera", "stream")


@dataclass(frozen=True)
class Source:
    """One thing to read: ``kind`` "image" (a still image), "video" (a video file, read to its end), "camera"
    (a camera index) or "stream" (a live URL); ``location`` is the path, URI, URL or camera index as text."""

    kind: str
    location: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; expected one of {KINDS}")

    @property
    def live(self) -> bool:
        """Cameras and stream URLs: frames come at the source's pace; the newest one matters."""
        return self.kind in ("camera", "stream")

    @property
    def name(self) -> str:
        """A short name for outputs: the file name; ``camera0``; the last part of a URL's path (or its host)."""
        if self.kind == "camera":
            return f"camera{self.location}"
        if self.kind == "stream":
            rest = self.location.partition("://")[2].split("?")[0].rstrip("/")
            host, _, path = rest.partition("/")
            return (path.rsplit("/", 1)[-1] or host.replace(":", "_")) or "stream"
        return os.path.basename(self.location.rstrip("/")) or self.location


InputError = tuple[str, str]  # (the input as given, what is wrong with it)


def _suffix(path: str) -> str:
    return os.path.splitext(path.rstrip("/").split("?")[0])[1].lower()


def _scheme(location: str) -> str:
    return location.partition("://")[0].lower() if is_uri(location) else ""


def _is_stream_url(location: str) -> bool:
    scheme = _scheme(location)
    if scheme in STREAM_SCHEMES:
        return True
    return scheme in ("http", "https") and _suffix(location) in LIVE_HTTP_SUFFIXES


def _file_source(location: str) -> Source:
    """A file (local or URI) by its suffix: video or image (unknown suffixes are tried as images)."""
    return Source("video" if _suffix(location) in VIDEO_SUFFIXES else "image", location)


def _with_protocol(fs: object, path: str) -> str:
    """fsspec returns paths without their scheme; put it back so that workers can open them again."""
    return path if is_uri(path) else fs.unstrip_protocol(path)  # type: ignore[attr-defined]


def _read_lines(path: str) -> tuple[list[tuple[int, str]], str]:
    """(line number, entry) of a manifest or .streams file, comments and blanks dropped; and its base folder."""
    if is_uri(path):
        fs, p = open_uri(path)
        with fs.open(p, "rt", encoding="utf-8") as f:
            text = f.read()
        base = path.rsplit("/", 1)[0]
    else:
        text = Path(path).read_text(encoding="utf-8")
        base = str(Path(path).parent)
    entries = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    return [(n, e) for n, e in entries if e and not e.startswith("#")], base


def _relative(entry: str, base: str) -> str:
    if is_uri(entry) or os.path.isabs(entry):
        return entry
    return f"{base}/{entry}" if is_uri(base) else os.path.normpath(os.path.join(base, entry))


def _manifest(path: str) -> tuple[list[Source], list[InputError]]:
    entries, base = _read_lines(path)
    sources: list[Source] = []
    errors: list[InputError] = []
    for number, entry in entries:
        if glob.has_magic(entry):
            errors.append((path, f"line {number}: a manifest lists files, not patterns ({entry!r})"))
        else:
            sources.append(Source("image", _relative(entry, base)))
    if not entries:
        errors.append((path, "the manifest lists no image"))
    return sources, errors


def _streams_file(path: str) -> tuple[list[Source], list[InputError]]:
    entries, base = _read_lines(path)
    sources: list[Source] = []
    errors: list[InputError] = []
    for number, entry in entries:
        if entry.isdigit():
            sources.append(Source("camera", entry))
        elif _is_stream_url(entry):
            sources.append(Source("stream", entry))
        elif _suffix(entry) in VIDEO_SUFFIXES:
            sources.append(Source("video", _relative(entry, base)))
        else:
            errors.append((path, f"line {number}: expected a stream URL (rtsp://, rtmp://, http://...), a camera "
                                 f"index or a video file, got {entry!r}"))
    if not entries:
        errors.append((path, "the streams file lists no stream"))
    return sources, errors


def _listed(location: str) -> tuple[list[Source], list[InputError]] | None:
    """Sources of a manifest or a .streams file; None for any other file."""
    suffix = _suffix(location)
    if suffix == STREAMS_SUFFIX:
        return _streams_file(location)
    if suffix in MANIFEST_SUFFIXES:
        return _manifest(location)
    return None


def _expand_uri(raw: str, recursive: bool) -> tuple[list[Source], list[InputError]]:
    fs, path = open_uri(raw)
    if glob.has_magic(path):
        found = sorted(p for p in fs.glob(path) if not fs.isdir(p))
        return [_file_source(_with_protocol(fs, p)) for p in found], [] if found else [(raw, "no file matches this "
                                                                                              "pattern")]
    if fs.isdir(path):
        listing = fs.find(path) if recursive else [e["name"] for e in fs.ls(path, detail=True)
                                                   if e.get("type") != "directory"]
        found = sorted(p for p in listing if _suffix(p) in IMAGE_SUFFIXES)
        return [Source("image", _with_protocol(fs, p)) for p in found], [] if found else [(raw, "no images in this "
                                                                                                "folder")]
    if fs.isfile(path):
        return _listed(raw) or ([_file_source(raw)], [])
    return [], [(raw, "no such file or folder")]


def _expand_local(raw: str, recursive: bool) -> tuple[list[Source], list[InputError]]:
    path = Path(raw)
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        found = sorted(f for f in path.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        return [Source("image", str(f)) for f in found], [] if found else [(raw, "no images in this folder")]
    if path.is_file():
        return _listed(raw) or ([_file_source(raw)], [])
    if glob.has_magic(raw):
        found = sorted(m for m in glob.glob(raw, recursive=True) if Path(m).is_file())
        listed = [_listed(m) or ([_file_source(m)], []) for m in found]
        return [s for sources, _ in listed for s in sources], [e for _, errs in listed for e in errs] or (
            [] if found else [(raw, "no file matches this pattern")])
    return [], [(raw, "no such file, folder, camera or stream")]


def expand_inputs(inputs: list[str] | tuple[str, ...] | str, recursive: bool = False
                  ) -> tuple[list[Source], list[InputError]]:
    """-> (the sources of ``inputs`` in order, one ``(input, problem)`` per input that gave nothing)."""
    sources: list[Source] = []
    errors: list[InputError] = []
    for raw in [inputs] if isinstance(inputs, str) else inputs:
        raw = str(raw)
        if raw.isdigit() and not Path(raw).exists():
            found, errs = [Source("camera", raw)], []
        elif _is_stream_url(raw):
            found, errs = [Source("stream", raw)], []
        elif is_uri(raw):
            found, errs = _expand_uri(raw, recursive)
        else:
            found, errs = _expand_local(raw, recursive)
        sources.extend(found)
        errors.extend(errs)
    return sources, errors
