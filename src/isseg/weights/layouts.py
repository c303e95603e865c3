"""The converter protocol: one object per checkpoint layout, and the one driver for layouts that only rename.

A :class:`Layout` answers what the loader asks of a raw checkpoint object: is it mine (``detect``), how many and
which classes does it hold (``class_info``), which preset fits it when none is given (``preset``), and what is it
in isseg's layout (``convert``). :mod:`isseg.weights.loading` keeps the registry of layouts (``LAYOUTS``) and
dispatches through it; the layouts are defined next to their format (:mod:`isseg.weights.checkpoint`,
:mod:`isseg.weights.torchvision`, :mod:`isseg.weights.detectron2`, :mod:`isseg.weights.mmdet`).

detectron2 and mmdetection name the same tensors differently, so they are :class:`MappedLayout` s: each supplies
the small pieces (``unpack`` the container, ``read_conventions`` stored beside the weights, ``check_weights``
for what the preset cannot represent, ``ignored`` keys, and ``rules`` that map each isseg key to its own name),
and :meth:`MappedLayout.convert` runs them in one order: unpack, check, match the classes, pull every isseg key
through the rules with its shape checked, fill frozen-BN statistics, permute the classes, and account for
every source key (unused and missing keys are reported, or refused when ``strict``).
:meth:`MappedLayout.export` is the reverse, for the writers.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from isseg.config import ModelConfig, Norm
from isseg.weights.conversion import (
    Conversion,
    as_tensor,
    check_predictor_shapes,
    class_permutation,
    convert_keys,
    fill_bn_statistics,
    isseg_layout,
    permute_classes,
    short_list,
)

Checkpoint = Mapping[str, Any]
Converted = tuple[dict[str, Tensor], list[str]]  # (state dict in isseg's names, notes for the report)
# isseg key pattern -> the layout's name: a template for ``Match.expand`` or a function of the match and config
RenameRule = tuple[re.Pattern[str], str | Callable[[re.Match[str], ModelConfig], str]]


def tensor_dict(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of a state dict (numpy arrays become tensors sharing their memory); other entries dropped."""
    out = {}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, Tensor):
            out[k] = v
    return out


def state_tensors(ckpt: Checkpoint) -> dict[str, Tensor]:
    """The tensors of the state dict inside ``ckpt``: under ``model``, else ``state_dict``, else ``ckpt`` itself."""
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    return tensor_dict(state) if isinstance(state, dict) else {}


