"""mmdetection (2.x and 3.x) <-> isseg checkpoints, including OpenVINO Training Extensions files.

mmdetection checkpoints are ``{"meta": ..., "state_dict": ..., "optimizer": ...}`` (mmcv ``save_checkpoint``
in 2.x; mmengine ``Runner.save_checkpoint`` in 3.x, ``mmengine/runner/runner.py``). Published files keep
``meta`` and ``state_dict`` only and end with the first 8 hex digits of their SHA-256
(``tools/model_converters/publish_model.py``).

* ``meta`` in 2.x: ``mmdet_version``, ``CLASSES`` (tuple of names), ``config`` (the config's
  ``pretty_text``); in 3.x: ``mmengine_version``, ``dataset_meta = {"classes": ..., "palette": ...}``,
  ``cfg`` (``pretty_text``).
* The Mask R-CNN parameter names are the same in 2.x and 3.x: ``backbone.*`` named as torchvision's ResNet
  (``mmdet/models/backbones/resnet.py``; ``style='caffe'`` puts the stride in ``conv1`` of a bottleneck),
  ``neck.lateral_convs.i.conv`` / ``neck.fpn_convs.i.conv`` (mmcv ``ConvModule``), ``rpn_head.rpn_conv`` /
  ``rpn_cls`` (one sigmoid logit per anchor) / ``rpn_reg`` (``mmdet/models/dense_heads/rpn_head.py``),
  ``roi_head.bbox_head.shared_fcs.{0,1}`` / ``fc_cls`` ``[K+1]`` with the background LAST (since 2.0) /
  ``fc_reg`` ``[4K]`` (``reg_class_agnostic=False``), ``roi_head.mask_head.convs.i.conv`` / ``upsample`` /
  ``conv_logits``. mmdetection 1.x names (``bbox_head.*`` without ``roi_head.``, background first) are
  refused.
* OpenVINO Training Extensions 1.x ``weights.pth`` wraps an mmdet checkpoint:
  ``{"model": {"state_dict", "meta"}, "config", "labels": {name: color}, "confidence_threshold", "VERSION"}``
  (``otx/algorithms/detection/task.py``, ``save_model``); OTX 2.x Lightning checkpoints prefix the mmdet names
  with ``model.model.``.

When ``meta`` carries the training config, the conventions that decide whether the weights fit the preset
(stride style, input normalization, box-coder stds, anchors, heads) are read from it and checked
(:mod:`isseg.weights.mmdet_config`). The layout is :data:`LAYOUT`, a :class:`~isseg.weights.layouts.MappedLayout`
run by the driver shared with :mod:`isseg.weights.detectron2`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from isseg.config import ModelConfig
from isseg.weights.conversion import strip_prefix
from isseg.weights.layouts import (
    Checkpoint,
    Converted,
    MappedLayout,
    Unpacked,
    compile_rules,
    refuse_head_norms,
    refuse_other_box_head,
)
from isseg.weights.mmdet_config import check_mm_config, parse_mm_config

_MM_MARKERS = ("neck.lateral_convs.", "rpn_head.rpn_conv.", "rpn_head.rpn_cls.", "roi_head.bbox_head.")
_WRAPPER_PREFIXES = ("module.", "model.model.", "model.")


def _mm_parts(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str] | None, str]:
    """(weights, meta, OTX label names, description of the container) of an mmdet-style file."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"mmdetection checkpoint: expected a dict, got {type(checkpoint).__name__}")
    labels: list[str] | None = None
    kind = "checkpoint"
    inner = checkpoint.get("model")
    if isinstance(inner, Mapping) and isinstance(inner.get("state_dict"), Mapping):
        # OpenVINO Training Extensions 1.x weights.pth
        kind = f"OpenVINO Training Extensions 1.x weights.pth (VERSION {checkpoint.get('VERSION')})"
        if isinstance(checkpoint.get("labels"), Mapping):
            labels = [str(n) for n in checkpoint["labels"]]
        checkpoint = inner
    if isinstance(checkpoint.get("state_dict"), Mapping):
        weights = dict(checkpoint["state_dict"])
        meta = checkpoint.get("meta") or {}
    else:
        weights, meta, kind = dict(checkpoint), {}, "bare state_dict"
    if not isinstance(meta, Mapping):
        meta = {}
    weights, prefix = strip_prefix(weights, _WRAPPER_PREFIXES)
    if prefix:
        kind += f" (prefix {prefix!r} removed)"
    return weights, dict(meta), labels, kind


