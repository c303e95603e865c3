"""The one place where user images are checked: the model and every deploy backend accept the same inputs.

Files are read as bytes and checked for completeness before they are decoded: OpenCV decodes a truncated JPEG
as if it were whole (grey bottom rows) and its libjpeg / libpng warnings go to the C stderr, where they cannot
be caught or attributed to a file. :func:`check_image_bytes` finds the truncation itself (JPEG: an
end-of-image marker after the last scan; PNG: the chunk walk reaches IEND and every chunk's CRC holds; BMP /
WebP: the size their header declares), so a bad file is one ``ValueError`` that names it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

ImageLike = np.ndarray | str | Path

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def check_image_bytes(data: bytes, path: str | Path) -> None:
    """Raise ``ValueError("<path>: truncated ...")`` when an encoded image is visibly incomplete or corrupt.

    Formats without a completeness rule here (TIFF, PNM, JPEG 2000, ...) pass; their decoder decides.
    """
    if not data:
        raise ValueError(f"{path}: empty file (0 bytes), not an image")
    kind = image_format(data)
    problem = None
    if kind == "jpeg":
        problem = _check_jpeg(data)
    elif kind == "png":
        problem = _check_png(data)
    elif kind in ("bmp", "webp"):
        problem = _check_declared_size(data, kind)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")


def read_image_file(path: str | Path) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 BGR (EXIF orientation applied, as ``cv2.imread``).

    ``FileNotFoundError`` for a missing file; ``ValueError`` naming the file for an empty, truncated, corrupt
    or unsupported one; ``OSError`` naming it when it cannot be read (permissions, a folder).
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ValueError(f"{path}: is a folder, expected an image file")
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OSError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    check_image_bytes(data, path)
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header declaring more pixels than OpenCV allows
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not an image OpenCV can decode ({message})") from None
    if array is None or array.size == 0:
        raise ValueError(f"{path}: not an image OpenCV can read (corrupt or unsupported format)")
    return array


def read_image(image: ImageLike) -> np.ndarray:
    """An HxWx3 uint8 BGR array from a BGR array, an HxW grayscale array or an image file path.

    Anything else (RGBA, float, empty, wrong ndim, unreadable or truncated file) is a ValueError /
    FileNotFoundError that says what was expected.
    """
    if isinstance(image, str | Path):
        return read_image_file(image)
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
