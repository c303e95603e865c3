"""The training images of a COCO dataset: decoding each file (through :mod:`isseg.sources.decode`, the one
decoder) against the size its annotations were drawn on, and the pre-flight that checks every file before
training starts.

EXIF orientation: images are decoded upright (EXIF orientation applied), as detectron2's ``read_image``
and ``cv2.imread`` do and as photo viewers and annotation tools show them. The JSON's ``width``/``height``
decide when that is ambiguous: if only the stored (un-rotated) pixel grid matches them, the annotations
were evidently drawn on the stored pixels and the image is used as stored (the caller warns); if neither
matches, the image is rejected because its annotations cannot be placed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from isseg.sources.decode import ImageHeader, decode_image, image_header, read_bytes

PathLike = str | os.PathLike


def _file_bytes(path: Path) -> bytes:
    """The file's bytes; ``FileNotFoundError`` when missing, ``ValueError`` naming the file otherwise (a folder,
    no permission, an I/O error), so that callers catch the two types every bad image raises."""
    try:
        return read_bytes(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(str(exc)) from None


def _size_error(path: Path, upright_hw: tuple[int, int], stored_hw: tuple[int, int] | None,
                expected_hw: tuple[int, int]) -> ValueError:
    stored = f"{stored_hw[0]}x{stored_hw[1]} as stored" if stored_hw is not None else "as decoded"
    return ValueError(
        f"{path}: image is {upright_hw[0]}x{upright_hw[1]} (HxW, EXIF orientation applied; {stored}) but the "
        f"annotation file says {expected_hw[0]}x{expected_hw[1]}"
    )


def _use_stored(path: Path, header: ImageHeader, expected_hw: tuple[int, int] | None) -> bool:
    """Whether the annotation was drawn on the stored pixels rather than the upright image (EXIF ignored);
    ``ValueError`` when neither the upright nor the stored size is ``expected_hw``."""
    if expected_hw is None or header.upright_hw == tuple(expected_hw):
        return False
    stored_hw = (header.height, header.width)
    if stored_hw == tuple(expected_hw):
        return True
    raise _size_error(path, header.upright_hw, stored_hw, expected_hw)


def read_image_bgr(path: PathLike, expected_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, bool]:
    """Decode an image file to ``uint8 [H, W, 3]`` BGR, upright per its EXIF orientation.

    ``expected_hw``: the annotation's (height, width). When only the stored, un-rotated size matches it,
    the image is returned as stored and the second return value is True (EXIF ignored). Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for an unreadable, truncated,
    corrupt or oversized one (:func:`isseg.sources.decode.decode_image`) or a size mismatch.
    """
    path = Path(path)
    data = _file_bytes(path)
    header = image_header(data)
    exif_ignored = header is not None and _use_stored(path, header, expected_hw)
    image = decode_image(data, path, orientation=not exif_ignored)
    if expected_hw is not None and image.shape[:2] != tuple(expected_hw):
        # the header was unreadable (a format only OpenCV knows) or disagrees with the decoded pixels
        stored_hw = (header.height, header.width) if header is not None else None
        raise _size_error(path, (image.shape[0], image.shape[1]), stored_hw, expected_hw)
    return image, exif_ignored


def check_image_file(path: PathLike, expected_hw: tuple[int, int] | None = None) -> None:
    """The training pre-flight of one file: present, complete, decodable, and of the annotation's size.

    Faster than :func:`read_image_bgr`: the size comes from the header and the pixels are decoded at 1/8 scale
    (libjpeg still reads every entropy-coded byte, so truncation and broken Huffman data are found; PNGs are
    checked chunk by chunk with their CRCs and decoded in full). Raises ``FileNotFoundError`` / ``ValueError``
    naming the file.
    """
    path = Path(path)
    data = _file_bytes(path)
    header = image_header(data)
    if header is None:  # a format only OpenCV reads: its size is known once decoded in full
        read_image_bgr(path, expected_hw)
        return
    decode_image(data, path, orientation=False, reduce=8)
    _use_stored(path, header, expected_hw)


def check_image_files(
    files: Sequence[tuple[Path, tuple[int, int]]], progress: bool = False, workers: int = 4
) -> list[tuple[int, str]]:
    """``(index, reason)`` of every ``(path, expected (height, width))`` whose :func:`check_image_file` fails,
    in ``workers`` threads (the decoders release the GIL); ``progress``: a tqdm bar."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    def check(item: tuple[Path, tuple[int, int]]) -> str | None:
        try:
            check_image_file(*item)
        except (FileNotFoundError, ValueError) as exc:
            return str(exc)
        return None

    bad: list[tuple[int, str]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(
        total=len(files), desc="checking images", unit="img", disable=not progress, dynamic_ncols=True
    ) as bar:
        for i, reason in enumerate(pool.map(check, files)):
            if reason is not None:
                bad.append((i, reason))
            bar.update(1)
    return bad