def is_mmdet(checkpoint: Mapping[str, Any]) -> bool:
    """True for mmdetection / OTX Mask R-CNN weights (1.x too, so that they are refused with the reason)."""
    try:
        weights, meta, _, _ = _mm_parts(checkpoint)
    except ValueError:
        return False
    keys = [str(k) for k in weights]
    legacy = any(k.startswith(("bbox_head.shared_fcs.", "mask_head.convs.")) for k in keys) and any(
        k.startswith("rpn_head.") for k in keys
    )
    return any(k.startswith(_MM_MARKERS) for k in keys) or legacy


def mmdet_version(meta: Mapping[str, Any], weights: Mapping[str, Any]) -> str:
    """'1', '2' or '3' from ``meta`` (mmdet_version, or mmengine's 3.x fields), else from the key layout."""
    version = str(meta.get("mmdet_version", ""))
    if version[:1] in "123" and version:
        return version[0]
    if "dataset_meta" in meta or "mmengine_version" in meta or "cfg" in meta:
        return "3"
    if any(k.startswith("bbox_head.") for k in weights) and not any(
        k.startswith("roi_head.") for k in weights
    ):
        return "1"
    return "2"


def _meta_classes(meta: Mapping[str, Any], labels: list[str] | None) -> list[str] | None:
    if labels:
        return labels
    names = meta.get("CLASSES")
    if names is None and isinstance(meta.get("dataset_meta"), Mapping):
        names = meta["dataset_meta"].get("classes")
    if isinstance(names, str):  # a one-class dataset written as CLASSES = 'name'
        return [names]
    if isinstance(names, list | tuple) and names:
        return [str(n) for n in names]
    return None


def _norm_abbr(kind: str) -> str:
    """mmcv ``build_norm_layer`` names a ConvModule's norm after its type: ``bn`` or ``gn``."""
    return "gn" if kind == "gn" else "bn"