class Layout(ABC):
    """One checkpoint layout; ``name`` is what the load report shows."""

    name: ClassVar[str]
    default_preset: ClassVar[str] = "security-0002"

    @abstractmethod
    def detect(self, ckpt: Checkpoint) -> bool:
        """Whether ``ckpt`` (a dict) is in this layout."""

    @abstractmethod
    def convert(self, ckpt: Checkpoint, config: ModelConfig, *, strict: bool = False) -> Converted:
        """(isseg state dict, notes) for a model built from ``config``.

        The class-specific layers keep the checkpoint's class count (the loader compares it with the model's);
        an architecture the preset cannot represent is a ``ValueError`` that says why. ``strict`` matters to
        renamed layouts (missing or unknown keys raise); layouts already in isseg's names leave the key
        accounting to the loader.
        """

    @abstractmethod
    def class_info(self, ckpt: Checkpoint) -> tuple[int, list[str] | None]:
        """(number of foreground classes, class names or None when the checkpoint does not store them)."""

    def preset(self, ckpt: Checkpoint) -> str:
        """The preset a checkpoint of this layout is loaded into when none is asked for."""
        return self.default_preset

    def native_tensors(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        """The checkpoint's tensors when they already carry isseg's names (architecture checks); else {}."""
        return {}


@dataclass
class Unpacked:
    """What a :class:`MappedLayout` finds in a checkpoint container."""

    weights: dict[str, Any]  # the layout's key -> array, wrapper prefixes (DDP ``module.``) removed
    description: str  # the layout and container, for the first note: "detectron2 (model-zoo .pkl)"
    class_names: list[str] | None = None  # in the checkpoint's order, where stored
    extra: dict[str, Any] = field(default_factory=dict)  # what else the layout reads later (author, meta)


class MappedLayout(Layout):
    """A layout whose tensors are isseg's under other names; subclasses supply the pieces, ``convert`` runs them."""

    title: ClassVar[str]  # the library's name in messages: "detectron2", "mmdetection"
    predictor_keys: ClassVar[tuple[str, str, str]]  # class scores [K+1], box deltas [4K], mask logits [K]
    rules: ClassVar[tuple[RenameRule, ...]]

    @property
    def source(self) -> str:
        return f"{self.title} checkpoint"

    @abstractmethod
    def unpack(self, ckpt: Checkpoint) -> Unpacked:
        """The weights and what the container says about them; ``ValueError`` for a refused container."""

    def read_conventions(self, unpacked: Unpacked, config: ModelConfig) -> list[str]:
        """Notes on what the container records (training config, author); refuses conventions that differ."""
        return []

    def check_weights(self, weights: dict[str, Tensor], config: ModelConfig) -> None:
        """Refuse weights the preset cannot represent (other heads, norms), before any key is converted."""

    def ignored(self, weights: dict[str, Tensor], config: ModelConfig) -> tuple[list[str], dict[str, str]]:
        """(notes, {key: why}) for keys that are checked or deliberately dropped rather than converted."""
        return [], {}

    def assumed(self, config: ModelConfig) -> list[str]:
        """Notes on conventions the checkpoint cannot tell and the preset decides."""
        return []

    def rename(self, key: str, config: ModelConfig) -> str:
        """isseg key -> this layout's key (``KeyError`` for a key without a counterpart)."""
        for pattern, build in self.rules:
            m = pattern.fullmatch(key)
            if m:
                return m.expand(build) if isinstance(build, str) else build(m, config)
        raise KeyError(f"isseg key {key!r} has no {self.title} counterpart")

    def class_info(self, ckpt: Checkpoint) -> tuple[int, list[str] | None]:
        unpacked = self.unpack(ckpt)
        w = unpacked.weights.get(self.predictor_keys[0])
        if w is None:
            raise ValueError(f"{self.source}: no {self.predictor_keys[0]!r}")
        return int(w.shape[0]) - 1, unpacked.class_names

    def convert(self, ckpt: Checkpoint, config: ModelConfig, *, strict: bool = False) -> Converted:
        """The one driver. ``strict``: missing or unknown keys raise; otherwise missing isseg keys stay absent
        and unknown source keys are passed on as ``"<name>:<key>"`` for the loader to report (or refuse)."""
        source = self.source
        unpacked = self.unpack(ckpt)
        notes = [f"layout: {unpacked.description}", *self.read_conventions(unpacked, config)]
        weights = {k: as_tensor(v, k, source) for k, v in unpacked.weights.items()}
        self.check_weights(weights, config)
        k = check_predictor_shapes(weights, *self.predictor_keys, source)
        perm, class_notes = class_permutation(unpacked.class_names, k, config, source)
        notes += class_notes
        conv = Conversion(weights, source)
        buffer_notes, conv.ignored = self.ignored(weights, config)
        notes += buffer_notes

        def rename(key: str) -> str:
            return self.rename(key, config)

        # shapes are checked for the checkpoint's class count; the loader compares it with the model's
        shape_config = (
            config if k == config.num_classes else config.with_classes([f"class_{i}" for i in range(k)])
        )
        expected = convert_keys(weights, shape_config, rename, conv)
        fill_bn_statistics(conv, expected, rename)
        notes += self.assumed(config)
        if perm is not None:
            permute_classes(conv.state, perm)
        conv.finish(notes, strict, expected, self.name)
        return conv.state, notes

    def export(self, state_dict: Mapping[str, Tensor], config: ModelConfig) -> OrderedDict[str, Tensor]:
        """isseg state dict (every key of the preset, nothing else) -> this layout's names, CPU copies."""
        expected = isseg_layout(config)
        missing = [k for k in expected if k not in state_dict]
        extra = [k for k in state_dict if k not in expected]
        if missing or extra:
            parts = [f"{len(missing)} missing key(s): {short_list(missing)}"] if missing else []
            parts += [f"{len(extra)} unexpected key(s): {short_list(extra)}"] if extra else []
            raise ValueError(f"isseg state dict does not fit preset {config.name!r}: {'; '.join(parts)}")
        out: OrderedDict[str, Tensor] = OrderedDict()
        for key, shape in expected.items():
            t = state_dict[key]
            if tuple(t.shape) != shape:
                raise ValueError(f"isseg state dict: {key!r} has shape {tuple(t.shape)}, expected {shape}")
            out[self.rename(key, config)] = t.detach().cpu().clone()
        return out


def compile_rules(*rules: tuple[str, str | Callable[[re.Match[str], ModelConfig], str]]) -> tuple[RenameRule, ...]:
    """Rename rules with their patterns compiled once."""
    return tuple((re.compile(pattern), build) for pattern, build in rules)


def refuse_head_norms(
    weights: Iterable[str], heads: Iterable[tuple[str, Norm]], is_norm: Callable[[str], bool], config: ModelConfig,
    source: str,
) -> None:
    """Refuse normalization layers under a key prefix where the preset has none (GN / BN heads or FPN)."""
    keys = list(weights)
    for prefix, kind in heads:
        if kind == "none" and any(k.startswith(prefix) and is_norm(k) for k in keys):
            raise ValueError(
                f"{source}: '{prefix}*' has normalization layers (GN / BN heads); preset "
                f"{config.name!r} has none there"
            )


def refuse_other_box_head(has_convs: bool, config: ModelConfig, source: str) -> None:
    """Refuse a box head with convolutions (4conv1fc) under a 2fc preset, and the reverse."""
    if has_convs != (config.roi.box_head == "4conv1fc"):
        has = "4conv1fc" if has_convs else "2fc"
        raise ValueError(f"{source}: box head is {has}, preset {config.name!r} uses {config.roi.box_head}")
