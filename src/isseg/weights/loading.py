"""Read any supported checkpoint, recognise its layout, convert it and load it with a full report.

Layouts: isseg (self-describing: config + class names inside), torchvision state dicts, detectron2
(model-zoo ``.pkl`` and trainer ``.pth``), mmdetection 2.x / 3.x (``state_dict`` + ``meta``).
Nothing is loaded silently: every checkpoint key is either used or reported, and every model key is
either filled or reported.

Every layout is a :class:`~isseg.weights.layouts.Layout` object in the registry :data:`LAYOUTS`; detection asks
each in turn, conversion, class count and default preset go through the one that answered. A layout converts
the class-specific layers for whatever class count the checkpoint has (background last) and leaves the count
check to this loader, but refuses architecture mismatches with a ValueError.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from isseg.config import COCO_CLASSES, ModelConfig, get_config
from isseg.weights import checkpoint, detectron2, mmdet, registry
from isseg.weights import torchvision as tv
from isseg.weights.checkpoint import FORMAT, check_architecture, save_checkpoint
from isseg.weights.layouts import Layout

__all__ = ["LAYOUTS", "LoadReport", "apply_checkpoint", "load_model", "load_weights", "read_checkpoint",
           "save_checkpoint"]

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (checkpoint.LAYOUT, tv.LAYOUT, checkpoint.STATE_DICT_LAYOUT, detectron2.LAYOUT, mmdet.LAYOUT)
}
"""Every layout isseg reads, by name, in the order detection asks them: isseg's own format first; torchvision
before a bare isseg-named state dict (torchvision's names are isseg's, with a background row in ``bbox_pred``)."""


@dataclass
class LoadReport:
    layout: str
    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint did not fill
    unused: list[str] = field(default_factory=list)  # checkpoint keys the model has no place for
    reinitialized: list[str] = field(default_factory=list)  # class-specific keys skipped on purpose
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.layout} layout, {self.loaded} tensors loaded"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.reinitialized:
            lines.append(f"  re-initialized (class count differs): {', '.join(self.reinitialized)}")
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {', '.join(self.missing[:8])}")
        if self.unused:
            lines.append(f"  unused ({len(self.unused)}): {', '.join(self.unused[:8])}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ reading
def read_checkpoint(source: str | Path) -> tuple[Any, str]:
    """The raw checkpoint object and a display name. ``source`` is a path or a registry name."""
    path = Path(source)
    if not path.exists() and str(source) in registry.REGISTRY:
        path = registry.resolve(str(source))
    if not path.exists():
        hint = f"; registry names: {sorted(registry.REGISTRY)}" if os.sep not in str(source) else ""
        raise FileNotFoundError(f"checkpoint not found: {source}{hint}")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a checkpoint file (.pth, .pt or .pkl)")
    if path.suffix == ".pkl":  # detectron2 model zoo: numpy arrays only, read without running code
        return detectron2.read_detectron2_pkl(path), str(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), str(path)
    except pickle.UnpicklingError:
        pass  # may still be a trusted checkpoint holding numpy / custom objects (mmdetection meta)
    except Exception as exc:
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False), str(path)
    except Exception as exc:
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


def detect_layout(ckpt: Any) -> Layout:
    """The registered layout of a raw checkpoint object."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"expected a checkpoint dictionary, got {type(ckpt).__name__}")
    for layout in LAYOUTS.values():
        if layout.detect(ckpt):
            return layout
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    keys = list(state)[:5] if isinstance(state, dict) else []
    raise ValueError(f"unrecognized checkpoint layout (first keys: {keys}); expected an isseg, torchvision, "
                     "detectron2 or mmdetection Mask R-CNN checkpoint")


def other_architecture(tensors: dict[str, Tensor]) -> str | None:
    """What a torchvision / isseg-named state dict is, when it is not a Mask R-CNN isseg can load: a Faster
    R-CNN (no mask head) or a Keypoint R-CNN."""
    if any(k.startswith("roi_heads.keypoint_") for k in tensors):
        return "a Keypoint R-CNN checkpoint (keypoint head, no mask head)"
    has_boxes = "roi_heads.box_predictor.cls_score.weight" in tensors
    if has_boxes and not any(k.startswith("roi_heads.mask_predictor.") for k in tensors):
        return "a Faster R-CNN checkpoint (box head only, no mask head)"
    return None


def _backbone_depth(tensors: dict[str, Tensor]) -> int | None:
    """ResNet depth from the number of blocks in layer3 (and the block type): 18/34/50/101/152."""
    blocks = {int(k.split(".")[3]) for k in tensors if k.startswith("backbone.body.layer3.")}
    if not blocks:
        return None
    n = max(blocks) + 1
    bottleneck = any(k.startswith("backbone.body.layer3.0.conv3.") for k in tensors)
    table = {(2, False): 18, (6, False): 34, (6, True): 50, (23, True): 101, (36, True): 152}
    return table.get((n, bottleneck))


