"""Per-detection explanation by gradients: which places of the image raised one detection's score.

A detection's score is the box head's softmax probability of its class for the one proposal that produced it
(RoIAlign of that proposal on the pyramid -> box head). Its gradient with respect to the activations ``A`` of a
backbone stage (``c2`` .. ``c5``: ResNet stages 1-4, strides 4-32), multiplied by those activations and keeping
the positive part, ``relu(sum_c relu(dS/dA_c) * A_c)`` (the LayerCAM rule: Jiang et al., IEEE TIP 2021), is a
first-order estimate of how much each place contributed to raising that score. Unlike Grad-CAM's channel
weights (averaged over the whole map), it stays specific to the detection: places whose features the
detection's RoI cannot see (through RoIAlign, the FPN and the stages above the chosen one) get exactly 0.

The proposal is found again by recomputing every proposal's class scores and decoded boxes exactly as
inference does (same modules, same order) and taking the one that matches the detection's score and box; the
score then recomputed with gradients equals the detection's score (``recomputed`` in the result; the tests
check it). Only the matched proposals go through the box head with gradients, so each detection costs one
backward pass through its RoI, the FPN and the stages above ``layer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from isseg.model.box_coder import clip_boxes
from isseg.model.roi_heads import rois_of

LAYERS = {"c2": ("layer1", 4), "c3": ("layer2", 8), "c4": ("layer3", 16), "c5": ("layer4", 32)}


@dataclass
class GradientMaps:
    """``maps`` float32 [D, h, w] (>= 0) on the grid of ``stride`` over the padded network input;
    ``recomputed`` [D] the scores the gradients are of; ``mismatch`` [D] how far the matched proposal's
    recomputed (score, box) lay from the detection's (0 up to float rounding)."""

    maps: Tensor
    stride: int
    recomputed: Tensor
    mismatch: Tensor


def _match_proposals(model: nn.Module, features: list[Tensor], proposals: Tensor, size: tuple[int, int],
                     boxes: Tensor, labels: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Index into ``proposals`` [R, 4] of the proposal behind each detection, and the match error."""
    heads = model.roi_heads
    rois = rois_of([proposals])
    pooled, order = heads.box_roi_pool(features[:4], rois)
    cand_scores, cand_boxes = heads.decode_predictions(*heads.box_predictor(heads.box_head(pooled)), rois[order, 1:])
    cand_boxes = clip_boxes(cand_boxes, *size)  # [R, K, 4], as postprocess_detections clips them
    s = cand_scores[:, labels].t()  # [D, R]
    b = cand_boxes[:, labels].permute(1, 0, 2)  # [D, R, 4]
    err = (s - scores[:, None]).abs() + (b - boxes[:, None]).abs().amax(-1) / max(size)
    best = err.argmin(1)
    return order[best], err.gather(1, best[:, None])[:, 0]


def detection_gradients(model: nn.Module, image: Tensor, boxes: Tensor, labels: Tensor, scores: Tensor,
                        layer: str = "c4") -> GradientMaps:
    """Gradient maps of detections of one network input.

    ``image`` float32 [1, 3, H, W] BGR 0..255 (the preset's pre-processed input, as the exported graph takes
    it); ``boxes`` [D, 4] (input pixels), ``labels`` [D], ``scores`` [D]: detections the model gave for that
    input (``ExportModule`` / ``MaskRCNN.infer`` rows). ``layer``: ``c2`` .. ``c5`` (see the module docstring).
    """
    if layer not in LAYERS:
        raise ValueError(f"layer {layer!r}: expected one of {sorted(LAYERS)}")
    name, stride = LAYERS[layer]
    if boxes.shape[0] == 0:
        div = int(model.config.input.size_divisor)
        h, w = (-(-int(s) // div) * div // stride for s in image.shape[-2:])
        none = image.new_zeros(0)
        return GradientMaps(image.new_zeros((0, h, w)), stride, none, none)
    target = getattr(model.backbone.body, name)
    captured: list[Tensor] = []

    def leaf(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor:
        output = output.detach().requires_grad_(True)  # gradients stop here: nothing below is computed
        captured.append(output)
        return output

    hook = target.register_forward_hook(leaf)
    try:
        with torch.enable_grad():
            x = model.transform.pad(model.transform.normalize(image))
            size = (int(image.shape[-2]), int(image.shape[-1]))
            features = model.backbone(x)
            with torch.no_grad():
                proposals, _ = model.rpn([f.detach() for f in features], (x.shape[-2], x.shape[-1]), [size])
                index, mismatch = _match_proposals(model, [f.detach() for f in features], proposals[0], size,
                                                   boxes, labels, scores)
            heads = model.roi_heads
            pooled, order = heads.box_roi_pool(features[:4], rois_of([proposals[0][index]]))
            probs, _ = heads.decode_predictions(*heads.box_predictor(heads.box_head(pooled)),
                                                proposals[0][index][order])
            own = torch.empty_like(order)
            own[order] = torch.arange(order.numel(), device=order.device)
            recomputed = probs[own, labels]  # [D]: row i of the pooled batch is detection order[i]
            activations = captured[0]
            maps = []
            for d in range(int(recomputed.shape[0])):
                (grad,) = torch.autograd.grad(recomputed[d], activations, retain_graph=True)
                maps.append(torch.relu((torch.relu(grad) * activations).sum(1))[0].detach())
    finally:
        hook.remove()
    return GradientMaps(torch.stack(maps).float(), stride, recomputed.detach().float(), mismatch.float())
