"""``explain_image``: what a model looked at in one image, per class and per detection (docs/explain.md).

    from isseg.explain import explain_image, save_explanation
    expl = explain_image(model, "photo.jpg", method="grad")      # model: a MaskRCNN in eval mode
    save_explanation(expl, "photo.jpg", "explained/")            # pictures over the image

The class maps are the exported ``saliency_map`` (:mod:`isseg.explain.graph`: the same module, run eagerly) and
the feature vector the exported ``feature_vector``; the per-detection maps come from gradients
(:mod:`isseg.explain.gradient`, ``method="grad"``) or from masking (:mod:`isseg.explain.drise`,
``method="drise"``). Every map is float32 in 0..1 at the image's own size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from isseg.explain.graph import SALIENCY_STRIDE, ExplainModule
from isseg.model.box_coder import clip_boxes
from isseg.model.detections import Detections
from isseg.model.postprocess import boxes_to_original, to_detections
from isseg.model.transform import network_input
from isseg.sources.decode import read_image

METHODS = ("grad", "drise", "none")


@dataclass
class Explanation:
    """One image explained. ``detections``: those at or above the threshold (image pixels, best first);
    ``class_maps``: class name -> float32 [H, W] in 0..1 for each class among them (as the exported
    ``saliency_map``); ``detection_maps``: float32 [E, H, W] in 0..1, the map of ``detections[i]`` for the
    first E = min(D, max_detections) (None for method "none"); ``feature_vector``: float32 [5 * C];
    ``seconds``: time of each step."""

    detections: Detections
    class_maps: dict[str, np.ndarray]
    detection_maps: np.ndarray | None
    feature_vector: np.ndarray
    method: str
    seconds: dict[str, float] = field(default_factory=dict)


def grid_to_image(grid: np.ndarray, stride: int, content_size: tuple[int, int],
                  original_size: tuple[int, int]) -> np.ndarray:
    """A map on a grid of cells ``stride`` px wide over the network input [h, w] -> float32 at the original
    image's size [H, W]: upsampled to input pixels, cropped to the image inside the input (a letterbox's
    padding goes), resized to the image."""
    grid = np.asarray(grid, np.float32)
    full = cv2.resize(grid, (grid.shape[1] * stride, grid.shape[0] * stride), interpolation=cv2.INTER_LINEAR)
    content = full[: content_size[0], : content_size[1]]
    return cv2.resize(content, (original_size[1], original_size[0]), interpolation=cv2.INTER_LINEAR)


def _unit(maps: np.ndarray) -> np.ndarray:
    """Each map [..., H, W] scaled to 0..1 by its maximum (all-zero maps stay 0)."""
    peak = maps.reshape(len(maps), -1).max(1) if len(maps) else np.zeros(0)
    return (maps / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)


def _selected_rows(boxes5: torch.Tensor, content: tuple[int, int], original: tuple[int, int], threshold: float
                   ) -> torch.Tensor:
    """Network rows of the detections: score >= threshold and a non-empty box in the image, best first."""
    scores = boxes5[:, 4]
    mapped = clip_boxes(boxes_to_original(boxes5[:, :4].float(), content, original), *original)
    nonempty = (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
    rows = torch.nonzero((scores > 0) & (scores >= threshold) & nonempty).squeeze(1)
    return rows[torch.argsort(-scores[rows], stable=True)]


def explain_image(model: nn.Module, image: np.ndarray | str | Path, method: str = "grad", threshold: float = 0.5,
                  max_detections: int = 10, layer: str = "c4", num_masks: int = 500, cells: int = 16,
                  seed: int = 0) -> Explanation:
    """Explain ``model``'s detections in ``image`` (BGR uint8 [H, W, 3], gray, or a file path).

    ``threshold``: the detections explained (class maps); the best ``max_detections`` of them also get a
    per-detection map. ``method``: "grad" (gradients at backbone stage ``layer``, ``c2`` .. ``c5``), "drise"
    (``num_masks`` masked inferences over a ``cells`` x ``cells`` grid, ``seed``) or "none" (class maps and
    the feature vector only).
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {METHODS}")
    if not 0.0 <= threshold <= 1.0 or max_detections < 1:
        raise ValueError(f"threshold must be in [0, 1] and max_detections >= 1, got {threshold}, {max_detections}")
    cfg = model.config  # type: ignore[attr-defined]
    array = read_image(image)
    x, prepared = network_input(array, cfg.input)
    device = next(model.parameters()).device
    xt = torch.from_numpy(x).to(device)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        labels, boxes5, masks, saliency, features = ExplainModule(model.eval(), threshold).eval()(xt)
    seconds["forward"] = time.perf_counter() - t0
    content, original = prepared.content_size, prepared.original_size
    rows = _selected_rows(boxes5.cpu(), content, original, threshold).to(device)
    det = to_detections(boxes5[rows, :4], boxes5[rows, 4], labels[rows], masks[rows], content, original, cfg.roi,
                        tuple(cfg.class_names))
    sal = saliency[0].cpu().numpy().astype(np.float32) / 255.0
    class_maps = {cfg.class_names[k]: grid_to_image(sal[k], SALIENCY_STRIDE, content, original)
                  for k in sorted({int(k) for k in det.labels})}
    t1 = time.perf_counter()
    maps = None
    top, det_top = rows[:max_detections], det.filter(np.arange(min(len(det), max_detections)))
    if method == "grad":
        from isseg.explain.gradient import detection_gradients

        g = detection_gradients(model, xt, boxes5[top, :4], labels[top], boxes5[top, 4], layer)
        maps = _unit(np.stack([grid_to_image(m, g.stride, content, original) for m in g.maps.cpu().numpy()])
                     if len(top) else np.zeros((0, *original), np.float32))
    elif method == "drise":
        from isseg.explain.drise import drise_maps

        with torch.no_grad():
            maps = _unit(drise_maps(model.predict, array, det_top, num_masks, cells, seed=seed))
    seconds[method] = time.perf_counter() - t1
    return Explanation(det, class_maps, maps, features[0].float().cpu().numpy(), method, seconds)
