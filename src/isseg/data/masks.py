"""Instance masks in COCO's encodings: polygons, RLE (compressed and uncompressed) and dense arrays.

Everything goes through ``pycocotools.mask`` so that a mask rasterized here is pixel-identical to the one
the COCO evaluator builds from the same annotation (a hand-written polygon fill would differ by a pixel
along edges and shift mask AP).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from isseg.model.masks import InstanceMasks

Polygons = Sequence[Sequence[float]]

# pycocotools wheels built against NumPy 1 warn on every decode under NumPy 2; the result is correct.
_NUMPY2_COPY_WARNING = "__array__ implementation doesn't accept a copy keyword"


def decode(rle: dict[str, Any]) -> np.ndarray:
    """Compressed RLE -> ``uint8 [H, W]`` (``pycocotools.mask.decode`` without its NumPy 2 warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NUMPY2_COPY_WARNING, category=DeprecationWarning)
        return mask_utils.decode(rle)


def polygons_to_rle(polygons: Polygons, height: int, width: int) -> dict[str, Any]:
    """Rasterize COCO polygons (``[[x1, y1, x2, y2, ...], ...]``, the parts of one object) to one
    compressed RLE (``counts`` as bytes, as pycocotools returns it)."""
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return mask_utils.merge(rles)


def polygons_to_mask(polygons: Polygons, height: int, width: int) -> np.ndarray:
    """COCO polygons of one object -> ``uint8 [H, W]`` 0/1 mask."""
    return decode(polygons_to_rle(polygons, height, width))


def rle_to_compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """Any COCO RLE -> compressed RLE (``counts`` bytes). Uncompressed RLE (``counts`` a list of run
    lengths, as COCO stores crowd regions) is compressed; a ``str`` ``counts`` (from JSON) is encoded."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed or uncompressed) -> ``uint8 [H, W]`` 0/1 mask, ``(H, W) = rle["size"]``."""
    return decode(rle_to_compressed(rle))


def segmentation_to_rle(segmentation: Polygons | dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """A COCO ``segmentation`` field (polygons or RLE) -> compressed RLE, as pycocotools' ``annToRLE``."""
    if isinstance(segmentation, dict):
        return rle_to_compressed(segmentation)
    return polygons_to_rle(segmentation, height, width)


def segmentation_to_mask(segmentation: Polygons | dict[str, Any], height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` field -> ``uint8 [H, W]`` 0/1 mask; what pycocotools' ``annToMask`` does."""
    return decode(segmentation_to_rle(segmentation, height, width))


def masks_to_rles(masks: np.ndarray | InstanceMasks) -> list[dict[str, Any]]:
    """Binary masks ``[N, H, W]`` (bool, or numbers where non-zero is the object; or an :class:`InstanceMasks`,
    encoded from its crops without an image-size array) -> N compressed RLEs with ``counts`` as ``str``, ready
    for ``json.dump`` (the form COCO result files use)."""
    if isinstance(masks, InstanceMasks):
        h, w = masks.image_size
        rles = [mask_utils.frPyObjects({"size": [h, w], "counts": masks.rle_counts(i)}, h, w)
                for i in range(len(masks))]
        return [{"size": [h, w], "counts": r["counts"].decode("ascii")} for r in rles]
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape [N, H, W], got {masks.shape}")
    if masks.shape[0] == 0:
        return []
    binary = masks if masks.dtype == np.bool_ else masks != 0
    fortran = np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8))
    rles = mask_utils.encode(fortran)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """One binary mask ``[H, W]`` -> compressed RLE with ``counts`` as ``str`` (JSON-ready)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape [H, W], got {mask.shape}")
    return masks_to_rles(mask[None])[0]


def rle_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels of an RLE."""
    return int(mask_utils.area(rle_to_compressed(rle)))


def rle_to_bbox(rle: dict[str, Any]) -> list[float]:
    """``[x, y, w, h]`` box of an RLE (pycocotools' ``toBbox``: pixel edges, ``w = x_max + 1 - x_min``)."""
    return [float(v) for v in mask_utils.toBbox(rle_to_compressed(rle))]
