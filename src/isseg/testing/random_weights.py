"""Seeded random-weight models that behave like trained ones, for tests and benchmarks without weights.

A freshly initialized Mask R-CNN gives either no detections (the classifier starts at background) or
degenerate ones (all boxes equal, all scores equal). ``realistic_random_model`` makes the work realistic:

- frozen-BN statistics are calibrated on a real (or synthetic) image, layer by layer, so activations have
  the scale of a trained network (data-dependent initialization);
- the classifier's weights are scaled to give logits with a spread across proposals, and its biases put
  a realistic share of the ~1000 proposals above the 0.05 score threshold (so NMS, the top-100 selection
  and the mask head all have real work, and some scores pass 0.5);
- box regression gets small but non-zero deltas;
- mask logits are scaled to a spread of a few units, so masks are partial with clear borders.

The result is deterministic for a seed. Its detections are of course meaningless.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def demo_image(seed: int, size: tuple[int, int] = (768, 1024)) -> np.ndarray:
    """A deterministic BGR image with some structure (blobs and gradients)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        img[..., c] = 60 + 40 * np.sin(xx / (37 + 11 * c)) + 40 * np.cos(yy / (23 + 7 * c))
    for _ in range(25):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(20, 160)
        color = rng.uniform(0, 255, 3)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        img[m] = 0.4 * img[m] + 0.6 * color
    return np.clip(img, 0, 255).astype(np.uint8)


@torch.no_grad()
def realistic_random_model(preset: str = "security-0002", seed: int = 0, image: np.ndarray | None = None,
                           num_classes: int | None = None) -> nn.Module:
    """``isseg.build_model(preset)`` with seeded weights calibrated as described in the module docstring."""
    from isseg.model.backbone import FrozenBatchNorm2d
    from isseg.model.mask_rcnn import build_model, to_image_tensor

    torch.manual_seed(seed)
    model = build_model(preset, num_classes=num_classes).eval()
    g = torch.Generator().manual_seed(seed + 1)
    img = demo_image(seed) if image is None else image
    x = model.transform.normalize(to_image_tensor(img))[None]  # calibrated at the image's own size

    # 1. normalization statistics from the data, layer by layer, in execution order
    def calibrate(module: nn.Module, args: tuple) -> None:
        t = args[0]
        module.running_mean.copy_(t.mean((0, 2, 3)))
        module.running_var.copy_(t.var((0, 2, 3)) + 1e-3)
        if isinstance(module, FrozenBatchNorm2d):
            module.weight.copy_(torch.rand(t.shape[1], generator=g) * 0.5 + 0.5)
            module.bias.copy_(torch.randn(t.shape[1], generator=g) * 0.1)

    handles = [m.register_forward_pre_hook(calibrate) for m in model.modules()
               if isinstance(m, FrozenBatchNorm2d | nn.BatchNorm2d)]
    features = model.backbone(x)
    for h in handles:
        h.remove()

    # 2. classifier: logits with a spread across proposals, biases giving some confident detections
    heads = model.roi_heads
    size = (int(x.shape[2]), int(x.shape[3]))
    proposals, _ = model.rpn(features, size, [size])
    f = heads.box_head(heads.box_roi_pool.in_order(features[:4], proposals))
    k = heads.num_classes
    mu = f.mean(0)
    spread = float((f - mu).pow(2).sum(1).mean().sqrt()) + 1e-6
    cls = heads.box_predictor.cls_score
    w = torch.randn(cls.weight.shape, generator=g) * (0.6 / spread)
    cls.weight.copy_(w - (w @ mu[:, None]) * mu[None] / (mu.pow(2).sum() + 1e-6))  # no common offset
    bias = torch.randn(k + 1, generator=g) - 1.5
    bias[:k][torch.randperm(k, generator=g)[: max(1, k // 8)]] += 3.0  # a few frequent classes
    bias[k] = 1.0  # background
    cls.bias.copy_(bias)
    box = heads.box_predictor.bbox_pred
    box.weight.copy_(torch.randn(box.weight.shape, generator=g) * (0.3 / spread))
    box.bias.zero_()

    # 3. mask logits with a spread of a few units around 0: partial masks with clear borders, so that a mask
    # pixel is seldom within float rounding of the 0.5 threshold (untrained, every probability is ~0.5)
    rois = proposals[0][:64]
    if rois.shape[0]:
        logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool.in_order(features[:4], [rois])))
        std = float(logits.std()) + 1e-6
        fcn = heads.mask_predictor.mask_fcn_logits
        fcn.weight.mul_(4.0 / std)
        # per-class offsets of 0.5..2 logits off zero: where the head's features vanish (ReLU), a mask is constant,
        # and a constant at exactly 0.5 would make the whole mask a tie at the threshold
        sign = torch.where(torch.rand(fcn.bias.shape, generator=g) < 0.5, -1.0, 1.0)
        offset = sign * (0.5 + 1.5 * torch.rand(fcn.bias.shape, generator=g))
        fcn.bias.copy_(-logits.mean((0, 2, 3)) * (4.0 / std) + offset)
    return model
