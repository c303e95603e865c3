"""Building blocks of the checkpoint converters; :class:`isseg.weights.layouts.MappedLayout` runs them in order.

Every foreign layout is converted the same way: rename keys into isseg's names, check each tensor against the
shape isseg's layout for the preset expects (``isseg_layout``), permute the class rows when the checkpoint
names its classes in another order, and report what was missing, unused or filled in (``Conversion``).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isseg.config import ModelConfig, Norm

_STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_GENERIC_NAME = re.compile(r"^class_\d+$")


def norm_params(kind: Norm, channels: int) -> dict[str, tuple[int, ...]]:
    """State-dict entries of one isseg norm layer (FrozenBatchNorm2d keeps its statistics as buffers)."""
    if kind == "frozen_bn":
        return {p: (channels,) for p in ("weight", "bias", "running_mean", "running_var")}
    if kind == "bn":
        out: dict[str, tuple[int, ...]] = {
            p: (channels,) for p in ("weight", "bias", "running_mean", "running_var")
        }
        out["num_batches_tracked"] = ()
        return out
    if kind == "gn":
        return {"weight": (channels,), "bias": (channels,)}
    return {}


def isseg_layout(config: ModelConfig) -> OrderedDict[str, tuple[int, ...]]:
    """Every key of ``MaskRCNN(config).state_dict()`` with its shape, derived from the config alone.

    The converters use it to produce every key (nothing left at its initial value) and to check each tensor's
    shape before the model is built; ``tests/test_convert_*`` check it against the real module.
    """
    b, r = config.backbone, config.roi
    if b.depth not in _STAGE_BLOCKS:
        raise ValueError(f"ResNet depth {b.depth} not supported; expected one of {sorted(_STAGE_BLOCKS)}")
    out: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def norm(prefix: str, kind: Norm, channels: int) -> None:
        for name, shape in norm_params(kind, channels).items():
            out[f"{prefix}.{name}"] = shape

    def conv(prefix: str, cout: int, cin: int, k: int, kind: Norm) -> None:
        """ConvNormAct: ``.0`` conv (bias only without norm), ``.1`` norm."""
        out[f"{prefix}.0.weight"] = (cout, cin, k, k)
        if kind == "none":
            out[f"{prefix}.0.bias"] = (cout,)
        norm(f"{prefix}.1", kind, cout)

    out["backbone.body.conv1.weight"] = (64, 3, 7, 7)
    norm("backbone.body.bn1", b.norm, 64)
    cin = 64
    stage_channels = []
    for s, (blocks, width) in enumerate(zip(_STAGE_BLOCKS[b.depth], (64, 128, 256, 512)), start=1):
        cout = width * 4
        for i in range(blocks):
            p = f"backbone.body.layer{s}.{i}"
            out[f"{p}.conv1.weight"] = (width, cin, 1, 1)
            norm(f"{p}.bn1", b.norm, width)
            out[f"{p}.conv2.weight"] = (width, width, 3, 3)
            norm(f"{p}.bn2", b.norm, width)
            out[f"{p}.conv3.weight"] = (cout, width, 1, 1)
            norm(f"{p}.bn3", b.norm, cout)
            if i == 0:
                out[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                norm(f"{p}.downsample.1", b.norm, cout)
            cin = cout
        stage_channels.append(cout)
    c = b.fpn_channels
    for i, ch in enumerate(stage_channels):
        conv(f"backbone.fpn.inner_blocks.{i}", c, ch, 1, b.fpn_norm)
    for i in range(len(stage_channels)):
        conv(f"backbone.fpn.layer_blocks.{i}", c, c, 3, b.fpn_norm)
    a = len(config.anchors.aspect_ratios)
    for d in range(config.rpn.conv_depth):
        conv(f"rpn.head.conv.{d}", c, c, 3, "none")
    out["rpn.head.cls_logits.weight"] = (a, c, 1, 1)
    out["rpn.head.cls_logits.bias"] = (a,)
    out["rpn.head.bbox_pred.weight"] = (4 * a, c, 1, 1)
    out["rpn.head.bbox_pred.bias"] = (4 * a,)
    rep, k = r.representation_size, config.num_classes
    if r.box_head == "2fc":
        out["roi_heads.box_head.fc6.weight"] = (rep, c * r.box_resolution**2)
        out["roi_heads.box_head.fc6.bias"] = (rep,)
        out["roi_heads.box_head.fc7.weight"] = (rep, rep)
        out["roi_heads.box_head.fc7.bias"] = (rep,)
    else:
        for i in range(4):
            conv(f"roi_heads.box_head.{i}", c, c, 3, r.box_head_norm)
        out["roi_heads.box_head.5.weight"] = (rep, c * r.box_resolution**2)
        out["roi_heads.box_head.5.bias"] = (rep,)
    out["roi_heads.box_predictor.cls_score.weight"] = (k + 1, rep)
    out["roi_heads.box_predictor.cls_score.bias"] = (k + 1,)
    out["roi_heads.box_predictor.bbox_pred.weight"] = (4 * k, rep)
    out["roi_heads.box_predictor.bbox_pred.bias"] = (4 * k,)
    for i in range(4):
        conv(f"roi_heads.mask_head.{i}", c, c, 3, r.mask_head_norm)
    out["roi_heads.mask_predictor.conv5_mask.weight"] = (c, c, 2, 2)
    out["roi_heads.mask_predictor.conv5_mask.bias"] = (c,)
    out["roi_heads.mask_predictor.mask_fcn_logits.weight"] = (k, c, 1, 1)
    out["roi_heads.mask_predictor.mask_fcn_logits.bias"] = (k,)
    return out


def as_tensor(value: Any, key: str, source: str) -> Tensor:
    """numpy array / tensor / number -> CPU tensor; floating point becomes float32 (isseg runs in float32)."""
    if isinstance(value, Tensor):
        t = value.detach().cpu()
    elif isinstance(value, np.ndarray | np.generic | int | float):
        t = torch.as_tensor(np.ascontiguousarray(value))
    else:
        raise ValueError(f"{source}: key {key!r} holds a {type(value).__name__}, not an array")
    return t.float() if t.is_floating_point() else t


def strip_prefix(weights: Mapping[str, Any], prefixes: tuple[str, ...]) -> tuple[dict[str, Any], str | None]:
    """Remove a wrapper prefix (``module.`` of DDP, ``model.`` of Lightning/OTX) carried by every key."""
    for prefix in prefixes:
        if weights and all(k.startswith(prefix) for k in weights):
            return {k[len(prefix) :]: v for k, v in weights.items()}, prefix
    return dict(weights), None


def _norm_name(name: str) -> str:
    return " ".join(str(name).strip().lower().replace("_", " ").split())


def class_permutation(
    ckpt_names: list[str] | None, num_ckpt: int, config: ModelConfig, source: str
) -> tuple[list[int] | None, list[str]]:
    """Map the checkpoint's class order onto the preset's: ``perm[i]`` = checkpoint row of preset class i.

    Returns ``(None, notes)`` when nothing is to be reordered. Another class COUNT is only noted: the loader
    decides (error, or re-initialized class layers for fine-tuning). The same count with another set of NAMES
    raises, so that a checkpoint trained on other classes is never relabelled silently.
    """
    k = config.num_classes
    if num_ckpt != k:
        return None, [
            f"class count: checkpoint has {num_ckpt} classes, the model {k}; class-specific layers keep "
            f"the checkpoint's shape"
        ]
    if ckpt_names is None:
        return None, [f"class names: not stored in the checkpoint; using the preset's {k} names in order"]
    if len(ckpt_names) != num_ckpt:
        raise ValueError(
            f"{source}: metadata lists {len(ckpt_names)} class names but the weights have {num_ckpt} classes"
        )
    mine = [_norm_name(n) for n in config.class_names]
    theirs = [_norm_name(n) for n in ckpt_names]
    if mine == theirs:
        return None, [f"class names: {k} classes, same order as the preset"]
    if sorted(mine) == sorted(theirs) and len(set(mine)) == k:
        perm = [theirs.index(n) for n in mine]
        moved = sum(1 for i, j in enumerate(perm) if i != j)
        return perm, [
            f"class order: {moved} of {k} classes reordered from the checkpoint's order to the preset's"
        ]
    if all(_GENERIC_NAME.match(n) for n in config.class_names):
        return None, [f"class names: preset has generic names; the checkpoint's are {list(ckpt_names)}"]
    missing = [n for n, m in zip(config.class_names, mine) if m not in theirs][:5]
    extra = [n for n, t in zip(ckpt_names, theirs) if t not in mine][:5]
    raise ValueError(
        f"{source}: class names differ from preset {config.name!r}: not in checkpoint {missing}, "
        f"only in checkpoint {extra}; build the model with the checkpoint's class names"
    )


def permute_classes(state: dict[str, Tensor], perm: list[int]) -> None:
    """Reorder the class-specific rows in place; the background row of ``cls_score`` stays last."""
    k = len(perm)
    idx = torch.tensor(perm, dtype=torch.long)
    cls_idx = torch.cat([idx, torch.tensor([k])])
    box_idx = (idx[:, None] * 4 + torch.arange(4)[None, :]).reshape(-1)
    for suffix in ("weight", "bias"):
        for key, rows in (
            (f"roi_heads.box_predictor.cls_score.{suffix}", cls_idx),
            (f"roi_heads.box_predictor.bbox_pred.{suffix}", box_idx),
            (f"roi_heads.mask_predictor.mask_fcn_logits.{suffix}", idx),
        ):
            if key in state:  # absent only when the checkpoint lacked it (reported as missing)
                state[key] = state[key][rows].clone()


def check_predictor_shapes(
    weights: Mapping[str, Tensor], cls_key: str, reg_key: str, mask_key: str, source: str
) -> int:
    """Number of foreground classes K; refuses class-agnostic regression / masks (isseg is class-specific)."""
    for key in (cls_key, reg_key, mask_key):
        if key not in weights:
            raise ValueError(
                f"{source}: missing key {key!r} (box / mask predictor); is this a Mask R-CNN checkpoint?"
            )
    k = int(weights[cls_key].shape[0]) - 1
    reg = int(weights[reg_key].shape[0])
    if reg == 4 and k > 1:
        raise ValueError(
            f"{source}: {reg_key} has shape {tuple(weights[reg_key].shape)}: class-agnostic box regression; "
            f"isseg presets regress class-specific boxes ([4K, ...], K={k})"
        )
    if reg == 4 * (k + 1):
        raise ValueError(
            f"{source}: {reg_key} has {reg} rows = 4 x (K+1): box regression includes the background "
            f"(mmdetection 1.x / legacy layout); expected 4K = {4 * k}"
        )
    if reg != 4 * k:
        raise ValueError(
            f"{source}: {reg_key} has {reg} rows; expected 4K = {4 * k} for the K={k} classes of "
            f"{cls_key} (K+1 rows, background last)"
        )
    masks = int(weights[mask_key].shape[0])
    if masks != k:
        kind = "class-agnostic mask" if masks == 1 else "mask logits"
        raise ValueError(f"{source}: {mask_key} has {masks} channels ({kind}); expected one per class, K={k}")
    return k


class Conversion:
    """Collects converted tensors and what happened to every source key, for the notes."""

    def __init__(self, weights: Mapping[str, Any], source: str) -> None:
        self.weights = dict(weights)
        self.source = source
        self.used: set[str] = set()
        self.ignored: dict[str, str] = {}
        self.missing: list[tuple[str, str]] = []  # (foreign key, isseg key)
        self.filled: list[str] = []
        self.state: OrderedDict[str, Tensor] = OrderedDict()

    def take(self, isseg_key: str, foreign_key: str, shape: tuple[int, ...]) -> None:
        if foreign_key not in self.weights:
            self.missing.append((foreign_key, isseg_key))
            return
        t = as_tensor(self.weights[foreign_key], foreign_key, self.source)
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{self.source}: key {foreign_key!r} has shape {tuple(t.shape)}, expected {shape} for isseg "
                f"{isseg_key!r}; the checkpoint does not fit this preset"
            )
        self.state[isseg_key] = t
        self.used.add(foreign_key)

    def leftovers(self) -> list[str]:
        return sorted(k for k in self.weights if k not in self.used and k not in self.ignored)

    def finish(
        self, notes: list[str], strict: bool, expected: Mapping[str, tuple[int, ...]], layout: str
    ) -> None:
        """Report what happened to every key. ``strict``: missing or unknown keys raise here. Otherwise
        missing isseg keys stay absent and unknown source keys are passed on as ``"<layout>:<key>"``, so the
        loader lists them as missing / unused (and refuses them when it is strict)."""
        unused = self.leftovers()
        missing = [f"{f} (for {i})" for f, i in self.missing]
        if missing and strict:
            raise ValueError(f"{self.source}: {len(missing)} missing key(s): {short_list(missing)}")
        if unused and strict:
            raise ValueError(
                f"{self.source}: {len(unused)} key(s) that no isseg parameter takes (another architecture or "
                f"extra heads?): {short_list(unused)}"
            )
        notes.append(
            f"keys converted: {len(self.state)} of {len(expected)} isseg keys from {len(self.used)} "
            f"source keys"
        )
        if self.filled:
            notes.append(f"filled with identity statistics ({len(self.filled)}): {short_list(self.filled)}")
        reasons: dict[str, list[str]] = {}
        for k, why in sorted(self.ignored.items()):
            reasons.setdefault(why, []).append(k)
        for why, keys in reasons.items():
            notes.append(f"ignored ({why}): {len(keys)} key(s): {short_list(keys)}")
        notes.append(f"unused keys: {len(unused)}" + (f": {short_list(unused)}" if unused else ""))
        notes.append(f"missing keys: {len(missing)}" + (f": {short_list(missing)}" if missing else ""))
        for key in unused:
            self.state[f"{layout}:{key}"] = as_tensor(self.weights[key], key, self.source)


def short_list(keys: list[str], limit: int = 8) -> str:
    """The first ``limit`` keys, comma-separated, and how many more there are."""
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_anchor_cells(cells: list[Tensor], config: ModelConfig, source: str) -> list[str]:
    """Compare stored cell anchors (old detectron2 files) with the preset's; refuse other anchor sets."""
    from isseg.model.anchors import base_anchors

    a = config.anchors
    if len(cells) != len(a.sizes):
        raise ValueError(
            f"{source}: checkpoint has anchors for {len(cells)} levels, preset has {len(a.sizes)}"
        )
    worst = 0.0
    for level, (cell, size) in enumerate(zip(cells, a.sizes)):
        mine = base_anchors(size, a.aspect_ratios, a.round_base)
        if tuple(cell.shape) != tuple(mine.shape):
            raise ValueError(
                f"{source}: cell anchors of level {level} have shape {tuple(cell.shape)}, "
                f"preset {tuple(mine.shape)}"
            )
        worst = max(worst, float((cell.float() - mine).abs().max()))
    if worst > 1.0:
        raise ValueError(
            f"{source}: stored cell anchors differ from the preset's by {worst:.2f} px "
            f"(other anchor sizes / ratios)"
        )
    return [f"cell anchors: match the preset's within {worst:.3g} px"]