def convert(ckpt: Any, config: ModelConfig) -> tuple[str, dict[str, Tensor], list[str]]:
    """(layout name, state dict in isseg's layout, notes) for the model described by ``config``."""
    layout = detect_layout(ckpt)
    tensors = layout.native_tensors(ckpt)
    if tensors:
        other = other_architecture(tensors)
        if other:
            raise ValueError(f"{other}; isseg needs a Mask R-CNN (box and mask heads)")
        depth = _backbone_depth(tensors)
        if depth is not None and depth != config.backbone.depth:
            raise ValueError(f"the checkpoint has a ResNet-{depth} backbone, the {config.name!r} model a "
                             f"ResNet-{config.backbone.depth} one (pass a preset / --set backbone.depth={depth})")
    state, notes = layout.convert(ckpt, config)
    return layout.name, state, notes


# ------------------------------------------------------------------------------------------------ loading
def load_weights(model: torch.nn.Module, source: str | Path, strict: bool = True,
                 reinit_class_layers: bool = False) -> LoadReport:
    """Load ``source`` (path or registry name) into ``model``, converting its layout.

    ``strict``: any missing, unused or mis-shaped key is an error that lists the first few.
    ``reinit_class_layers``: class-specific layers whose class count (or, for isseg checkpoints, class
    names) differ keep the model's initial values (fine-tuning on another dataset); they are listed in the
    report.
    """
    ckpt, name = read_checkpoint(source)
    return apply_checkpoint(model, ckpt, name, strict, reinit_class_layers)


def apply_checkpoint(model: torch.nn.Module, ckpt: Any, name: str, strict: bool = True,
                     reinit_class_layers: bool = False) -> LoadReport:
    """``load_weights`` for a checkpoint already read with ``read_checkpoint``."""
    config: ModelConfig = model.config  # type: ignore[assignment]
    try:
        layout, state, notes = convert(ckpt, config)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from exc
    report = LoadReport(layout, name, notes=notes)
    own = model.state_dict()
    # BatchNorm's num_batches_tracked counts training steps and carries no weight: a checkpoint trained with
    # BatchNorm2d loads into frozen BN (and the reverse) without it
    counters = [k for k in state if k.endswith("num_batches_tracked") and k not in own]
    for k in counters:
        del state[k]
    if counters:
        report.notes.append(f"ignored {len(counters)} BatchNorm num_batches_tracked counter(s) (no weights)")
    if reinit_class_layers and layout == "isseg":
        saved_names = tuple(ckpt["config"].get("class_names", ()))
        if saved_names != config.class_names:  # same count, other classes: the class rows mean nothing here
            report.reinitialized.extend(k for k in tv.CLASS_KEYS if k in state)
            for key in tv.CLASS_KEYS:
                state.pop(key, None)
    mismatched = []
    for key in list(state):
        if key in own and state[key].shape != own[key].shape:
            if reinit_class_layers and key in tv.CLASS_KEYS:
                report.reinitialized.append(key)
                del state[key]
            else:
                mismatched.append(f"{key}: checkpoint {tuple(state[key].shape)}, model {tuple(own[key].shape)}")
    report.missing = sorted(k for k in own if k not in state and k not in report.reinitialized
                            and not k.endswith("num_batches_tracked"))
    report.unused = sorted(k for k in state if k not in own)
    if strict and (mismatched or report.missing or report.unused):
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:5]))
        if report.missing:
            parts.append(f"{len(report.missing)} missing key(s): " + ", ".join(report.missing[:5]))
        if report.unused:
            parts.append(f"{len(report.unused)} unexpected key(s): " + ", ".join(report.unused[:5]))
        hint = ""
        if any("box_predictor" in m or "mask_fcn_logits" in m for m in mismatched):
            hint = " (another number of classes: pass reinit_class_layers=True to fine-tune)"
        raise ValueError(f"{name} ({layout} layout) does not fit the {config.name!r} model: "
                         + " | ".join(parts) + hint)
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    return report


def checkpoint_config(ckpt: Any, source: str, preset: str | None = None, num_classes: int | None = None
                      ) -> ModelConfig:
    """The config a checkpoint needs: its own (isseg), else ``preset`` or the layout's natural preset,
    with the class count read from the classifier's shape."""
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        saved = ModelConfig.from_dict(ckpt["config"])
        if preset is not None and preset != saved.name:
            cfg = get_config(preset, class_names=saved.class_names)
            check_architecture(saved, cfg)
            return cfg
        return saved
    layout = detect_layout(ckpt)
    count, names = layout.class_info(ckpt)
    if num_classes is not None and num_classes != count:
        raise ValueError(f"{source}: has {count} classes but num_classes={num_classes} was asked for")
    if names is None:
        names = list(COCO_CLASSES) if count == 80 else [f"class_{i}" for i in range(count)]
    return get_config(preset or layout.preset(ckpt), class_names=tuple(names))


def load_model(weights: str | Path, preset: str | None = None, num_classes: int | None = None):
    """Build the model a checkpoint describes and load it: the one-call way to get a ready model."""
    from isseg.model.mask_rcnn import MaskRCNN

    source = str(weights)
    if preset is None and source in registry.REGISTRY and not Path(source).exists():
        preset = registry.REGISTRY[source].preset
    ckpt, name = read_checkpoint(source)
    try:
        config = checkpoint_config(ckpt, name, preset, num_classes)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from exc
    model = MaskRCNN(config)
    apply_checkpoint(model, ckpt, name)
    return model.eval()
