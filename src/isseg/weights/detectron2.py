"""detectron2 <-> isseg checkpoints.

detectron2 writes two kinds of files for a ``GeneralizedRCNN``:

* model-zoo ``.pkl``: ``{"model": {name: np.ndarray}, "__author__": ...}`` read with
  ``pickle.load(f, encoding="latin1")`` (``DetectionCheckpointer._load_file`` in
  ``detectron2/checkpoint/detection_checkpoint.py``);
* trainer ``.pth``: ``{"model": state_dict, "optimizer": ..., "scheduler": ..., "iteration": N}``
  (fvcore ``Checkpointer.save``), or a bare ``state_dict``.

Its parameter names differ from isseg's (torchvision's) only by renaming: ResNet ``stem`` / ``res2..5`` with
``conv{1,2,3}.norm`` and ``shortcut`` (``detectron2/modeling/backbone/resnet.py``), ``fpn_lateral{2..5}`` /
``fpn_output{2..5}`` (``backbone/fpn.py``), ``rpn_head.conv/objectness_logits/anchor_deltas``
(``proposal_generator/rpn.py``, anchor-major like torchvision), ``box_head.fc1/fc2``
(``roi_heads/box_head.py``), ``box_predictor.cls_score`` ``[K+1]`` with the background LAST and
``bbox_pred`` ``[4K]`` (``roi_heads/fast_rcnn.py``, as isseg), ``mask_head.mask_fcn{1..4}/deconv/predictor``
(``roi_heads/mask_head.py``). No tensor is reshaped or reordered; only the class order is permuted when the
checkpoint's names are known and ordered differently from the preset's.

The renaming, checks and class matching shared with :mod:`isseg.weights.mmdet` are in
:mod:`isseg.weights.conversion`.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from isseg.config import ModelConfig
from isseg.weights.conversion import (
    Conversion,
    _short,
    as_tensor,
    check_anchor_cells,
    check_normalization,
    check_predictor_shapes,
    class_permutation,
    convert_keys,
    fill_bn_statistics,
    isseg_layout,
    permute_classes,
    strip_prefix,
)

# ---------------------------------------------------------------------------------------------------------

_D2_MARKERS = ("backbone.bottom_up.", "proposal_generator.rpn_head.", "proposal_generator.anchor_generator.")
_CAFFE2_BLOB = re.compile(
    r"^(conv1_w|res_conv1_bn_|res\d_\d+_branch|fpn_inner_|rpn_conv_fpn|cls_score_w|bbox_pred_w)"
)


def _is_blob(key: object) -> bool:
    """Caffe2 / Detectron1 blob names have no dots: ``res2_0_branch2a_w``, ``fpn_inner_res5_2_sum_w``."""
    return isinstance(key, str) and "." not in key and bool(_CAFFE2_BLOB.match(key))


def read_detectron2_pkl(path: str | Path) -> dict[str, Any]:
    """Read a detectron2 model-zoo ``.pkl`` (a Python-2 era pickle of numpy arrays).

    Only numpy arrays and builtin containers are allowed to be unpickled, so a malicious file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        try:
            data = _SafeUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{path}: not a detectron2 .pkl checkpoint ({exc})") from exc
        except (EOFError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: truncated or not a pickle ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict at the top of the pickle, got {type(data).__name__}")
    return data


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays / dtypes and builtin containers."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),  # bytes in protocol-2 pickles
        ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    })  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def write_detectron2_pkl(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Write ``checkpoint`` (from :func:`to_detectron2`) as a model-zoo style ``.pkl`` of numpy arrays."""
    model = {
        k: v.detach().cpu().numpy() if isinstance(v, Tensor) else v for k, v in checkpoint["model"].items()
    }
    data = dict(checkpoint, model=model)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)


def _d2_weights(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The name -> tensor mapping inside a detectron2 file, and a description of the container."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"detectron2 checkpoint: expected a dict, got {type(checkpoint).__name__}")
    if "blobs" in checkpoint or any(_is_blob(k) for k in checkpoint):
        raise ValueError(
            "Caffe2 / Detectron1 checkpoint (blob names such as 'res2_0_branch2a_w'): not supported; load it "
            "in detectron2 (which renames the blobs with its matching heuristics) and save a .pth from there"
        )
    inner = checkpoint.get("model")
    if isinstance(inner, Mapping):
        kind = "model-zoo .pkl" if "__author__" in checkpoint else "trainer checkpoint"
        if any(_is_blob(k) for k in inner):
            raise ValueError(
                "Caffe2 / Detectron1 blob names inside 'model' (e.g. 'res2_0_branch2a_w'): not supported;"
                " load it in detectron2 and save a .pth from there"
            )
        weights = dict(inner)
    else:
        kind, weights = "bare state_dict", dict(checkpoint)
    weights, prefix = strip_prefix(weights, ("module.",))
    if prefix:
        kind += f" (prefix {prefix!r} removed)"
    return weights, kind


def is_detectron2(checkpoint: Mapping[str, Any]) -> bool:
    """True for detectron2 GeneralizedRCNN weights (and Caffe2 blobs, refused later with the reason)."""
    if not isinstance(checkpoint, Mapping):
        return False
    if "blobs" in checkpoint:
        return True
    inner = checkpoint.get("model")
    weights = inner if isinstance(inner, Mapping) else checkpoint
    keys = [str(k) for k in weights]
    if any(k.startswith(("module.",)) for k in keys):
        keys = [k[len("module.") :] for k in keys]
    return any(k.startswith(_D2_MARKERS) for k in keys) or (
        checkpoint.get("__author__") == "Caffe2" or any(_is_blob(k) for k in keys)
    )


def _to_d2_name(key: str, config: ModelConfig) -> str:
    """isseg key -> detectron2 key (raises KeyError for a key without a counterpart)."""
    rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (r"backbone\.body\.conv1\.weight", lambda m: "backbone.bottom_up.stem.conv1.weight"),
        (r"backbone\.body\.bn1\.(\w+)", lambda m: f"backbone.bottom_up.stem.conv1.norm.{m[1]}"),
        (
            r"backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.weight",
            lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight",
        ),
        (
            r"backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.(\w+)",
            lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
        ),
        (
            r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.weight",
            lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.weight",
        ),
        (
            r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.(\w+)",
            lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
        ),
        (
            r"backbone\.fpn\.inner_blocks\.(\d)\.0\.(\w+)",
            lambda m: f"backbone.fpn_lateral{int(m[1]) + 2}.{m[2]}",
        ),
        (
            r"backbone\.fpn\.inner_blocks\.(\d)\.1\.(\w+)",
            lambda m: f"backbone.fpn_lateral{int(m[1]) + 2}.norm.{m[2]}",
        ),
        (
            r"backbone\.fpn\.layer_blocks\.(\d)\.0\.(\w+)",
            lambda m: f"backbone.fpn_output{int(m[1]) + 2}.{m[2]}",
        ),
        (
            r"backbone\.fpn\.layer_blocks\.(\d)\.1\.(\w+)",
            lambda m: f"backbone.fpn_output{int(m[1]) + 2}.norm.{m[2]}",
        ),
        (
            r"rpn\.head\.conv\.(\d+)\.0\.(\w+)",
            lambda m: (
                f"proposal_generator.rpn_head.conv.{m[2]}"
                if config.rpn.conv_depth == 1
                else f"proposal_generator.rpn_head.conv.conv{m[1]}.{m[2]}"
            ),
        ),
        (r"rpn\.head\.cls_logits\.(\w+)", lambda m: f"proposal_generator.rpn_head.objectness_logits.{m[1]}"),
        (r"rpn\.head\.bbox_pred\.(\w+)", lambda m: f"proposal_generator.rpn_head.anchor_deltas.{m[1]}"),
        (r"roi_heads\.box_head\.fc6\.(\w+)", lambda m: f"roi_heads.box_head.fc1.{m[1]}"),
        (r"roi_heads\.box_head\.fc7\.(\w+)", lambda m: f"roi_heads.box_head.fc2.{m[1]}"),
        (
            r"roi_heads\.box_head\.([0-3])\.0\.(\w+)",
            lambda m: f"roi_heads.box_head.conv{int(m[1]) + 1}.{m[2]}",
        ),
        (
            r"roi_heads\.box_head\.([0-3])\.1\.(\w+)",
            lambda m: f"roi_heads.box_head.conv{int(m[1]) + 1}.norm.{m[2]}",
        ),
        (r"roi_heads\.box_head\.5\.(\w+)", lambda m: f"roi_heads.box_head.fc1.{m[1]}"),
        (
            r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(\w+)",
            lambda m: f"roi_heads.box_predictor.{m[1]}.{m[2]}",
        ),
        (
            r"roi_heads\.mask_head\.(\d)\.0\.(\w+)",
            lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.{m[2]}",
        ),
        (
            r"roi_heads\.mask_head\.(\d)\.1\.(\w+)",
            lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.norm.{m[2]}",
        ),
        (r"roi_heads\.mask_predictor\.conv5_mask\.(\w+)", lambda m: f"roi_heads.mask_head.deconv.{m[1]}"),
        (
            r"roi_heads\.mask_predictor\.mask_fcn_logits\.(\w+)",
            lambda m: f"roi_heads.mask_head.predictor.{m[1]}",
        ),
    ]
    for pattern, build in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return build(m)
    raise KeyError(f"isseg key {key!r} has no detectron2 counterpart")


def _d2_norm_of(weights: Mapping[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) and ".norm." in k for k in weights)


def from_detectron2(
    checkpoint: Mapping[str, Any], config: ModelConfig, *, strict: bool = False
) -> tuple[OrderedDict[str, Tensor], list[str]]:
    """detectron2 checkpoint (.pkl dict or trainer .pth dict) -> (isseg state dict, notes).

    Raises ``ValueError`` with the reason when the weights do not fit ``config``: Caffe2 blob names, a
    torchvision-converted (pytorch-style, RGB) backbone under a caffe preset, another class set,
    class-agnostic regression, norms in the heads the preset does not have, stored normalization or anchors
    that differ, wrong shapes, and (``strict``) missing or unknown keys.
    """
    source = "detectron2 checkpoint"
    weights, kind = _d2_weights(checkpoint)
    notes = [f"layout: detectron2 ({kind})"]
    author = checkpoint.get("__author__") if isinstance(checkpoint, Mapping) else None
    if author:
        notes.append(f"author: {author}")
    if author == "torchvision" and config.backbone.style == "caffe":
        raise ValueError(
            f"{source}: converted from torchvision (tools/convert-torchvision-to-d2.py): pytorch-style "
            f"stride (STRIDE_IN_1X1=False) and RGB input with ImageNet std; preset {config.name!r} is "
            f"caffe-style with BGR input"
        )
    if not any(k.startswith("backbone.bottom_up.") for k in weights) and any(
        k.startswith(("stem.", "res2.")) for k in weights
    ):
        raise ValueError(
            f"{source}: backbone-only (ImageNet) weights ('stem.*', 'res2.*'); a full Mask R-CNN "
            f"checkpoint is needed"
        )
    weights = {k: as_tensor(v, k, source) for k, v in weights.items()}
    conv = Conversion(weights, source)

    # what the preset cannot represent
    heads = {
        "backbone.fpn_": config.backbone.fpn_norm,
        "roi_heads.box_head.": config.roi.box_head_norm,
        "roi_heads.mask_head.": config.roi.mask_head_norm,
    }
    for prefix, kind_norm in heads.items():
        if _d2_norm_of(weights, prefix) and kind_norm == "none":
            raise ValueError(
                f"{source}: '{prefix}*' has normalization layers (GN / BN heads); preset "
                f"{config.name!r} has none there"
            )
    if any(".conv2_offset." in k for k in weights):
        raise ValueError(f"{source}: deformable convolutions (conv2_offset) are not supported")
    box_convs = any(k.startswith("roi_heads.box_head.conv") for k in weights)
    if box_convs != (config.roi.box_head == "4conv1fc"):
        has = "4conv1fc" if box_convs else "2fc"
        raise ValueError(f"{source}: box head is {has}, preset {config.name!r} uses {config.roi.box_head}")
    k = check_predictor_shapes(
        weights,
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.mask_head.predictor.weight",
        source,
    )
    perm, class_notes = class_permutation(None, k, config, source)
    notes += class_notes

    # buffers detectron2 stores besides the parameters
    notes += check_normalization(weights.get("pixel_mean"), weights.get("pixel_std"), config, source)
    for key in ("pixel_mean", "pixel_std"):
        if key in weights:
            conv.ignored[key] = "input normalization, checked against the preset"
    cells = sorted(
        (k2 for k2 in weights if k2.startswith("proposal_generator.anchor_generator.cell_anchors.")),
        key=lambda s: int(s.rsplit(".", 1)[-1]),
    )
    if cells:
        notes += check_anchor_cells([weights[c] for c in cells], config, source)
        for c in cells:
            conv.ignored[c] = "anchor buffers, checked against the preset"
    if config.backbone.norm == "frozen_bn":
        for key in weights:
            if key.endswith(".num_batches_tracked"):
                conv.ignored[key] = "BN step counter, unused by frozen BN"

    def rename(key: str) -> str:
        return _to_d2_name(key, config)

    # shapes are checked for the checkpoint's class count; the loader compares it with the model's
    shape_config = (
        config if k == config.num_classes else config.with_classes([f"class_{i}" for i in range(k)])
    )
    expected = convert_keys(weights, shape_config, rename, conv)
    fill_bn_statistics(conv, expected, rename)
    notes.append(
        "stride placement: not stored in detectron2 checkpoints; assumed MODEL.RESNETS.STRIDE_IN_1X1="
        f"{config.backbone.style == 'caffe'} as preset {config.name!r} ({config.backbone.style} style)"
    )
    if perm is not None:
        permute_classes(conv.state, perm)
    conv.finish(notes, strict, expected, "detectron2")
    state = conv.state
    return state, notes


def to_detectron2(state_dict: Mapping[str, Tensor], config: ModelConfig) -> dict[str, Any]:
    """isseg state dict -> ``{"model": detectron2 state dict, "__author__": ...}`` (loadable by
    ``DetectionCheckpointer``; write it with ``torch.save`` or :func:`write_detectron2_pkl`)."""
    expected = isseg_layout(config)
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise ValueError(
            f"isseg state dict: {len(missing)} missing key(s) for preset {config.name!r}: {_short(missing)}"
        )
    model: OrderedDict[str, Tensor] = OrderedDict()
    for key, shape in expected.items():
        t = state_dict[key]
        if tuple(t.shape) != shape:
            raise ValueError(f"isseg state dict: {key!r} has shape {tuple(t.shape)}, expected {shape}")
        model[_to_d2_name(key, config)] = t.detach().cpu().clone()
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise ValueError(f"isseg state dict: {len(extra)} unexpected key(s): {_short(extra)}")
    return {"model": model, "__author__": "isseg"}


def class_info(checkpoint: Mapping[str, Any]) -> tuple[int, list[str] | None]:
    """(number of foreground classes, class names or None): detectron2 files store no class names."""
    weights, _ = _d2_weights(checkpoint)
    w = weights.get("roi_heads.box_predictor.cls_score.weight")
    if w is None:
        raise ValueError("detectron2 checkpoint: no 'roi_heads.box_predictor.cls_score.weight'")
    return int(w.shape[0]) - 1, None
