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
(stride style, input normalization, box-coder stds, anchors, heads) are read from it and checked.
"""

from __future__ import annotations

import ast
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from isseg.config import ModelConfig
from isseg.weights.conversion import (
    Conversion,
    _short,
    as_tensor,
    check_predictor_shapes,
    class_permutation,
    convert_keys,
    fill_bn_statistics,
    isseg_layout,
    permute_classes,
    strip_prefix,
)

_MM_MARKERS = ("neck.lateral_convs.", "rpn_head.rpn_conv.", "rpn_head.rpn_cls.", "roi_head.bbox_head.")
_WRAPPER_PREFIXES = ("module.", "model.model.", "model.")

# ---------------------------------------------------------------------------------------------------------
# container / metadata
# ---------------------------------------------------------------------------------------------------------


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


def _looks_mmdet(keys: list[str]) -> bool:
    return any(k.startswith(_MM_MARKERS) for k in keys)


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
    return _looks_mmdet(keys) or legacy


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


def class_info(checkpoint: Mapping[str, Any]) -> tuple[int, list[str] | None]:
    """(number of foreground classes, class names or None) stored in an mmdet / OTX checkpoint."""
    weights, meta, labels, _ = _mm_parts(checkpoint)
    w = weights.get("roi_head.bbox_head.fc_cls.weight")
    if w is None:
        raise ValueError("mmdetection checkpoint: no 'roi_head.bbox_head.fc_cls.weight'")
    return int(w.shape[0]) - 1, _meta_classes(meta, labels)


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


# ---------------------------------------------------------------------------------------------------------
# the training config stored in meta (2.x "config", 3.x "cfg"): a Python text of dict(...) literals
# ---------------------------------------------------------------------------------------------------------


class _NotLiteral(Exception):
    pass


def _literal(node: ast.AST) -> Any:
    """Evaluate constants, containers and ``dict(k=v)`` calls only (never runs code from the file)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, int | float):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(left, int | float) and isinstance(right, int | float) and right:
            return left / right
    raise _NotLiteral(ast.dump(node)[:80])


def parse_mm_config(text: str) -> dict[str, Any]:
    """Top-level ``name = literal`` assignments of an mmcv/mmengine ``pretty_text``; others are skipped."""
    tree = ast.parse(text)
    out: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                out[stmt.targets[0].id] = _literal(stmt.value)
            except _NotLiteral:
                continue
    return out


