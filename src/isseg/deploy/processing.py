"""Pre- and post-processing shared by every deployment backend (numpy + OpenCV, no torch).

Preprocessing is the seed's application contract: resize to fit the network input keeping the aspect ratio
(cv2 INTER_LINEAR, size rounded as ``int(x * scale + 0.5)``), pad right/bottom with 0. Postprocessing maps
the network's ``[100, 5]`` boxes back to the original image, drops padded rows and low scores, and pastes
the 28x28 mask probabilities into full-resolution boolean masks.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from isseg.model.detections import Detections
from isseg.model.images import read_image


def fit_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the image resized to fit ``target`` = (H, W) keeping the aspect ratio (``isseg``'s "fit")."""
    th, tw = target
    scale = min(th / height, tw / width)
    return min(th, max(1, int(height * scale + 0.5))), min(tw, max(1, int(width * scale + 0.5)))


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Check an image and make it HxWx3 uint8 BGR (the model's own rules, see ``isseg.model.images``)."""
    return read_image(image)


def letterbox(image: np.ndarray, target: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """BGR uint8 image -> (``target``-sized uint8 HxWx3 canvas, (h, w) of the resized image inside it)."""
    image = as_bgr(image)
    h, w = image.shape[:2]
    nh, nw = fit_size(h, w, target)
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    if (nh, nw) == tuple(target):
        return np.ascontiguousarray(resized), (nh, nw)
    canvas = np.zeros((target[0], target[1], 3), np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, (nh, nw)


def to_nchw(canvas: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> float32 [1, 3, H, W] (the exported graph's ``image`` input)."""
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)


def paste_masks(masks: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int], method: str = "grid_sample",
                threshold: float = 0.5) -> np.ndarray:
    """[N, M, M] probabilities -> bool [N, H, W] at ``boxes`` [N, 4] (original-image pixels).

    "grid_sample" (detectron2 / mmdetection / isseg's seed preset): each pixel centre inside the box samples
    the mask bilinearly (zero outside), ``>= threshold``. "torchvision" (and Open Model Zoo / Model API):
    the mask padded by one cell is resized to the grown, integer box, ``> threshold``.
    """
    h, w = image_size
    out = np.zeros((len(masks), h, w), dtype=bool)
    for i, (mask, box) in enumerate(zip(masks, boxes)):
        if method == "torchvision":
            _paste_resize(mask.astype(np.float32), box, out[i], threshold)
        else:
            _paste_sample(mask.astype(np.float32), box, out[i], threshold)
    return out


def _paste_sample(mask: np.ndarray, box: np.ndarray, out: np.ndarray, threshold: float) -> None:
    im_h, im_w = out.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    xa, ya = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
    xb, yb = min(math.ceil(x1) + 1, im_w), min(math.ceil(y1) + 1, im_h)
    if xb <= xa or yb <= ya:
        return
    m = mask.shape[-1]
    sx = m / max(x1 - x0, 1e-6)
    sy = m / max(y1 - y0, 1e-6)
    # mask coordinate of the pixel (x, y) of the region: (x + xa + 0.5 - x0) * sx - 0.5
    affine = np.array([[sx, 0.0, (xa + 0.5 - x0) * sx - 0.5], [0.0, sy, (ya + 0.5 - y0) * sy - 0.5]])
    sampled = cv2.warpAffine(mask, affine, (xb - xa, yb - ya), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    out[ya:yb, xa:xb] = sampled >= threshold


def _paste_resize(mask: np.ndarray, box: np.ndarray, out: np.ndarray, threshold: float) -> None:
    m = mask.shape[-1]
    scale = (m + 2.0) / m
    padded = np.pad(mask, 1)
    half_w = (box[2] - box[0]) * 0.5 * scale
    half_h = (box[3] - box[1]) * 0.5 * scale
    cx, cy = (box[2] + box[0]) * 0.5, (box[3] + box[1]) * 0.5
    x0, y0, x1, y1 = (int(v) for v in (cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    resized = cv2.resize(padded, (bw, bh), interpolation=cv2.INTER_LINEAR)
    im_h, im_w = out.shape
    xa, xb = max(x0, 0), min(x1 + 1, im_w)
    ya, yb = max(y0, 0), min(y1 + 1, im_h)
    if xb > xa and yb > ya:
        out[ya:yb, xa:xb] = resized[ya - y0 : yb - y0, xa - x0 : xb - x0] > threshold


def postprocess(labels: np.ndarray, boxes5: np.ndarray, masks: np.ndarray, resized: tuple[int, int],
                original: tuple[int, int], class_names: tuple[str, ...], threshold: float = 0.0,
                mask_paste: str = "grid_sample", mask_threshold: float = 0.5, with_masks: bool = True,
                drop_empty: bool = True) -> Detections:
    """The seed's outputs for one image -> ``Detections`` in the original image's pixels.

    Rows with score 0 are padding; ``threshold`` drops detections with a lower score (``>=`` keeps);
    ``drop_empty`` drops boxes left empty by the clipping to the original image: detections that lie
    entirely in the padding of the network input (detectron2 drops them too).
    """
    labels = np.asarray(labels).reshape(-1)
    boxes5 = np.asarray(boxes5, dtype=np.float32).reshape(-1, 5)
    scores = boxes5[:, 4]
    keep = (scores > 0) & (scores >= threshold)
    order = np.argsort(-scores[keep], kind="stable")
    idx = np.nonzero(keep)[0][order]
    oh, ow = original
    rh, rw = resized
    ratio = np.array([ow / rw, oh / rh, ow / rw, oh / rh], dtype=np.float32)
    boxes = boxes5[idx, :4] * ratio
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, ow)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, oh)
    boxes = boxes.astype(np.float32)
    if drop_empty:
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        idx, boxes = idx[nonempty], boxes[nonempty]
    full = None
    if with_masks:
        full = paste_masks(np.asarray(masks)[idx], boxes, original, mask_paste, mask_threshold)
    return Detections(boxes, scores[idx].astype(np.float32), labels[idx].astype(np.int64), full,
                      tuple(class_names), (oh, ow))