def check_normalization(
    mean: Tensor | None, std: Tensor | None, config: ModelConfig, source: str
) -> list[str]:
    """Refuse stored pixel mean / std (in the network's channel order) that differ from the preset's."""
    notes = []
    for name, stored, mine in (("pixel_mean", mean, config.input.mean), ("pixel_std", std, config.input.std)):
        if stored is None:
            continue
        vals = [float(v) for v in stored.reshape(-1)]
        if len(vals) != 3 or any(not math.isclose(x, y, abs_tol=1e-3) for x, y in zip(vals, mine)):
            raise ValueError(
                f"{source}: {name} {vals} differs from preset {config.name!r} ({list(mine)}, "
                f"{config.input.channel_order.upper()}); the weights expect another input normalization"
            )
        notes.append(f"{name}: {vals} matches the preset")
    return notes


def convert_keys(
    weights: Mapping[str, Any], config: ModelConfig, rename: Callable[[str], str], conv: Conversion
) -> OrderedDict[str, tuple[int, ...]]:
    """Pull every isseg key through ``rename`` (isseg name -> foreign name); returns the expected layout."""
    expected = isseg_layout(config)
    for key, shape in expected.items():
        conv.take(key, rename(key), shape)
    return expected


def fill_bn_statistics(
    conv: Conversion, expected: Mapping[str, tuple[int, ...]], rename: Callable[[str], str]
) -> None:
    """Frozen BN without running statistics (detectron2 FrozenBatchNorm2d versions < 2) -> mean 0, var 1.

    detectron2 itself fills the same values (``FrozenBatchNorm2d._load_from_state_dict`` in
    ``detectron2/layers/batch_norm.py``), so the converted model computes what detectron2 computes.
    """
    still_missing = []
    for foreign, isseg_key in conv.missing:
        stat = isseg_key.rsplit(".", 1)[-1]
        owner = isseg_key.rsplit(".", 1)[0]
        has_affine = rename(f"{owner}.weight") in conv.used
        if stat in ("running_mean", "running_var") and has_affine:
            shape = expected[isseg_key]
            conv.state[isseg_key] = torch.zeros(shape) if stat == "running_mean" else torch.ones(shape)
            conv.filled.append(foreign)
        elif stat == "num_batches_tracked":
            conv.state[isseg_key] = torch.tensor(0, dtype=torch.long)
            conv.filled.append(foreign)
        else:
            still_missing.append((foreign, isseg_key))
    conv.missing = still_missing
    # keep the isseg key order of the layout
    conv.state = OrderedDict((k, conv.state[k]) for k in expected if k in conv.state)