_RULES = compile_rules(
    (r"backbone\.body\.(.+)", r"backbone.\1"),
    (r"backbone\.fpn\.inner_blocks\.(\d)\.0\.(\w+)", r"neck.lateral_convs.\1.conv.\2"),
    (r"backbone\.fpn\.inner_blocks\.(\d)\.1\.(\w+)",
     lambda m, c: f"neck.lateral_convs.{m[1]}.{_norm_abbr(c.backbone.fpn_norm)}.{m[2]}"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.0\.(\w+)", r"neck.fpn_convs.\1.conv.\2"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.1\.(\w+)",
     lambda m, c: f"neck.fpn_convs.{m[1]}.{_norm_abbr(c.backbone.fpn_norm)}.{m[2]}"),
    (r"rpn\.head\.conv\.(\d+)\.0\.(\w+)",
     lambda m, c: f"rpn_head.rpn_conv.{m[2]}" if c.rpn.conv_depth == 1 else f"rpn_head.rpn_conv.{m[1]}.conv.{m[2]}"),
    (r"rpn\.head\.cls_logits\.(\w+)", r"rpn_head.rpn_cls.\1"),
    (r"rpn\.head\.bbox_pred\.(\w+)", r"rpn_head.rpn_reg.\1"),
    (r"roi_heads\.box_head\.fc6\.(\w+)", r"roi_head.bbox_head.shared_fcs.0.\1"),
    (r"roi_heads\.box_head\.fc7\.(\w+)", r"roi_head.bbox_head.shared_fcs.1.\1"),
    (r"roi_heads\.box_head\.([0-3])\.0\.(\w+)", r"roi_head.bbox_head.shared_convs.\1.conv.\2"),
    (r"roi_heads\.box_head\.([0-3])\.1\.(\w+)",
     lambda m, c: f"roi_head.bbox_head.shared_convs.{m[1]}.{_norm_abbr(c.roi.box_head_norm)}.{m[2]}"),
    (r"roi_heads\.box_head\.5\.(\w+)", r"roi_head.bbox_head.shared_fcs.0.\1"),
    (r"roi_heads\.box_predictor\.cls_score\.(\w+)", r"roi_head.bbox_head.fc_cls.\1"),
    (r"roi_heads\.box_predictor\.bbox_pred\.(\w+)", r"roi_head.bbox_head.fc_reg.\1"),
    (r"roi_heads\.mask_head\.(\d)\.0\.(\w+)", r"roi_head.mask_head.convs.\1.conv.\2"),
    (r"roi_heads\.mask_head\.(\d)\.1\.(\w+)",
     lambda m, c: f"roi_head.mask_head.convs.{m[1]}.{_norm_abbr(c.roi.mask_head_norm)}.{m[2]}"),
    (r"roi_heads\.mask_predictor\.conv5_mask\.(\w+)", r"roi_head.mask_head.upsample.\1"),
    (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(\w+)", r"roi_head.mask_head.conv_logits.\1"),
)  # fmt: skip


class MmdetLayout(MappedLayout):
    """mmdetection 2.x / 3.x ``MaskRCNN`` weights, OTX 1.x ``weights.pth`` and OTX 2.x Lightning checkpoints."""

    name = "mmdet"
    title = "mmdetection"
    default_preset = "mmdet-r50-caffe-fpn"
    predictor_keys = (
        "roi_head.bbox_head.fc_cls.weight",
        "roi_head.bbox_head.fc_reg.weight",
        "roi_head.mask_head.conv_logits.weight",
    )
    rules = _RULES
    detect = staticmethod(is_mmdet)

    def unpack(self, ckpt: Checkpoint) -> Unpacked:
        weights, meta, labels, kind = _mm_parts(ckpt)
        version = mmdet_version(meta, weights)
        extra = {"meta": meta, "version": version, "otx1": labels is not None}
        return Unpacked(weights, f"mmdetection {version}.x ({kind})", _meta_classes(meta, labels), extra)

    def read_conventions(self, unpacked: Unpacked, config: ModelConfig) -> list[str]:
        """Refuses 1.x files; checks the training config stored in ``meta`` (:func:`check_mm_config`)."""
        meta, version = unpacked.extra["meta"], unpacked.extra["version"]
        if version == "1":
            raise ValueError(
                f"{self.source}: mmdetection 1.x checkpoint (meta mmdet_version={meta.get('mmdet_version')!r} or "
                f"keys 'bbox_head.*' without 'roi_head.'): background-first classes and +1 box widths; upgrade it "
                f"with mmdetection's tools/model_converters/upgrade_model_version.py first"
            )
        notes = [f"mmdet_version: {meta['mmdet_version']}"] if meta.get("mmdet_version") else []
        text = meta.get("config") if version == "2" else meta.get("cfg", meta.get("config"))
        if isinstance(text, str) and text.strip():
            try:
                cfg = parse_mm_config(text)
            except SyntaxError as exc:
                return notes + [
                    f"training config in meta could not be parsed ({exc.msg}); conventions not cross-checked"
                ]
            return notes + check_mm_config(cfg, config, self.source)
        notes.append(
            "no training config in meta: stride style, normalization and box coder cannot be checked; "
            f"assumed those of preset {config.name!r} ({config.backbone.style} style)"
        )
        if unpacked.extra["otx1"]:
            notes.append(
                "note: OTX 1.x's own 'MaskRCNN-ResNet50' template is pytorch-style with RGB ImageNet "
                "normalization (otx/algorithms/detection/configs/instance_segmentation/resnet50_maskrcnn)"
                "; the seed's template instance-segmentation-0002 is caffe-style BGR"
            )
        return notes

    def check_weights(self, weights: dict[str, Tensor], config: ModelConfig) -> None:
        rpn_cls = weights.get("rpn_head.rpn_cls.weight")
        if rpn_cls is not None and int(rpn_cls.shape[0]) == 2 * len(config.anchors.aspect_ratios):
            raise ValueError(
                f"{self.source}: rpn_head.rpn_cls has {int(rpn_cls.shape[0])} channels = 2 per anchor "
                f"(softmax RPN); isseg uses one sigmoid logit per anchor"
            )
        box_convs = ("roi_head.bbox_head.shared_convs.", "roi_head.bbox_head.cls_convs.")
        refuse_other_box_head(any(k.startswith(box_convs) for k in weights), config, self.source)
        heads = (
            ("neck.", config.backbone.fpn_norm),
            ("roi_head.mask_head.", config.roi.mask_head_norm),
            ("roi_head.bbox_head.", config.roi.box_head_norm),
        )
        refuse_head_norms(weights, heads, lambda k: ".gn." in k or ".bn." in k, config, self.source)

    def ignored(self, weights: dict[str, Tensor], config: ModelConfig) -> tuple[list[str], dict[str, str]]:
        ignored = {}
        for key in weights:
            if key.endswith(".num_batches_tracked") and config.backbone.norm != "bn":
                ignored[key] = "BN step counter, unused by frozen BN"
            elif key.startswith("ema_"):
                ignored[key] = "EMA copies kept by mmcv's EMAHook; the live weights are converted"
        return [], ignored


LAYOUT = MmdetLayout()
class_info = LAYOUT.class_info  # (foreground classes, names from meta or OTX labels, or None)


def from_mmdet(checkpoint: Checkpoint, config: ModelConfig, *, strict: bool = False) -> Converted:
    """mmdetection 2.x / 3.x (or OTX) checkpoint -> (isseg state dict, notes).

    Raises ``ValueError`` with the reason when the weights do not fit ``config``: mmdetection 1.x layout,
    conventions in the stored training config that differ (pytorch vs caffe style, normalization, box coder,
    anchors, heads), another class count or class set, class-agnostic heads, wrong shapes, and (``strict``)
    missing or unknown keys. Classes are reordered to the preset's order when the names are stored.
    """
    return LAYOUT.convert(checkpoint, config, strict=strict)


def to_mmdet(state_dict: Mapping[str, Tensor], config: ModelConfig, version: int = 2) -> dict[str, Any]:
    """isseg state dict -> ``{"meta": ..., "state_dict": ...}`` as mmdetection ``version`` (2 or 3) writes it.

    The backbone's BN layers get ``num_batches_tracked`` (mmdetection builds ``nn.BatchNorm2d`` even for
    frozen caffe-style BN), so that ``load_checkpoint(..., strict=True)`` accepts the file.
    """
    if version not in (2, 3):
        raise ValueError(f"mmdetection version must be 2 or 3, got {version}")
    frozen = config.backbone.norm == "frozen_bn"
    out: OrderedDict[str, Tensor] = OrderedDict()
    for name, t in LAYOUT.export(state_dict, config).items():
        out[name] = t
        if frozen and name.startswith("backbone.") and name.endswith(".running_var"):
            out[name.rsplit(".", 1)[0] + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    names = tuple(config.class_names)
    if version == 2:
        meta: dict[str, Any] = {"mmdet_version": "2.28.2", "CLASSES": names, "isseg_preset": config.name}
    else:
        meta = {"mmdet_version": "3.3.0", "dataset_meta": {"classes": names}, "isseg_preset": config.name}
    return {"meta": meta, "state_dict": out}