def _get(d: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _d(value: Any) -> dict[str, Any]:
    """A config section, or {} when it is absent or not a dict (a malformed config is not an error here)."""
    return value if isinstance(value, dict) else {}


def _type(section: dict[str, Any], default: str) -> str:
    """A section's ``type`` without an mmengine registry scope (``mmdet.ResNet`` -> ``ResNet``)."""
    return str(section.get("type", default)).rsplit(".", 1)[-1]


def _close(a: Any, b: Any, tol: float = 1e-4) -> bool:
    try:
        return len(a) == len(b) and all(math.isclose(float(x), float(y), abs_tol=tol) for x, y in zip(a, b))
    except TypeError:
        return False


def _normalization_of(cfg: dict[str, Any]) -> tuple[list[float], list[float], bool] | None:
    """(mean, std, to_rgb) from 3.x ``model.data_preprocessor`` or 2.x ``img_norm_cfg`` / a Normalize step."""
    pre = _get(cfg, "model", "data_preprocessor")
    if isinstance(pre, dict) and "mean" in pre:
        return pre["mean"], pre.get("std", [1.0, 1.0, 1.0]), bool(pre.get("bgr_to_rgb", False))
    norm = cfg.get("img_norm_cfg")
    if not isinstance(norm, dict):
        for step in _walk_steps(_get(cfg, "data", "test", "pipeline", default=[])):
            if step.get("type") == "Normalize":
                norm = step
                break
    if isinstance(norm, dict) and "mean" in norm:
        return norm["mean"], norm.get("std", [1.0, 1.0, 1.0]), bool(norm.get("to_rgb", True))
    return None


def _walk_steps(pipeline: Any) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for step in pipeline if isinstance(pipeline, list) else []:
        if isinstance(step, dict):
            steps.append(step)
            steps += _walk_steps(step.get("transforms"))
    return steps


def check_mm_config(cfg: dict[str, Any], config: ModelConfig, source: str) -> list[str]:
    """Refuse weights trained with conventions the preset cannot reproduce; note differing inference settings.

    Errors: backbone type / depth / stride style / norm, FPN extras, anchors, box coder means & stds
    (``target_stds`` (0.1, 0.1, 0.2, 0.2) is isseg's ``box_coder_weights`` (10, 10, 5, 5)), class-agnostic
    heads, softmax RPN, legacy (mmdet 1.x) coders, input normalization.
    Notes: RoIAlign, level mapping (``finest_scale``), test-time thresholds.
    """
    notes: list[str] = []
    model = cfg.get("model")
    if not isinstance(model, dict):
        return ["training config in meta has no model; conventions not cross-checked"]

    def refuse(what: str, theirs: Any, mine: Any) -> None:
        raise ValueError(
            f"{source}: the checkpoint's config has {what} = {theirs!r}; preset {config.name!r} has {mine!r}"
        )

    if _type(model, "MaskRCNN") not in ("MaskRCNN", "CustomMaskRCNN"):
        refuse("model.type", model.get("type"), "MaskRCNN")
    bb = _d(model.get("backbone"))
    if _type(bb, "ResNet") != "ResNet":
        refuse("backbone.type", bb.get("type"), "ResNet")
    if bb.get("depth", config.backbone.depth) != config.backbone.depth:
        refuse("backbone.depth", bb.get("depth"), config.backbone.depth)
    style = bb.get("style", "pytorch")
    if style != config.backbone.style:
        refuse(
            "backbone.style (stride in the 1x1 conv for 'caffe', in the 3x3 conv for 'pytorch')",
            style,
            config.backbone.style,
        )
    norm_type = _get(bb, "norm_cfg", "type", default="BN")
    if (norm_type == "GN") != (config.backbone.norm == "gn"):
        refuse("backbone.norm_cfg.type", norm_type, config.backbone.norm)
    if bb.get("dcn") or bb.get("plugins") or bb.get("deep_stem") or bb.get("avg_down"):
        refuse("backbone extras (dcn / plugins / deep_stem / avg_down)", True, False)
    notes.append(f"stride placement: style={style!r} in the checkpoint's config, as preset {config.name!r}")

    neck = _d(model.get("neck"))
    if _type(neck, "FPN") != "FPN" or neck.get("add_extra_convs", False) or neck.get("start_level", 0) != 0:
        refuse(
            "neck",
            {k: neck.get(k) for k in ("type", "add_extra_convs", "start_level")},
            "FPN, P6 by max-pool",
        )
    if (_get(neck, "norm_cfg", "type") is not None) != (config.backbone.fpn_norm != "none"):
        refuse("neck.norm_cfg", neck.get("norm_cfg"), config.backbone.fpn_norm)

    rpn = _d(model.get("rpn_head"))
    gen = _d(rpn.get("anchor_generator"))
    if gen:
        if _type(gen, "AnchorGenerator") != "AnchorGenerator":
            refuse("rpn_head.anchor_generator.type", gen.get("type"), "AnchorGenerator")
        if gen.get("center_offset", 0.0) != 0.0:
            refuse("rpn_head.anchor_generator.center_offset", gen.get("center_offset"), 0.0)
        strides = gen.get("strides", [])
        scales = gen.get("scales", [])
        sizes = [s * scales[0] for s in strides] if len(scales) == 1 else None
        if strides and list(strides) != list(config.anchors.strides):
            refuse("anchor strides", strides, config.anchors.strides)
        if sizes is None or not _close(sizes, config.anchors.sizes):
            refuse("anchor sizes (strides x scales)", sizes, config.anchors.sizes)
        if not _close(gen.get("ratios", []), config.anchors.aspect_ratios):
            refuse("anchor ratios (h/w)", gen.get("ratios"), config.anchors.aspect_ratios)
    rpn_coder = _d(rpn.get("bbox_coder"))
    if _type(rpn_coder, "DeltaXYWHBBoxCoder") != "DeltaXYWHBBoxCoder":
        refuse("rpn_head.bbox_coder.type", rpn_coder.get("type"), "DeltaXYWHBBoxCoder")
    if not _close(rpn_coder.get("target_stds", [1.0] * 4), [1.0] * 4) or not _close(
        rpn_coder.get("target_means", [0.0] * 4), [0.0] * 4
    ):
        refuse(
            "rpn_head.bbox_coder (means, stds)",
            (rpn_coder.get("target_means"), rpn_coder.get("target_stds")),
            "(0, 0, 0, 0), (1, 1, 1, 1)",
        )
    if _get(rpn, "loss_cls", "use_sigmoid", default=True) is False:
        refuse("rpn_head.loss_cls.use_sigmoid (softmax RPN)", False, True)

    roi = _d(model.get("roi_head"))
    bbox = _d(roi.get("bbox_head"))
    heads = {"Shared2FCBBoxHead": "2fc", "Shared4Conv1FCBBoxHead": "4conv1fc"}
    if heads.get(_type(bbox, "Shared2FCBBoxHead")) != config.roi.box_head:
        refuse("roi_head.bbox_head.type", bbox.get("type"), config.roi.box_head)
    if bbox.get("reg_class_agnostic", False):
        refuse("roi_head.bbox_head.reg_class_agnostic", True, False)
    coder = _d(bbox.get("bbox_coder"))
    if _type(coder, "DeltaXYWHBBoxCoder") != "DeltaXYWHBBoxCoder":
        refuse("roi_head.bbox_head.bbox_coder.type", coder.get("type"), "DeltaXYWHBBoxCoder")
    stds = coder.get("target_stds", bbox.get("target_stds"))
    if stds is not None:
        if (
            not isinstance(stds, list)
            or len(stds) != 4
            or not all(isinstance(s, int | float) and s for s in stds)
        ):
            refuse("roi_head.bbox_head.bbox_coder.target_stds", stds, "4 non-zero numbers")
        weights = [1.0 / s for s in stds]
        if not _close(weights, config.roi.box_coder_weights, tol=1e-3):
            refuse(
                "roi_head.bbox_head.bbox_coder.target_stds (1 / box_coder_weights)",
                stds,
                [1.0 / w for w in config.roi.box_coder_weights],
            )
        notes.append(
            f"box coder: target_stds {list(stds)} == 1 / box_coder_weights "
            f"{list(config.roi.box_coder_weights)}"
        )
    means = coder.get("target_means", bbox.get("target_means", [0.0] * 4))
    if not _close(means, [0.0] * 4):
        refuse("roi_head.bbox_head.bbox_coder.target_means", means, [0.0] * 4)
    mask = _d(roi.get("mask_head"))
    if mask.get("class_agnostic", False):
        refuse("roi_head.mask_head.class_agnostic", True, False)
    if mask.get("num_convs", 4) != 4:
        refuse("roi_head.mask_head.num_convs", mask.get("num_convs"), 4)
    for name, resolution in (
        ("bbox_roi_extractor", config.roi.box_resolution),
        ("mask_roi_extractor", config.roi.mask_resolution),
    ):
        layer = _d(_get(roi, name, "roi_layer"))
        size = layer.get("output_size", layer.get("out_size"))
        if size is not None and size != resolution:
            refuse(f"roi_head.{name}.roi_layer.output_size", size, resolution)
        aligned = layer.get("aligned", True)
        sampling = layer.get("sampling_ratio", layer.get("sample_num"))
        if aligned != config.roi.aligned or (sampling is not None and sampling != config.roi.sampling_ratio):
            notes.append(
                f"note: {name} uses RoIAlign aligned={aligned} sampling_ratio={sampling}; preset "
                f"{config.name!r} uses aligned={config.roi.aligned} sampling_ratio="
                f"{config.roi.sampling_ratio}"
            )
        finest = _get(roi, name, "finest_scale", default=56)
        if finest != 56 or config.roi.level_mapping != "mmdet":
            notes.append(
                f"note: {name} maps RoIs to levels with finest_scale={finest}; preset {config.name!r} "
                f"uses level_mapping={config.roi.level_mapping!r}"
            )
            break

    norm = _normalization_of(cfg)
    if norm is not None:
        mean, std, to_rgb = norm
        order = "rgb" if to_rgb else "bgr"
        if (
            order != config.input.channel_order
            or not _close(mean, config.input.mean, 1e-3)
            or not _close(std, config.input.std, 1e-3)
        ):
            refuse(
                "input normalization (mean, std, channel order)",
                (list(mean), list(std), order),
                (list(config.input.mean), list(config.input.std), config.input.channel_order),
            )
        notes.append(f"input normalization: mean {list(mean)} std {list(std)} {order.upper()}, as the preset")
    notes += _test_cfg_notes(cfg, config)
    return notes


def _test_cfg_notes(cfg: dict[str, Any], config: ModelConfig) -> list[str]:
    """Where the checkpoint's own test settings differ from the preset (the preset is what isseg runs)."""
    test = _d(_get(cfg, "model", "test_cfg") or cfg.get("test_cfg"))
    rpn, rcnn = _d(test.get("rpn")), _d(test.get("rcnn"))
    pairs = [
        ("rpn.nms_pre", rpn.get("nms_pre"), config.rpn.pre_nms_top_n_test),
        ("rpn.max_per_img", rpn.get("max_per_img", rpn.get("max_num")), config.rpn.post_nms_top_n_test),
        (
            "rpn.nms.iou_threshold",
            _get(rpn, "nms", "iou_threshold", default=rpn.get("nms_thr")),
            config.rpn.nms_thresh,
        ),
        ("rpn.min_bbox_size", rpn.get("min_bbox_size"), config.rpn.min_size),
        ("rcnn.score_thr", rcnn.get("score_thr"), config.roi.score_thresh),
        (
            "rcnn.nms.iou_threshold",
            _get(rcnn, "nms", "iou_threshold", default=_get(rcnn, "nms", "iou_thr")),
            config.roi.nms_thresh,
        ),
        ("rcnn.max_per_img", rcnn.get("max_per_img"), config.roi.detections_per_img),
        ("rcnn.mask_thr_binary", rcnn.get("mask_thr_binary"), config.roi.mask_threshold),
    ]
    diffs = [
        f"{name}={theirs} (preset {mine})"
        for name, theirs, mine in pairs
        if isinstance(theirs, int | float) and not math.isclose(float(theirs), float(mine))
    ]
    return [f"note: the checkpoint's test_cfg differs from the preset: {', '.join(diffs)}"] if diffs else []


# ---------------------------------------------------------------------------------------------------------
# key mapping
# ---------------------------------------------------------------------------------------------------------


def _norm_abbr(kind: str) -> str:
    """mmcv ``build_norm_layer`` names a ConvModule's norm after its type: ``bn`` or ``gn``."""
    return "gn" if kind == "gn" else "bn"


def _to_mm_name(key: str, config: ModelConfig) -> str:
    """isseg key -> mmdetection key (raises KeyError for a key without a counterpart)."""
    b, r = config.backbone, config.roi
    rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (r"backbone\.body\.(.+)", lambda m: f"backbone.{m[1]}"),
        (r"backbone\.fpn\.inner_blocks\.(\d)\.0\.(\w+)", lambda m: f"neck.lateral_convs.{m[1]}.conv.{m[2]}"),
        (
            r"backbone\.fpn\.inner_blocks\.(\d)\.1\.(\w+)",
            lambda m: f"neck.lateral_convs.{m[1]}.{_norm_abbr(b.fpn_norm)}.{m[2]}",
        ),
        (r"backbone\.fpn\.layer_blocks\.(\d)\.0\.(\w+)", lambda m: f"neck.fpn_convs.{m[1]}.conv.{m[2]}"),
        (
            r"backbone\.fpn\.layer_blocks\.(\d)\.1\.(\w+)",
            lambda m: f"neck.fpn_convs.{m[1]}.{_norm_abbr(b.fpn_norm)}.{m[2]}",
        ),
        (
            r"rpn\.head\.conv\.(\d+)\.0\.(\w+)",
            lambda m: (
                f"rpn_head.rpn_conv.{m[2]}"
                if config.rpn.conv_depth == 1
                else f"rpn_head.rpn_conv.{m[1]}.conv.{m[2]}"
            ),
        ),
        (r"rpn\.head\.cls_logits\.(\w+)", lambda m: f"rpn_head.rpn_cls.{m[1]}"),
        (r"rpn\.head\.bbox_pred\.(\w+)", lambda m: f"rpn_head.rpn_reg.{m[1]}"),
        (r"roi_heads\.box_head\.fc6\.(\w+)", lambda m: f"roi_head.bbox_head.shared_fcs.0.{m[1]}"),
        (r"roi_heads\.box_head\.fc7\.(\w+)", lambda m: f"roi_head.bbox_head.shared_fcs.1.{m[1]}"),
        (
            r"roi_heads\.box_head\.([0-3])\.0\.(\w+)",
            lambda m: f"roi_head.bbox_head.shared_convs.{m[1]}.conv.{m[2]}",
        ),
        (
            r"roi_heads\.box_head\.([0-3])\.1\.(\w+)",
            lambda m: f"roi_head.bbox_head.shared_convs.{m[1]}.{_norm_abbr(r.box_head_norm)}.{m[2]}",
        ),
        (r"roi_heads\.box_head\.5\.(\w+)", lambda m: f"roi_head.bbox_head.shared_fcs.0.{m[1]}"),
        (r"roi_heads\.box_predictor\.cls_score\.(\w+)", lambda m: f"roi_head.bbox_head.fc_cls.{m[1]}"),
        (r"roi_heads\.box_predictor\.bbox_pred\.(\w+)", lambda m: f"roi_head.bbox_head.fc_reg.{m[1]}"),
        (r"roi_heads\.mask_head\.(\d)\.0\.(\w+)", lambda m: f"roi_head.mask_head.convs.{m[1]}.conv.{m[2]}"),
        (
            r"roi_heads\.mask_head\.(\d)\.1\.(\w+)",
            lambda m: f"roi_head.mask_head.convs.{m[1]}.{_norm_abbr(r.mask_head_norm)}.{m[2]}",
        ),
        (r"roi_heads\.mask_predictor\.conv5_mask\.(\w+)", lambda m: f"roi_head.mask_head.upsample.{m[1]}"),
        (
            r"roi_heads\.mask_predictor\.mask_fcn_logits\.(\w+)",
            lambda m: f"roi_head.mask_head.conv_logits.{m[1]}",
        ),
    ]
    for pattern, build in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return build(m)
    raise KeyError(f"isseg key {key!r} has no mmdetection counterpart")


