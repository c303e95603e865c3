"""The one decoder: the bytes of an encoded image -> HxWx3 uint8 BGR, with isseg's own checks.

Every image in isseg is decoded here: ``isseg predict``, ``isseg evaluate``, training and its pre-flight, the
server, the Ray actors and INT8 calibration, so a truncated, corrupt or oversized image gets the same one-line
error on every path: ``<source>: <what is wrong>``, where the source is the file, URI or upload it came from.

Files are checked for completeness before they are decoded: OpenCV decodes a truncated JPEG as if it were whole
(grey bottom rows) and its libjpeg / libpng warnings go to the C stderr, where they cannot be caught or
attributed to a file. :func:`check_image_bytes` finds the truncation itself (JPEG: an end-of-image marker after
the last scan; PNG: the chunk walk reaches IEND and every chunk's CRC holds; BMP / WebP: the size their header
declares). The pixel count is read from the header before any pixel is decoded, so a small file cannot expand
into gigabytes (:class:`ImageTooLarge`).

Decoding is OpenCV's ``IMREAD_COLOR``: EXIF orientation applied, alpha dropped, gray replicated, 16-bit scaled
to 8 bits.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

ImageLike = np.ndarray | str | Path

# The one list of image file suffixes: what a folder or glob is searched for.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm")
# Default pixel limit (width x height) of one image; 50 MP holds an 8K frame (33 MP) with room to spare.
MAX_PIXELS = 50_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageTooLarge(ValueError):
    """The image has more pixels than the limit (the server answers 413)."""


class ImageHeader(NamedTuple):
    """What the header says, before decoding: stored width and height, and the EXIF orientation (1..8)."""

    width: int
    height: int
    orientation: int

    @property
    def upright_hw(self) -> tuple[int, int]:
        """(height, width) once the EXIF orientation is applied (5..8 turn the image by 90 degrees)."""
        return (self.width, self.height) if self.orientation in (5, 6, 7, 8) else (self.height, self.width)


def image_format(data: bytes) -> str | None:
    """"jpeg", "png", "bmp", "webp", "tiff" from the file's magic bytes; None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def _check_jpeg(data: bytes) -> str | None:
    # Markers cannot occur inside entropy-coded data (0xFF is stuffed as FF 00), so a complete file has an
    # end-of-image marker (FF D9) after its last start-of-scan (FF DA); trailing bytes after EOI are allowed.
    if data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    sos = data.rfind(b"\xff\xda")
    if sos < 0:
        return f"not an image: truncated or corrupt JPEG (no image data in its {len(data)} bytes)"
    if data.find(b"\xff\xd9", sos + 2) < 0:
        return f"truncated JPEG: no end-of-image marker after the last scan (the file ends after {len(data)} bytes)"
    return None


