"""torchvision ``maskrcnn_resnet50_fpn`` / ``_v2`` state dicts <-> isseg.

isseg already uses torchvision's parameter names; what differs:
- old (torchvision < 0.13) checkpoints, such as the published COCO ones, name some layers without the
  ``Conv2dNormActivation`` index (``rpn.head.conv.weight``, ``mask_head.mask_fcn1.weight``);
- torchvision puts the background at class index 0 and has a background slot in ``bbox_pred``; isseg puts
  it last and has none;
- the COCO checkpoints have 91 class slots (index == COCO category id, 11 ids unused); isseg has the 80
  contiguous classes.

The layout is :data:`LAYOUT`. Its keys are isseg's, so the loader itself accounts for every key (missing and
unused keys are in its report) rather than the driver of the renamed layouts.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from isseg.config import COCO_CATEGORY_IDS, ModelConfig
from isseg.weights.layouts import Checkpoint, Converted, Layout, state_tensors

CLASS_KEYS = (
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.bias",
)

_OLD_NAMES = [
    (re.compile(r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$"), r"backbone.fpn.\1.\2.0.\3"),
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
    (re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)$"), None),
]


def is_torchvision(state: dict[str, object]) -> bool:
    """A torchvision detection state dict: torchvision names and a background row in ``bbox_pred``."""
    cls = state.get("roi_heads.box_predictor.cls_score.weight")
    box = state.get("roi_heads.box_predictor.bbox_pred.weight")
    if not isinstance(cls, Tensor) or not isinstance(box, Tensor) or "backbone.body.conv1.weight" not in state:
        return False
    return box.shape[0] == 4 * cls.shape[0]


def _rename(key: str) -> str:
    for pattern, repl in _OLD_NAMES:
        m = pattern.match(key)
        if m:
            if repl is None:  # mask_fcnK -> K-1
                return f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}"
            return pattern.sub(repl, key)
    return key


def class_rows(num_slots: int, config: ModelConfig) -> list[int]:
    """torchvision class rows (background = 0) of isseg's classes, in isseg's order.

    A 91-slot COCO checkpoint loaded into an 80-class model takes the rows of the COCO category ids;
    otherwise rows 1..num_slots-1 in order (the loader then reports a class-count mismatch, if any).
    """
    if num_slots == 91 and config.num_classes == 80:
        return list(COCO_CATEGORY_IDS)
    return list(range(1, num_slots))


def from_torchvision(state: dict[str, Tensor], config: ModelConfig) -> tuple[dict[str, Tensor], list[str]]:
    """Convert to isseg's layout. Returns (state dict, notes)."""
    out = {_rename(k): v for k, v in state.items()}
    notes = []
    if any(_rename(k) != k for k in state):
        notes.append("renamed pre-0.13 torchvision layer names")
    cls_w = out["roi_heads.box_predictor.cls_score.weight"]
    rows = class_rows(cls_w.shape[0], config)
    if cls_w.shape[0] == 91 and config.num_classes == 80:
        notes.append("mapped torchvision's 91 COCO class slots onto the 80 contiguous classes")
    order = torch.tensor(rows + [0])
    box_rows = torch.tensor([4 * r + j for r in rows for j in range(4)])
    fg = torch.tensor(rows)
    for suffix in ("weight", "bias"):
        out[f"roi_heads.box_predictor.cls_score.{suffix}"] = out[f"roi_heads.box_predictor.cls_score.{suffix}"][order]
        out[f"roi_heads.box_predictor.bbox_pred.{suffix}"] = out[f"roi_heads.box_predictor.bbox_pred.{suffix}"][
            box_rows]
        key = f"roi_heads.mask_predictor.mask_fcn_logits.{suffix}"
        out[key] = out[key][fg]
    return out, notes


def to_torchvision(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """isseg -> torchvision (current names, K+1 class slots with background first)."""
    out = dict(state)
    k = config.num_classes
    order = torch.tensor([k] + list(range(k)))
    for suffix in ("weight", "bias"):
        cls = out[f"roi_heads.box_predictor.cls_score.{suffix}"]
        out[f"roi_heads.box_predictor.cls_score.{suffix}"] = cls[order]
        box = out[f"roi_heads.box_predictor.bbox_pred.{suffix}"]
        out[f"roi_heads.box_predictor.bbox_pred.{suffix}"] = torch.cat([torch.zeros_like(box[:4]), box])
        mask = out[f"roi_heads.mask_predictor.mask_fcn_logits.{suffix}"]
        out[f"roi_heads.mask_predictor.mask_fcn_logits.{suffix}"] = torch.cat([torch.zeros_like(mask[:1]), mask])
    return out


class TorchvisionLayout(Layout):
    """torchvision ``maskrcnn_resnet50_fpn`` / ``_v2`` state dicts (bare, or under ``model`` / ``state_dict``)."""

    name = "torchvision"

    def detect(self, ckpt: Checkpoint) -> bool:
        return is_torchvision(state_tensors(ckpt))

    def native_tensors(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        return state_tensors(ckpt)

    def convert(self, ckpt: Checkpoint, config: ModelConfig, *, strict: bool = False) -> Converted:
        return from_torchvision(state_tensors(ckpt), config)

    def class_info(self, ckpt: Checkpoint) -> tuple[int, list[str] | None]:
        """91 COCO slots are the 80 COCO classes; otherwise every slot but the background."""
        slots = state_tensors(ckpt)["roi_heads.box_predictor.cls_score.weight"].shape[0]
        return (80 if slots == 91 else slots - 1), None

    def preset(self, ckpt: Checkpoint) -> str:
        return "torchvision-v2" if "roi_heads.box_head.5.weight" in state_tensors(ckpt) else "torchvision-v1"


LAYOUT = TorchvisionLayout()
