"""Helpers for comparing isseg with torchvision: a seeded torchvision Mask R-CNN whose random weights give
realistic detections (non-trivial frozen-BN statistics, a classifier bias that passes the threshold)."""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.ops import FrozenBatchNorm2d

from isseg.config import COCO_CATEGORY_IDS


def _freeze_bn(module: torch.nn.Module) -> None:
    """Swap BatchNorm2d for FrozenBatchNorm2d, as torchvision does when it loads COCO weights (v1)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            _freeze_bn(child)


@torch.no_grad()
def seeded_torchvision(version: int, seed: int = 0, num_classes: int = 91, frozen_bn: bool = True) -> torch.nn.Module:
    """``frozen_bn=False`` keeps v1's BatchNorm2d (with ``num_batches_tracked``), as a model trained from scratch
    (``weights=None, weights_backbone=None``) has it."""
    torch.manual_seed(seed)
    builder = maskrcnn_resnet50_fpn if version == 1 else maskrcnn_resnet50_fpn_v2
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    if version == 1 and frozen_bn:
        _freeze_bn(model.backbone.body)
    cls = model.roi_heads.box_predictor.cls_score
    bias = torch.randn(num_classes, generator=g) * 1.5 + 1.0
    bias[0] = -1.0  # background
    if num_classes == 91:  # the 11 unused COCO slots never win, as in the published checkpoints
        unused = sorted(set(range(1, 91)) - set(COCO_CATEGORY_IDS))
        bias[unused] = -30.0
    cls.bias.copy_(bias)
    cls.weight.mul_(0.1)
    return model.eval()


@torch.no_grad()
def torchvision_predict(model: torch.nn.Module, image_bgr: np.ndarray) -> dict[str, np.ndarray]:
    rgb = torchvision.transforms.functional.to_tensor(image_bgr[:, :, ::-1].copy())
    out = model([rgb])[0]
    return {
        "boxes": out["boxes"].numpy(),
        "scores": out["scores"].numpy(),
        "labels": out["labels"].numpy(),
        "masks": (out["masks"][:, 0] > 0.5).numpy(),
    }


def tv_label_to_isseg(labels: np.ndarray, num_slots: int) -> np.ndarray:
    if num_slots == 91:
        lookup = {cid: i for i, cid in enumerate(COCO_CATEGORY_IDS)}
        return np.array([lookup[int(x)] for x in labels], dtype=np.int64)
    return labels.astype(np.int64) - 1
