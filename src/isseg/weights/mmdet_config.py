"""The training config an mmdetection checkpoint stores in ``meta``, read without running it and checked.

mmdetection 2.x keeps the config's ``pretty_text`` in ``meta["config"]``, 3.x in ``meta["cfg"]``: Python text of
``name = dict(...)`` literals. :func:`parse_mm_config` evaluates literals only. :data:`CONVENTIONS` is the table
of the fields that decide whether the weights compute what the preset computes: (field, what the preset allows,
what it means), with mmdetection's default where the config may leave the field out; :func:`check_conventions`
refuses the first field that does not fit, naming the field, its value, what the preset has and what it means.
:func:`check_mm_config` runs the table and adds notes: the conventions confirmed, RoIAlign and level-mapping
settings that differ, and test-time thresholds that differ (the preset's are what isseg runs).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from isseg.config import ModelConfig

# ---------------------------------------------------------------------------------------------------------
# parsing: a Python text of dict(...) literals
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


# ---------------------------------------------------------------------------------------------------------
# reading fields (a malformed or missing section reads as unset, not as an error)
# ---------------------------------------------------------------------------------------------------------

SKIP = object()  # the config leaves the field out and mmdetection has no default to check: nothing to check
_ANCHORS = "model.rpn_head.anchor_generator"


def _get(d: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _at(cfg: dict[str, Any], path: str, default: Any = SKIP) -> Any:
    return _get(cfg, *path.split("."), default=default)


def _bare(type_name: Any) -> str:
    """A ``type`` without its mmengine registry scope (``mmdet.ResNet`` -> ``ResNet``)."""
    return str(type_name).rsplit(".", 1)[-1]


def _close(a: Any, b: Any, tol: float = 1e-4) -> bool:
    try:
        return len(a) == len(b) and all(math.isclose(float(x), float(y), abs_tol=tol) for x, y in zip(a, b))
    except TypeError:
        return False


def _walk_steps(pipeline: Any) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for step in pipeline if isinstance(pipeline, list) else []:
        if isinstance(step, dict):
            steps.append(step)
            steps += _walk_steps(step.get("transforms"))
    return steps


def _normalization(cfg: dict[str, Any]) -> Any:
    """(mean, std, channel order) from 3.x ``model.data_preprocessor`` or 2.x ``img_norm_cfg`` / a Normalize
    step of the test pipeline; SKIP when the config has none."""
    pre = _get(cfg, "model", "data_preprocessor")
    if isinstance(pre, dict) and "mean" in pre:
        return pre["mean"], pre.get("std", [1.0, 1.0, 1.0]), "rgb" if pre.get("bgr_to_rgb", False) else "bgr"
    norm = cfg.get("img_norm_cfg")
    if not isinstance(norm, dict):
        for step in _walk_steps(_get(cfg, "data", "test", "pipeline", default=[])):
            if step.get("type") == "Normalize":
                norm = step
                break
    if isinstance(norm, dict) and "mean" in norm:
        return norm["mean"], norm.get("std", [1.0, 1.0, 1.0]), "rgb" if norm.get("to_rgb", True) else "bgr"
    return SKIP


def _section(cfg: dict[str, Any], path: str) -> dict[str, Any]:
    """A config section, or {} when it is absent or not a dict."""
    value = _at(cfg, path, None)
    return value if isinstance(value, dict) else {}


def _anchor_strides(cfg: dict[str, Any]) -> Any:
    return _section(cfg, _ANCHORS).get("strides") or SKIP


def _anchor_sizes(cfg: dict[str, Any]) -> Any:
    """strides x the one scale (mmdetection's base sizes); None unless there is exactly one scale."""
    gen = _section(cfg, _ANCHORS)
    strides, scales = gen.get("strides", []), gen.get("scales", [])
    try:
        return [s * scales[0] for s in strides] if len(scales) == 1 else None
    except TypeError:
        return None


def _roi_coder(cfg: dict[str, Any], name: str, default: Any) -> Any:
    """A box-coder field of the RoI box head: in its ``bbox_coder`` (2.x, 3.x), else on the head (older)."""
    head = _section(cfg, "model.roi_head.bbox_head")
    coder = head.get("bbox_coder")
    return (coder if isinstance(coder, dict) else {}).get(name, head.get(name, default))


def _roi_stds(cfg: dict[str, Any]) -> Any:
    stds = _roi_coder(cfg, "target_stds", None)
    return SKIP if stds is None else stds


def _roi_output_size(extractor: str) -> Callable[[dict[str, Any]], Any]:
    def read(cfg: dict[str, Any]) -> Any:
        layer = _section(cfg, f"model.roi_head.{extractor}.roi_layer")
        size = layer.get("output_size", layer.get("out_size"))
        return SKIP if size is None else size

    return read


# ---------------------------------------------------------------------------------------------------------
# the conventions table
# ---------------------------------------------------------------------------------------------------------


def _same_type(value: Any, allowed: Any) -> bool:
    return _bare(value) == allowed


def _unset(value: Any, allowed: Any) -> bool:
    return not value


def _stds_fit(stds: Any, allowed: list[float]) -> bool:
    """Four non-zero numbers whose inverses are the preset's box_coder_weights."""
    if not isinstance(stds, list) or len(stds) != 4 or not all(isinstance(s, int | float) and s for s in stds):
        return False
    return _close([1.0 / s for s in stds], [1.0 / a for a in allowed], tol=1e-3)


def _normalization_fits(value: Any, allowed: Any) -> bool:
    (mean, std, order), (my_mean, my_std, my_order) = value, allowed
    return order == my_order and _close(mean, my_mean, 1e-3) and _close(std, my_std, 1e-3)


_BOX_HEAD_TYPES = {"2fc": "Shared2FCBBoxHead", "4conv1fc": "Shared4Conv1FCBBoxHead"}


@dataclass(frozen=True)
class Convention:
    """One field of the training config and what the preset allows there."""

    field: str  # dotted path in the config (or the name of a value derived from several fields)
    allowed: Any  # what the preset needs: a value, or a function of the preset's ModelConfig
    meaning: str  # what the field decides, said in the error
    default: Any = SKIP  # mmdetection's value where the config leaves the field out (SKIP: not checked then)
    fits: Callable[[Any, Any], bool] = operator.eq  # fits(value, allowed)
    read: Callable[[dict[str, Any]], Any] | None = None  # derived values; else the field's path
    only_with: str = ""  # checked only when the config has this section

    def value(self, cfg: dict[str, Any]) -> Any:
        if self.only_with and not (isinstance(s := _at(cfg, self.only_with, None), dict) and s):
            return SKIP
        return self.read(cfg) if self.read is not None else _at(cfg, self.field, self.default)


CONVENTIONS: tuple[Convention, ...] = (
    # field, allowed by the preset, what it means; default: mmdetection's value when the config leaves it out
    Convention("model.type", "MaskRCNN", "isseg is a Mask R-CNN: box and mask heads",
               default="MaskRCNN", fits=lambda v, a: _bare(v) in (a, "CustomMaskRCNN")),
    Convention("model.backbone.type", "ResNet", "isseg's backbone is a ResNet", default="ResNet", fits=_same_type),
    Convention("model.backbone.depth", lambda c: c.backbone.depth, "the ResNet depth"),
    Convention("model.backbone.style", lambda c: c.backbone.style,
               "stride in the 1x1 conv for 'caffe', in the 3x3 conv for 'pytorch'", default="pytorch"),
    Convention("model.backbone.norm_cfg.type", lambda c: c.backbone.norm,
               "backbone normalization: GN, or BN (frozen or not)",
               default="BN", fits=lambda v, a: (v == "GN") == (a == "gn")),
    Convention("model.backbone.dcn", False, "deformable convolutions, which isseg does not have",
               default=None, fits=_unset),
    Convention("model.backbone.plugins", False, "extra blocks inside the ResNet, which isseg does not have",
               default=None, fits=_unset),
    Convention("model.backbone.deep_stem", False, "three 3x3 stem convs instead of isseg's 7x7",
               default=None, fits=_unset),
    Convention("model.backbone.avg_down", False, "average-pool shortcuts (ResNet-D) instead of strided 1x1 convs",
               default=None, fits=_unset),
    Convention("model.neck.type", "FPN", "the feature pyramid", default="FPN", fits=_same_type),
    Convention("model.neck.add_extra_convs", False, "P6 by a conv; isseg's P6 is a max-pool of P5",
               default=False, fits=_unset),
    Convention("model.neck.start_level", 0, "first ResNet stage fed to the FPN", default=0),
    Convention("model.neck.norm_cfg", lambda c: c.backbone.fpn_norm, "normalization layers in the FPN",
               default=None, fits=lambda v, a: (isinstance(v, dict) and v.get("type") is not None) == (a != "none")),
    Convention(f"{_ANCHORS}.type", "AnchorGenerator",
               "anchor placement; LegacyAnchorGenerator is mmdetection 1.x's, with +1 widths",
               default="AnchorGenerator", fits=_same_type, only_with=_ANCHORS),
    Convention(f"{_ANCHORS}.center_offset", 0.0, "anchor centres on the feature-map cell corners",
               default=0.0, only_with=_ANCHORS),
    Convention(f"{_ANCHORS}.strides", lambda c: c.anchors.strides, "feature-map stride of each pyramid level",
               fits=lambda v, a: list(v) == list(a), read=_anchor_strides, only_with=_ANCHORS),
    Convention("anchor sizes (strides x scales)", lambda c: c.anchors.sizes, "base anchor size per level",
               fits=lambda v, a: v is not None and _close(v, a), read=_anchor_sizes, only_with=_ANCHORS),
    Convention(f"{_ANCHORS}.ratios", lambda c: c.anchors.aspect_ratios, "anchor aspect ratios, h/w",
               default=[], fits=_close, only_with=_ANCHORS),
    Convention("model.rpn_head.bbox_coder.type", "DeltaXYWHBBoxCoder", "how RPN deltas decode into boxes",
               default="DeltaXYWHBBoxCoder", fits=_same_type),
    Convention("model.rpn_head.bbox_coder.target_means", [0.0] * 4, "RPN deltas are not shifted",
               default=[0.0] * 4, fits=_close),
    Convention("model.rpn_head.bbox_coder.target_stds", [1.0] * 4, "RPN deltas are not scaled",
               default=[1.0] * 4, fits=_close),
    Convention("model.rpn_head.loss_cls.use_sigmoid", True,
               "False is a softmax RPN with two logits per anchor; isseg's RPN has one sigmoid logit per anchor",
               default=True, fits=lambda v, a: v is not False),
    Convention("model.roi_head.bbox_head.type", lambda c: _BOX_HEAD_TYPES[c.roi.box_head],
               "box head: two fc layers, or four convs and one fc", default="Shared2FCBBoxHead", fits=_same_type),
    Convention("model.roi_head.bbox_head.reg_class_agnostic", False,
               "one box per RoI; isseg regresses one box per class", default=False, fits=_unset),
    Convention("model.roi_head.bbox_head.bbox_coder.type", "DeltaXYWHBBoxCoder",
               "how box deltas decode; the Legacy coder is mmdetection 1.x's, with +1 widths",
               default="DeltaXYWHBBoxCoder", fits=_same_type),
    Convention("model.roi_head.bbox_head.bbox_coder.target_stds",
               lambda c: [1.0 / w for w in c.roi.box_coder_weights],
               "four non-zero numbers, 1 / the preset's box_coder_weights: the scale of the predicted box deltas",
               fits=_stds_fit, read=_roi_stds),
    Convention("model.roi_head.bbox_head.bbox_coder.target_means", [0.0] * 4, "box deltas are not shifted",
               fits=_close, read=lambda cfg: _roi_coder(cfg, "target_means", [0.0] * 4)),
    Convention("model.roi_head.mask_head.class_agnostic", False,
               "one mask per RoI; isseg predicts one mask per class", default=False, fits=_unset),
    Convention("model.roi_head.mask_head.num_convs", 4, "convs in the mask head", default=4),
    Convention("model.roi_head.bbox_roi_extractor.roi_layer.output_size", lambda c: c.roi.box_resolution,
               "RoIAlign output of the box head", read=_roi_output_size("bbox_roi_extractor")),
    Convention("model.roi_head.mask_roi_extractor.roi_layer.output_size", lambda c: c.roi.mask_resolution,
               "RoIAlign output of the mask head", read=_roi_output_size("mask_roi_extractor")),
    Convention("input normalization (mean, std, channel order)",
               lambda c: (list(c.input.mean), list(c.input.std), c.input.channel_order),
               "the pixel statistics and channel order the weights were trained on",
               fits=_normalization_fits, read=_normalization),
)  # fmt: skip


def check_conventions(cfg: dict[str, Any], config: ModelConfig, source: str,
                      conventions: tuple[Convention, ...] = CONVENTIONS) -> None:
    """Refuse the first field of the training config that does not fit ``config``."""
    for rule in conventions:
        value = rule.value(cfg)
        if value is SKIP:
            continue
        allowed = rule.allowed(config) if callable(rule.allowed) else rule.allowed
        try:
            fits = rule.fits(value, allowed)
        except (TypeError, ValueError):  # a malformed field (a number where a list belongs) does not fit
            fits = False
        if not fits:
            raise ValueError(
                f"{source}: the checkpoint's config has {rule.field} = {value!r}; preset {config.name!r} has "
                f"{allowed!r} ({rule.meaning})"
            )


# ---------------------------------------------------------------------------------------------------------
# notes
# ---------------------------------------------------------------------------------------------------------


def check_mm_config(cfg: dict[str, Any], config: ModelConfig, source: str) -> list[str]:
    """Refuse weights trained with conventions the preset cannot reproduce (:data:`CONVENTIONS`): backbone type /
    depth / stride style / norm, FPN extras, anchors, box coder means & stds (``target_stds`` (0.1, 0.1, 0.2,
    0.2) is isseg's ``box_coder_weights`` (10, 10, 5, 5)), class-agnostic heads, softmax RPN, legacy (mmdet 1.x)
    coders, input normalization. Returns notes: what was confirmed, RoIAlign and level mapping
    (``finest_scale``) that differ, test-time thresholds that differ.
    """
    if not isinstance(cfg.get("model"), dict):
        return ["training config in meta has no model; conventions not cross-checked"]
    check_conventions(cfg, config, source)
    style = _at(cfg, "model.backbone.style", "pytorch")
    notes = [f"stride placement: style={style!r} in the checkpoint's config, as preset {config.name!r}"]
    stds = _roi_stds(cfg)
    if stds is not SKIP:
        notes.append(
            f"box coder: target_stds {list(stds)} == 1 / box_coder_weights {list(config.roi.box_coder_weights)}"
        )
    notes += _roi_notes(cfg, config)
    norm = _normalization(cfg)
    if norm is not SKIP:
        mean, std, order = norm
        notes.append(f"input normalization: mean {list(mean)} std {list(std)} {order.upper()}, as the preset")
    return notes + _test_cfg_notes(cfg, config)


def _roi_notes(cfg: dict[str, Any], config: ModelConfig) -> list[str]:
    """RoIAlign settings and level mapping that differ from the preset's (the first extractor's level mapping
    note stands for both: they share ``finest_scale`` in every mmdetection config)."""
    notes = []
    r = config.roi
    for name in ("bbox_roi_extractor", "mask_roi_extractor"):
        layer = _section(cfg, f"model.roi_head.{name}.roi_layer")
        aligned = layer.get("aligned", True)
        sampling = layer.get("sampling_ratio", layer.get("sample_num"))
        if aligned != r.aligned or (sampling is not None and sampling != r.sampling_ratio):
            notes.append(
                f"note: {name} uses RoIAlign aligned={aligned} sampling_ratio={sampling}; preset "
                f"{config.name!r} uses aligned={r.aligned} sampling_ratio={r.sampling_ratio}"
            )
        finest = _at(cfg, f"model.roi_head.{name}.finest_scale", 56)
        if finest != 56 or r.level_mapping != "mmdet":
            notes.append(
                f"note: {name} maps RoIs to levels with finest_scale={finest}; preset {config.name!r} "
                f"uses level_mapping={r.level_mapping!r}"
            )
            break
    return notes


def _test_cfg_notes(cfg: dict[str, Any], config: ModelConfig) -> list[str]:
    """Where the checkpoint's own test settings differ from the preset (the preset is what isseg runs)."""
    test = _at(cfg, "model.test_cfg", None) or cfg.get("test_cfg")
    test = test if isinstance(test, dict) else {}
    rpn = test.get("rpn") if isinstance(test.get("rpn"), dict) else {}
    rcnn = test.get("rcnn") if isinstance(test.get("rcnn"), dict) else {}
    pairs = [
        ("rpn.nms_pre", rpn.get("nms_pre"), config.rpn.pre_nms_top_n_test),
        ("rpn.max_per_img", rpn.get("max_per_img", rpn.get("max_num")), config.rpn.post_nms_top_n_test),
        ("rpn.nms.iou_threshold", _get(rpn, "nms", "iou_threshold", default=rpn.get("nms_thr")), config.rpn.nms_thresh),
        ("rpn.min_bbox_size", rpn.get("min_bbox_size"), config.rpn.min_size),
        ("rcnn.score_thr", rcnn.get("score_thr"), config.roi.score_thresh),
        ("rcnn.nms.iou_threshold", _get(rcnn, "nms", "iou_threshold", default=_get(rcnn, "nms", "iou_thr")),
         config.roi.nms_thresh),
        ("rcnn.max_per_img", rcnn.get("max_per_img"), config.roi.detections_per_img),
        ("rcnn.mask_thr_binary", rcnn.get("mask_thr_binary"), config.roi.mask_threshold),
    ]  # fmt: skip
    diffs = [
        f"{name}={theirs} (preset {mine})"
        for name, theirs, mine in pairs
        if isinstance(theirs, int | float) and not math.isclose(float(theirs), float(mine))
    ]
    return [f"note: the checkpoint's test_cfg differs from the preset: {', '.join(diffs)}"] if diffs else []
