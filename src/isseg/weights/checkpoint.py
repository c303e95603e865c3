"""The isseg checkpoint format, one owner: what a checkpoint holds and the one crash-safe way to write it.

``{"format": "isseg", "version": 1, "config": ModelConfig.to_dict(), "model": state_dict, ...}`` plus whatever
the writer adds (the trainer: optimizer, scaler, iteration, RNG states, ``confidence_threshold``, and ``tiling``
for a run trained on tiles: :func:`checkpoint_tiling`). The config makes a checkpoint
self-describing: the preset, its classes and its inference size travel with the weights.

A checkpoint is written with :func:`isseg.atomic.atomic_write`: a process killed at any moment leaves either the
previous checkpoint or the new one, never a truncated file. It is read as the layout :data:`LAYOUT`; a bare
state dict in isseg's names (no config) is :data:`STATE_DICT_LAYOUT`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from isseg.atomic import atomic_write
from isseg.config import ModelConfig
from isseg.weights.layouts import Checkpoint, Converted, Layout, state_tensors, tensor_dict

if TYPE_CHECKING:
    from isseg.tiling.options import TilingOptions

FORMAT = "isseg"
VERSION = 1


def checkpoint_payload(model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """The checkpoint dictionary of ``model`` (a ``MaskRCNN``) with ``extra`` entries."""
    return {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),  # type: ignore[union-attr]
            "model": model.state_dict(), **extra}


def stored_entry(path: str | Path, key: str) -> Any:
    """One top-level entry of an isseg checkpoint file (``confidence_threshold``, ``tiling``, ...), or None: not a
    ``.pth`` / ``.pt`` file, no such entry, unreadable. Only that entry is read (``mmap``), so a large checkpoint
    costs little."""
    import pickle

    file = Path(path)
    if not file.is_file() or file.suffix.lower() not in (".pth", ".pt"):
        return None
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError:  # a training run's last.pth also holds RNG states (numpy objects)
            state = torch.load(file, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - foreign / legacy / damaged files: no stored entry
        return None
    return state.get(key) if isinstance(state, dict) else None


def checkpoint_tiling(path: str | Path) -> TilingOptions | None:
    """The tiled inference a checkpoint trained on tiles stores (``tiling``, written by ``isseg train --tile``),
    or None; a damaged entry is one ValueError naming the file."""
    from isseg.tiling.options import TilingOptions

    raw = stored_entry(path, "tiling")
    if raw is None:
        return None
    try:
        return TilingOptions.from_json(str(raw))
    except ValueError as exc:
        raise ValueError(f"{path}: its 'tiling' entry: {exc}") from None


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves ``path`` half-written (:func:`isseg.atomic.atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(path: str | Path, model: torch.nn.Module, **extra: Any) -> Path:
    """Write an isseg checkpoint of ``model`` atomically."""
    return atomic_save(checkpoint_payload(model, **extra), path)


_ARCH_FIELDS = {
    "backbone": ("depth", "style", "fpn_channels", "fpn_norm"),
    "rpn": ("conv_depth",),
    "roi": ("box_head", "box_head_norm", "mask_head_norm", "representation_size"),
}


def check_architecture(saved: ModelConfig, target: ModelConfig) -> None:
    """Refuse weights trained for another architecture even where tensor shapes would agree
    (e.g. caffe vs pytorch stride placement)."""
    diffs = []
    for section, names in _ARCH_FIELDS.items():
        for name in names:
            a, b = getattr(getattr(saved, section), name), getattr(getattr(target, section), name)
            if a != b:
                diffs.append(f"{section}.{name}: checkpoint {a!r}, model {b!r}")
    if diffs:
        raise ValueError(f"checkpoint of preset {saved.name!r} does not fit a {target.name!r} model: "
                         + "; ".join(diffs))


class IssegLayout(Layout):
    """isseg's own checkpoint: the weights with the config (preset, classes) they were trained with."""

    name = "isseg"

    def detect(self, ckpt: Checkpoint) -> bool:
        return ckpt.get("format") == FORMAT

    def native_tensors(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        return tensor_dict(ckpt["model"])

    def convert(self, ckpt: Checkpoint, config: ModelConfig, *, strict: bool = False) -> Converted:
        check_architecture(ModelConfig.from_dict(ckpt["config"]), config)
        return self.native_tensors(ckpt), []

    def class_info(self, ckpt: Checkpoint) -> tuple[int, list[str] | None]:
        names = ModelConfig.from_dict(ckpt["config"]).class_names
        return len(names), list(names)

    def preset(self, ckpt: Checkpoint) -> str:
        return ModelConfig.from_dict(ckpt["config"]).name


class IssegStateDictLayout(Layout):
    """A bare ``MaskRCNN.state_dict()`` (isseg's names, no config): loaded into the default preset."""

    name = "isseg-state-dict"

    def detect(self, ckpt: Checkpoint) -> bool:
        tensors = state_tensors(ckpt)
        return "roi_heads.box_predictor.cls_score.weight" in tensors and "backbone.body.conv1.weight" in tensors

    def native_tensors(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        return state_tensors(ckpt)

    def convert(self, ckpt: Checkpoint, config: ModelConfig, *, strict: bool = False) -> Converted:
        return state_tensors(ckpt), []

    def class_info(self, ckpt: Checkpoint) -> tuple[int, list[str] | None]:
        return state_tensors(ckpt)["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1, None


LAYOUT = IssegLayout()
STATE_DICT_LAYOUT = IssegStateDictLayout()