def from_mmdet(
    checkpoint: Mapping[str, Any], config: ModelConfig, *, strict: bool = False
) -> tuple[OrderedDict[str, Tensor], list[str]]:
    """mmdetection 2.x / 3.x (or OTX) checkpoint -> (isseg state dict, notes).

    Raises ``ValueError`` with the reason when the weights do not fit ``config``: mmdetection 1.x layout,
    conventions in the stored training config that differ (pytorch vs caffe style, normalization, box coder,
    anchors, heads), another class count or class set, class-agnostic heads, wrong shapes, and (``strict``)
    missing or unknown keys. Classes are reordered to the preset's order when the names are stored.
    """
    source = "mmdetection checkpoint"
    weights, meta, labels, kind = _mm_parts(checkpoint)
    version = mmdet_version(meta, weights)
    if version == "1":
        raise ValueError(
            f"{source}: mmdetection 1.x checkpoint (meta mmdet_version={meta.get('mmdet_version')!r} or keys "
            f"'bbox_head.*' without 'roi_head.'): background-first classes and +1 box widths; upgrade it "
            f"with mmdetection's tools/model_converters/upgrade_model_version.py first"
        )
    notes = [f"layout: mmdetection {version}.x ({kind})"]
    if meta.get("mmdet_version"):
        notes.append(f"mmdet_version: {meta['mmdet_version']}")
    text = meta.get("config") if version == "2" else meta.get("cfg", meta.get("config"))
    if isinstance(text, str) and text.strip():
        try:
            cfg = parse_mm_config(text)
        except SyntaxError as exc:
            notes.append(
                f"training config in meta could not be parsed ({exc.msg}); conventions not cross-checked"
            )
        else:
            notes += check_mm_config(cfg, config, source)
    else:
        notes.append(
            "no training config in meta: stride style, normalization and box coder cannot be checked; "
            f"assumed those of preset {config.name!r} ({config.backbone.style} style)"
        )
        if labels is not None:
            notes.append(
                "note: OTX 1.x's own 'MaskRCNN-ResNet50' template is pytorch-style with RGB ImageNet "
                "normalization (otx/algorithms/detection/configs/instance_segmentation/resnet50_maskrcnn)"
                "; the seed's template instance-segmentation-0002 is caffe-style BGR"
            )

    weights = {k: as_tensor(v, k, source) for k, v in weights.items()}
    conv = Conversion(weights, source)
    rpn_cls = weights.get("rpn_head.rpn_cls.weight")
    if rpn_cls is not None and int(rpn_cls.shape[0]) == 2 * len(config.anchors.aspect_ratios):
        raise ValueError(
            f"{source}: rpn_head.rpn_cls has {int(rpn_cls.shape[0])} channels = 2 per anchor "
            f"(softmax RPN); isseg uses one sigmoid logit per anchor"
        )
    if any(
        k.startswith(("roi_head.bbox_head.shared_convs.", "roi_head.bbox_head.cls_convs.")) for k in weights
    ) != (config.roi.box_head == "4conv1fc"):
        raise ValueError(
            f"{source}: box head type differs from preset {config.name!r} ({config.roi.box_head})"
        )
    for prefix, kind_norm in (
        ("neck.", config.backbone.fpn_norm),
        ("roi_head.mask_head.", config.roi.mask_head_norm),
        ("roi_head.bbox_head.", config.roi.box_head_norm),
    ):
        if kind_norm == "none" and any(
            k.startswith(prefix) and (".gn." in k or ".bn." in k) for k in weights
        ):
            raise ValueError(
                f"{source}: '{prefix}*' has normalization layers (GN / BN heads); preset "
                f"{config.name!r} has none there"
            )
    k = check_predictor_shapes(
        weights,
        "roi_head.bbox_head.fc_cls.weight",
        "roi_head.bbox_head.fc_reg.weight",
        "roi_head.mask_head.conv_logits.weight",
        source,
    )
    perm, class_notes = class_permutation(_meta_classes(meta, labels), k, config, source)
    notes += class_notes

    for key in weights:
        if key.endswith(".num_batches_tracked") and config.backbone.norm != "bn":
            conv.ignored[key] = "BN step counter, unused by frozen BN"
        elif key.startswith("ema_"):
            conv.ignored[key] = "EMA copies kept by mmcv's EMAHook; the live weights are converted"

    def rename(key: str) -> str:
        return _to_mm_name(key, config)

    # shapes are checked for the checkpoint's class count; the loader compares it with the model's
    shape_config = (
        config if k == config.num_classes else config.with_classes([f"class_{i}" for i in range(k)])
    )
    expected = convert_keys(weights, shape_config, rename, conv)
    fill_bn_statistics(conv, expected, rename)
    if perm is not None:
        permute_classes(conv.state, perm)
    conv.finish(notes, strict, expected, "mmdet")
    state = conv.state
    return state, notes


