"""Parameter count and FLOPs of a Mask R-CNN, counted the way deployment sees it.

FLOPs of the second stage depend on how many RoIs are processed; like the seed's static graph we count
the full budget: ``post_nms_top_n_test`` proposals through the box head and ``detections_per_img``
detections through the mask head. One multiply-add is 2 FLOPs (torch's FlopCounterMode convention).
RoIAlign, NMS and elementwise ops are not counted (they are small and no counter agrees on them).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from isseg.model.mask_rcnn import MaskRCNN


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters and frozen-BN affine buffers (what a checkpoint of the network stores)."""
    params = sum(p.numel() for p in model.parameters())
    frozen = sum(b.numel() for name, b in model.named_buffers() if name.endswith((".weight", ".bias")))
    return params + frozen


def _flops(fn, *args) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn(*args)
    return counter.get_total_flops()


def count_flops(model: MaskRCNN, height: int = 768, width: int = 1024) -> dict[str, float]:
    """GFLOPs per part for one padded ``height`` x ``width`` input."""
    cfg = model.config
    image = torch.zeros(1, 3, height, width)
    channels = model.backbone.out_channels
    with torch.no_grad():
        feats = model.backbone(image)
    rois = cfg.rpn.post_nms_top_n_test
    dets = cfg.roi.detections_per_img
    box_in = torch.zeros(rois, channels, cfg.roi.box_resolution, cfg.roi.box_resolution)
    mask_in = torch.zeros(dets, channels, cfg.roi.mask_resolution, cfg.roi.mask_resolution)
    heads = model.roi_heads
    parts = {
        "backbone": _flops(model.backbone.body, image),
        "fpn": _flops(model.backbone.fpn, model.backbone.body(image)),
        "rpn": _flops(model.rpn.head, feats),
        "box_head": _flops(lambda x: heads.box_predictor(heads.box_head(x)), box_in),
        "mask_head": _flops(lambda x: heads.mask_predictor(heads.mask_head(x)), mask_in),
    }
    out = {k: v / 1e9 for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out
