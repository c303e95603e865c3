"""The explain outputs of an exported model (``isseg export --explain``), computed in the graph after the contract's
three outputs: ``saliency_map`` and ``feature_vector``, the two names OpenVINO Model API's instance segmentation
wrapper recognises (it keeps them out of its labels / boxes / masks detection and returns ``feature_vector`` as
``result.feature_vector``; its ``result.saliency_map`` it computes itself from the masks it pastes).

- ``saliency_map`` uint8 ``[1, K, ceil(H / 8), ceil(W / 8)]``: per class, the mean over the class's detections
  scoring at least ``min_score`` (an export's confidence threshold: what Model API shows) of score x mask
  probability, each 28x28 mask resampled into its box on a grid of stride 8 over the network
  input (zero outside the box), then scaled to 0..255 per class (min to max; a class without detections is
  all 0). It is the score-weighted-mask map of OpenVINO Training Extensions, on the network input (for a
  "fit" preset the letterboxed canvas, padding included).
- ``feature_vector`` float32 ``[1, 5 * C]``: the spatial mean of each FPN level P2..P6 (C channels each),
  concatenated: one embedding per image, to find near-duplicates and outliers in a dataset.

:class:`ExplainModule` wraps :class:`isseg.deploy.graph.ExportModule` (the contract's graph, unchanged) and
reads the pyramid through a forward hook on the backbone, so the backbone runs once; the same module run
eagerly gives :mod:`isseg.explain` its class maps, so the exported and the Python maps are one function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isseg.deploy.graph import ExportModule

EXPLAIN_OUTPUT_NAMES = ("saliency_map", "feature_vector")
SALIENCY_STRIDE = 8


def paste_on_grid(boxes: Tensor, masks: Tensor, height: Tensor | int, width: Tensor | int, stride: int) -> Tensor:
    """Masks ``[D, M, M]`` (probabilities inside their ``boxes`` ``[D, 4]``, input pixels) -> ``[D, h, w]`` on the
    grid of cell centres ``(i + 0.5) * stride`` over an input of ``height`` x ``width``; 0 outside each box.
    Traceable (``GridSample``); the grid size follows the traced input size."""
    h = (height + stride - 1) // stride
    w = (width + stride - 1) // stride
    ys = (torch.arange(h, dtype=torch.float32, device=boxes.device) + 0.5) * stride  # type: ignore[arg-type]
    xs = (torch.arange(w, dtype=torch.float32, device=boxes.device) + 0.5) * stride  # type: ignore[arg-type]
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))
    u = 2 * (xs[None, :] - x1) / (x2 - x1).clamp(min=1e-3) - 1  # [D, w]; -1 and 1 are the box edges
    v = 2 * (ys[None, :] - y1) / (y2 - y1).clamp(min=1e-3) - 1  # [D, h]
    d = boxes.shape[0]
    grid = torch.stack([u[:, None, :].expand(d, v.shape[1], u.shape[1]),
                        v[:, :, None].expand(d, v.shape[1], u.shape[1])], dim=-1)  # [D, h, w, 2]
    pasted = F.grid_sample(masks[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return pasted[:, 0]


def class_saliency(boxes5: Tensor, labels: Tensor, masks: Tensor, num_classes: int, height: Tensor | int,
                   width: Tensor | int, stride: int = SALIENCY_STRIDE, min_score: float = 0.0) -> Tensor:
    """The contract's outputs (``boxes5`` ``[N, 5]`` with the score last, ``labels`` ``[N]``, ``masks``
    ``[N, M, M]``; padding rows have score 0) -> float32 ``[K, h, w]`` in 0..1: per class, the mean of score x
    mask over its detections scoring >= ``min_score``, min-max scaled (0 where a class has none)."""
    scores = boxes5[:, 4]
    present = ((scores > 0) & (scores >= min_score)).float()
    onehot = F.one_hot(labels.long(), num_classes).float() * present[:, None]  # [N, K]
    pasted = paste_on_grid(boxes5[:, :4], masks, height, width, stride)  # [N, h, w]
    n, h, w = pasted.shape
    total = (onehot * scores[:, None]).t() @ pasted.reshape(n, h * w)  # [K, h*w]
    mean = total / onehot.sum(0).clamp(min=1.0)[:, None]
    low = mean.min(dim=1, keepdim=True).values
    span = mean.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (mean - low) / span.clamp(min=1e-12), torch.zeros_like(mean))
    return scaled.reshape(num_classes, h, w)


class ExplainModule(nn.Module):
    """The contract's graph plus ``saliency_map`` and ``feature_vector`` (see the module docstring)."""

    def __init__(self, model: nn.Module, min_score: float = 0.0, stride: int = SALIENCY_STRIDE) -> None:
        super().__init__()
        self.contract = ExportModule(model)
        self.num_classes = int(model.config.num_classes)  # type: ignore[union-attr]
        self.min_score = float(min_score)
        self.stride = int(stride)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        captured: list[list[Tensor]] = []
        hook = self.contract.model.backbone.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            labels, boxes, masks = self.contract(image)
        finally:
            hook.remove()
        pyramid = captured[0]
        feature_vector = torch.cat([level.float().mean(dim=(2, 3)) for level in pyramid], dim=1)
        height, width = image.shape[-2], image.shape[-1]
        maps = class_saliency(boxes, labels, masks, self.num_classes, height, width, self.stride, self.min_score)
        saliency = torch.floor(maps * 255 + 0.5).to(torch.uint8)[None]
        return labels, boxes, masks, saliency, feature_vector