def to_mmdet(state_dict: Mapping[str, Tensor], config: ModelConfig, version: int = 2) -> dict[str, Any]:
    """isseg state dict -> ``{"meta": ..., "state_dict": ...}`` as mmdetection ``version`` (2 or 3) writes it.

    The backbone's BN layers get ``num_batches_tracked`` (mmdetection builds ``nn.BatchNorm2d`` even for
    frozen caffe-style BN), so that ``load_checkpoint(..., strict=True)`` accepts the file.
    """
    if version not in (2, 3):
        raise ValueError(f"mmdetection version must be 2 or 3, got {version}")
    expected = isseg_layout(config)
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    if missing or extra:
        raise ValueError(
            f"isseg state dict does not match preset {config.name!r}: missing {_short(missing)}; "
            f"unexpected {_short(extra)}"
        )
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, shape in expected.items():
        t = state_dict[key]
        if tuple(t.shape) != shape:
            raise ValueError(f"isseg state dict: {key!r} has shape {tuple(t.shape)}, expected {shape}")
        name = _to_mm_name(key, config)
        out[name] = t.detach().cpu().clone()
        if (
            key.startswith("backbone.body.")
            and key.endswith(".running_var")
            and config.backbone.norm == "frozen_bn"
        ):
            out[name.rsplit(".", 1)[0] + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    names = tuple(config.class_names)
    if version == 2:
        meta: dict[str, Any] = {"mmdet_version": "2.28.2", "CLASSES": names, "isseg_preset": config.name}
    else:
        meta = {"mmdet_version": "3.3.0", "dataset_meta": {"classes": names}, "isseg_preset": config.name}
    return {"meta": meta, "state_dict": out}