def _check_png(data: bytes) -> str | None:
    pos, size = 8, len(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF:
            return f"corrupt PNG: chunk at byte {pos} declares an impossible length {length}"
        if end > size:
            return (f"truncated PNG: chunk {kind.decode('latin-1')!r} at byte {pos} needs {end} bytes, "
                    f"the file has {size}")
        crc = int.from_bytes(data[end - 4:end], "big")
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            return f"corrupt PNG: chunk {kind.decode('latin-1')!r} at byte {pos} fails its CRC check"
        if kind == b"IEND":
            return None
        pos = end
    return f"truncated PNG: no IEND chunk (the file ends after {size} bytes)"


def _check_declared_size(data: bytes, kind: str) -> str | None:
    if kind == "bmp" and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
    elif kind == "webp" and len(data) >= 8:
        declared = int.from_bytes(data[4:8], "little") + 8
    else:
        return None
    if len(data) < declared:
        return f"truncated {kind.upper()}: the header declares {declared} bytes, the file has {len(data)}"
    return None


def check_image_bytes(data: bytes, source: str | Path) -> None:
    """Raise ``ValueError("<source>: truncated ...")`` when an encoded image is visibly incomplete or corrupt.

    Formats without a completeness rule here (TIFF, PNM, JPEG 2000, ...) pass; their decoder decides.
    """
    if not data:
        raise ValueError(f"{source}: empty file (0 bytes), not an image")
    kind = image_format(data)
    problem = None
    if kind == "jpeg":
        problem = _check_jpeg(data)
    elif kind == "png":
        problem = _check_png(data)
    elif kind in ("bmp", "webp"):
        problem = _check_declared_size(data, kind)
    if problem is not None:
        raise ValueError(f"{source}: {problem}")


def image_header(data: bytes) -> ImageHeader | None:
    """Width, height and EXIF orientation from the header alone (no pixel is decoded); None where the header
    cannot be read (a format PIL does not know: OpenCV's decode decides)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            try:
                orientation = int(im.getexif().get(0x0112, 1))
            except Exception:  # noqa: BLE001 - a malformed EXIF block: PIL raises assorted types; OpenCV ignores it
                orientation = 1
    except Image.DecompressionBombError:  # PIL's own limit is far above ours: report the size as over it
        return ImageHeader(2**31 - 1, 1, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return ImageHeader(width, height, orientation if 1 <= orientation <= 8 else 1)


def _check_pixels(width: int, height: int, max_pixels: int, source: str | Path) -> None:
    if max_pixels and width * height > max_pixels:
        raise ImageTooLarge(f"{source}: {width}x{height} pixels is more than the limit of {max_pixels:,}")


def decode_image(data: bytes, source: str | Path, *, max_pixels: int = MAX_PIXELS, orientation: bool = True,
                 reduce: int = 1) -> np.ndarray:
    """The one decode: encoded bytes -> HxWx3 uint8 BGR.

    Args:
        data: the file's bytes (JPEG, PNG, BMP, TIFF, WebP, JPEG 2000, PNM).
        source: the file, URI or upload the bytes came from; every error message starts with it.
        max_pixels: refuse images with more pixels (:class:`ImageTooLarge`, checked from the header first);
            0: no limit.
        orientation: apply the EXIF orientation (the default, as photo viewers and annotation tools show it).
        reduce: 1, 2, 4 or 8: decode at 1/reduce of the size (JPEG decodes scaled, cheaply; a quick full check
            of the data, as the training pre-flight does).

    Raises ``ValueError`` naming the source for an empty, truncated, corrupt or unsupported image, and
    :class:`ImageTooLarge` (a ``ValueError``) over the pixel limit.
    """
    check_image_bytes(data, source)
    header = image_header(data)
    if header is not None:
        _check_pixels(header.width, header.height, max_pixels, source)
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}.get(reduce)
    if flags is None:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
    if not orientation:
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:  # e.g. a header declaring more pixels than OpenCV allows
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{source}: not an image OpenCV can decode ({message})") from None
    if array is None or array.size == 0:
        raise ValueError(f"{source}: not an image OpenCV can read (corrupt or unsupported format)")
    if header is None:  # the header was unknown to PIL: the decoded size decides
        _check_pixels(array.shape[1] * reduce, array.shape[0] * reduce, max_pixels, source)
    return array


def is_uri(location: str) -> bool:
    """``scheme://...`` other than a Windows drive letter; such locations are opened through fsspec."""
    head, sep, _ = str(location).partition("://")
    return bool(sep) and head.isidentifier() and len(head) > 1


def open_uri(uri: str):  # noqa: ANN201 - fsspec types are optional
    """``(filesystem, path)`` of an fsspec URI; one error naming the URI when fsspec or its scheme is missing."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with the ray extra
        raise ValueError(f"{uri}: URIs need fsspec (pip install 'isseg[ray]')") from None
    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"{uri}: cannot open this URI ({exc})") from None


def read_bytes(location: str | Path) -> bytes:
    """The bytes of a local file or an fsspec URI. ``FileNotFoundError`` for a missing file, ``ValueError`` for
    a folder, ``OSError`` naming the file when it cannot be read (permissions, I/O)."""
    if isinstance(location, str) and is_uri(location):
        fs, path = open_uri(location)
        try:
            with fs.open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {location}") from None
        except OSError as exc:
            raise OSError(f"{location}: cannot read the file ({exc.strerror or exc})") from None
    path = Path(location)
    if not path.is_file():
        if path.is_dir():
            raise ValueError(f"{path}: is a folder, expected an image file")
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OSError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def read_image_file(location: str | Path, *, max_pixels: int = MAX_PIXELS, orientation: bool = True,
                    reduce: int = 1) -> np.ndarray:
    """:func:`decode_image` of a local file or fsspec URI (errors as :func:`read_bytes` and
    :func:`decode_image`, each naming it)."""
    return decode_image(read_bytes(location), location, max_pixels=max_pixels, orientation=orientation,
                        reduce=reduce)


def read_image(image: ImageLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An HxWx3 uint8 BGR array from a BGR array, an HxW grayscale array or an image file path / URI.

    Anything else (RGBA, float, empty, wrong ndim, unreadable or truncated file) is a ValueError /
    FileNotFoundError that says what was expected.
    """
    if isinstance(image, str | Path):
        return read_image_file(image, max_pixels=max_pixels)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an HxWx3 uint8 BGR numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (0..255), got dtype {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        raise ValueError("expected an HxWx3 BGR image, got RGBA/BGRA (4 channels): drop alpha first, e.g. img[..., :3]")
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR or HxW grayscale image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    return image
