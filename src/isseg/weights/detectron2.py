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

The layout is :data:`LAYOUT`, a :class:`~isseg.weights.layouts.MappedLayout`: its rename rules, the container and
the checks that belong to detectron2 are here; the driver shared with :mod:`isseg.weights.mmdet` is in
:mod:`isseg.weights.layouts`.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from isseg.config import ModelConfig
from isseg.weights.conversion import check_anchor_cells, check_normalization, strip_prefix
from isseg.weights.layouts import (
    Checkpoint,
    Converted,
    MappedLayout,
    Unpacked,
    compile_rules,
    refuse_head_norms,
    refuse_other_box_head,
)

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


def _stage(m: re.Match[str], group: int = 1) -> int:
    """detectron2's ``res{2..5}`` of torchvision's ``layer{1..4}``."""
    return int(m[group]) + 1


_RULES = compile_rules(
    (r"backbone\.body\.conv1\.weight", "backbone.bottom_up.stem.conv1.weight"),
    (r"backbone\.body\.bn1\.(\w+)", r"backbone.bottom_up.stem.conv1.norm.\1"),
    (r"backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.weight",
     lambda m, c: f"backbone.bottom_up.res{_stage(m)}.{m[2]}.conv{m[3]}.weight"),
    (r"backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.(\w+)",
     lambda m, c: f"backbone.bottom_up.res{_stage(m)}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.weight",
     lambda m, c: f"backbone.bottom_up.res{_stage(m)}.{m[2]}.shortcut.weight"),
    (r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.(\w+)",
     lambda m, c: f"backbone.bottom_up.res{_stage(m)}.{m[2]}.shortcut.norm.{m[3]}"),
    # FPN level i is P(i+2)
    (r"backbone\.fpn\.inner_blocks\.(\d)\.0\.(\w+)", lambda m, c: f"backbone.fpn_lateral{int(m[1]) + 2}.{m[2]}"),
    (r"backbone\.fpn\.inner_blocks\.(\d)\.1\.(\w+)",
     lambda m, c: f"backbone.fpn_lateral{int(m[1]) + 2}.norm.{m[2]}"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.0\.(\w+)", lambda m, c: f"backbone.fpn_output{int(m[1]) + 2}.{m[2]}"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.1\.(\w+)",
     lambda m, c: f"backbone.fpn_output{int(m[1]) + 2}.norm.{m[2]}"),
    (r"rpn\.head\.conv\.(\d+)\.0\.(\w+)",
     lambda m, c: f"proposal_generator.rpn_head.conv.{m[2]}" if c.rpn.conv_depth == 1
     else f"proposal_generator.rpn_head.conv.conv{m[1]}.{m[2]}"),
    (r"rpn\.head\.cls_logits\.(\w+)", r"proposal_generator.rpn_head.objectness_logits.\1"),
    (r"rpn\.head\.bbox_pred\.(\w+)", r"proposal_generator.rpn_head.anchor_deltas.\1"),
    (r"roi_heads\.box_head\.fc6\.(\w+)", r"roi_heads.box_head.fc1.\1"),
    (r"roi_heads\.box_head\.fc7\.(\w+)", r"roi_heads.box_head.fc2.\1"),
    (r"roi_heads\.box_head\.([0-3])\.0\.(\w+)", lambda m, c: f"roi_heads.box_head.conv{_stage(m)}.{m[2]}"),
    (r"roi_heads\.box_head\.([0-3])\.1\.(\w+)", lambda m, c: f"roi_heads.box_head.conv{_stage(m)}.norm.{m[2]}"),
    (r"roi_heads\.box_head\.5\.(\w+)", r"roi_heads.box_head.fc1.\1"),
    (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(\w+)", r"roi_heads.box_predictor.\1.\2"),
    (r"roi_heads\.mask_head\.(\d)\.0\.(\w+)", lambda m, c: f"roi_heads.mask_head.mask_fcn{_stage(m)}.{m[2]}"),
    (r"roi_heads\.mask_head\.(\d)\.1\.(\w+)",
     lambda m, c: f"roi_heads.mask_head.mask_fcn{_stage(m)}.norm.{m[2]}"),
    (r"roi_heads\.mask_predictor\.conv5_mask\.(\w+)", r"roi_heads.mask_head.deconv.\1"),
    (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(\w+)", r"roi_heads.mask_head.predictor.\1"),
)  # fmt: skip


class Detectron2Layout(MappedLayout):
    """detectron2 ``GeneralizedRCNN`` weights: model-zoo ``.pkl``, trainer ``.pth`` or a bare state dict."""

    name = "detectron2"
    title = "detectron2"
    default_preset = "detectron2-r50-fpn"
    predictor_keys = (
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.mask_head.predictor.weight",
    )
    rules = _RULES
    detect = staticmethod(is_detectron2)

    def unpack(self, ckpt: Checkpoint) -> Unpacked:
        weights, kind = _d2_weights(ckpt)
        return Unpacked(weights, f"detectron2 ({kind})", extra={"author": ckpt.get("__author__")})

    def read_conventions(self, unpacked: Unpacked, config: ModelConfig) -> list[str]:
        """The author field (torchvision-converted weights are pytorch-style) and backbone-only files."""
        author, weights = unpacked.extra["author"], unpacked.weights
        if author == "torchvision" and config.backbone.style == "caffe":
            raise ValueError(
                f"{self.source}: converted from torchvision (tools/convert-torchvision-to-d2.py): pytorch-style "
                f"stride (STRIDE_IN_1X1=False) and RGB input with ImageNet std; preset {config.name!r} is "
                f"caffe-style with BGR input"
            )
        if not any(k.startswith("backbone.bottom_up.") for k in weights) and any(
            k.startswith(("stem.", "res2.")) for k in weights
        ):
            raise ValueError(
                f"{self.source}: backbone-only (ImageNet) weights ('stem.*', 'res2.*'); a full Mask R-CNN "
                f"checkpoint is needed"
            )
        return [f"author: {author}"] if author else []

    def check_weights(self, weights: dict[str, Tensor], config: ModelConfig) -> None:
        heads = (
            ("backbone.fpn_", config.backbone.fpn_norm),
            ("roi_heads.box_head.", config.roi.box_head_norm),
            ("roi_heads.mask_head.", config.roi.mask_head_norm),
        )
        refuse_head_norms(weights, heads, lambda k: ".norm." in k, config, self.source)
        if any(".conv2_offset." in k for k in weights):
            raise ValueError(f"{self.source}: deformable convolutions (conv2_offset) are not supported")
        refuse_other_box_head(any(k.startswith("roi_heads.box_head.conv") for k in weights), config, self.source)

    def ignored(self, weights: dict[str, Tensor], config: ModelConfig) -> tuple[list[str], dict[str, str]]:
        """Buffers detectron2 stores besides the parameters: checked against the preset, not converted."""
        notes = check_normalization(weights.get("pixel_mean"), weights.get("pixel_std"), config, self.source)
        ignored = {
            key: "input normalization, checked against the preset"
            for key in ("pixel_mean", "pixel_std") if key in weights
        }  # fmt: skip
        cells = sorted(
            (k for k in weights if k.startswith("proposal_generator.anchor_generator.cell_anchors.")),
            key=lambda s: int(s.rsplit(".", 1)[-1]),
        )
        if cells:
            notes += check_anchor_cells([weights[c] for c in cells], config, self.source)
            ignored.update((c, "anchor buffers, checked against the preset") for c in cells)
        if config.backbone.norm == "frozen_bn":
            ignored.update(
                (key, "BN step counter, unused by frozen BN") for key in weights if key.endswith(".num_batches_tracked")
            )
        return notes, ignored

    def assumed(self, config: ModelConfig) -> list[str]:
        return [
            "stride placement: not stored in detectron2 checkpoints; assumed MODEL.RESNETS.STRIDE_IN_1X1="
            f"{config.backbone.style == 'caffe'} as preset {config.name!r} ({config.backbone.style} style)"
        ]


LAYOUT = Detectron2Layout()
class_info = LAYOUT.class_info  # (foreground classes, None): detectron2 files store no class names


def from_detectron2(checkpoint: Checkpoint, config: ModelConfig, *, strict: bool = False) -> Converted:
    """detectron2 checkpoint (.pkl dict or trainer .pth dict) -> (isseg state dict, notes).

    Raises ``ValueError`` with the reason when the weights do not fit ``config``: Caffe2 blob names, a
    torchvision-converted (pytorch-style, RGB) backbone under a caffe preset, another class set,
    class-agnostic regression, norms in the heads the preset does not have, stored normalization or anchors
    that differ, wrong shapes, and (``strict``) missing or unknown keys.
    """
    return LAYOUT.convert(checkpoint, config, strict=strict)


def to_detectron2(state_dict: Mapping[str, Tensor], config: ModelConfig) -> dict[str, Any]:
    """isseg state dict -> ``{"model": detectron2 state dict, "__author__": ...}`` (loadable by
    ``DetectionCheckpointer``; write it with ``torch.save`` or :func:`write_detectron2_pkl`)."""
    return {"model": LAYOUT.export(state_dict, config), "__author__": "isseg"}
