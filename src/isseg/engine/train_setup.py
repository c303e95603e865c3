"""The pieces a training run is built from: the model preset for the dataset's classes, the training dataset
(every image checked before the first step), the model (optionally from pretrained weights), the optimizer
and the DDP wrapper. :mod:`isseg.engine.trainer` assembles them in this order.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import torch
from torch import nn

from isseg.config import ModelConfig, get_config
from isseg.engine.config_overrides import apply_overrides
from isseg.engine.train_config import TrainConfig


def model_config_for(cfg: TrainConfig, resume_state: dict[str, Any] | None) -> ModelConfig:
    """The resumed checkpoint's preset, else ``cfg.preset`` for the annotation file's categories (sorted by
    id), with ``cfg.overrides``, ``cfg.freeze_stages`` and ``cfg.scale_jitter`` (the training sizes) applied."""
    if resume_state is not None:
        return ModelConfig.from_dict(resume_state["config"])
    from isseg.data.coco import load_coco_json

    cats = sorted(load_coco_json(cfg.data)["categories"], key=lambda c: c["id"])
    names = tuple(c["name"] for c in cats)
    if not names:
        raise ValueError(f"{cfg.data}: 'categories' is empty; training needs at least one class")
    mc = get_config(cfg.preset, class_names=names)
    mc = apply_overrides(mc, cfg.overrides)
    if cfg.freeze_stages is not None:
        mc = dataclasses.replace(mc, backbone=dataclasses.replace(mc.backbone, frozen_stages=cfg.freeze_stages))
    if cfg.scale_jitter > 0:
        from isseg.engine.augment import jittered_sizes

        limit = mc.input.size[1] if mc.input.resize == "shortest_edge" else None
        sizes = jittered_sizes(mc.input.size[0], cfg.scale_jitter, limit)
        mc = dataclasses.replace(mc, input=dataclasses.replace(mc.input, train_sizes=sizes))
    return mc


def training_dataset(cfg: TrainConfig, model_config: ModelConfig, main: bool) -> Any:
    """The ``CocoDataset`` of ``cfg.data`` / ``cfg.images`` (images without a usable annotation left out, the
    colour jitter and random flip of ``cfg.color_jitter`` / ``cfg.horizontal_flip``), after the pre-flight
    check of every image; with ``cfg.tile``, its tiles (:class:`isseg.data.tiles.TileDataset`)."""
    from isseg.data.coco import CocoDataset
    from isseg.engine.augment import training_transform

    transform = training_transform(cfg.horizontal_flip, cfg.color_jitter)
    ds = CocoDataset(cfg.data, cfg.images, train=True, class_names=model_config.class_names,
                     transform=transform, skip_empty=True)
    _preflight(ds, cfg, main)
    if len(ds) == 0:
        raise ValueError(f"{cfg.data}: no image with a usable (non-crowd, >= 1 px) annotation to train on")
    if cfg.tile is not None:
        from isseg.data.tiles import TileDataset

        return TileDataset(ds, cfg.tile, cfg.tile_empty)
    return ds


def _preflight(ds: Any, cfg: TrainConfig, main: bool) -> None:
    """Check every training image before the first step (a bad file would otherwise stop the run when it
    is first sampled, maybe hours in): list each bad one, then stop, or leave them out (skip_bad_images)."""
    bad = ds.preflight(progress=main and cfg.progress, workers=max(1, cfg.workers))
    if not bad:
        return
    total = len(ds)
    if main:
        for _, reason in bad:
            print(f"isseg train: bad image: {reason}", file=sys.stderr)
    if not cfg.skip_bad_images:
        raise ValueError(f"{ds.annotation_file}: {len(bad)} of {total} training image(s) cannot be used (listed "
                         f"above); fix them, or pass --skip-bad-images to train on the other {total - len(bad)}")
    ds.drop([i for i, _ in bad])
    if main:
        print(f"isseg train: --skip-bad-images: training on {len(ds)} of {total} image(s)", file=sys.stderr)


def build_train_model(cfg: TrainConfig, model_config: ModelConfig, device: torch.device, world: int, main: bool,
                      resuming: bool) -> nn.Module:
    """The MaskRCNN of ``model_config`` on ``device``: initialized from ``cfg.weights`` unless ``resuming``,
    with SyncBatchNorm when ``cfg.sync_bn`` under DDP on CUDA."""
    from isseg.model.mask_rcnn import build_model

    model = build_model(model_config)
    if not resuming and cfg.weights:
        _load_pretrained(model, cfg.weights, main)
    if cfg.sync_bn and world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device)


def _load_pretrained(model: nn.Module, weights: str, verbose: bool) -> None:
    """Initialize from ``weights``; class-specific layers whose shape differs (other classes) are skipped,
    so the backbone, FPN, RPN and the shared heads are kept and the predictors start fresh."""
    from isseg.weights.loading import load_weights

    report = load_weights(model, weights, strict=True, reinit_class_layers=True)
    if verbose:
        print(f"isseg train: initialized from {report}")


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                    weight_decay_norm: float = 0.0, kind: str = "sgd", fuse: bool = True) -> torch.optim.Optimizer:
    """SGD with momentum (``kind="sgd"``) or AdamW (``"adamw"``: decoupled weight decay, betas ``(momentum,
    0.999)``) over the trainable parameters; norm layers' affine parameters get ``weight_decay_norm`` (decaying a
    GroupNorm / BN scale towards 0 fights the normalization). ``fuse``: torch's fused step where it has one
    (:func:`_fusable`); ``False`` steps tensor by tensor (the same update up to float rounding)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    norm_types = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)
    seen: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, norm_types) else decay).append(p)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": weight_decay_norm})
    fused = _fusable(decay + no_decay) if fuse else None
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), fused=fused)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused)


def _fusable(params: list[nn.Parameter]) -> bool | None:
    """Whether the optimizer can run fused (one kernel over all parameters: on one thread of a 2-vCPU Xeon an
    AdamW step of the fast-cpu model's 13.5 M parameters takes 13.4 ms fused against 60.4 tensor by tensor, SGD 8.5
    against 17.5; ``benchmarks/optimizer_step.py``): torch >= 2.4 fuses on CPU and CUDA, for floating-point
    parameters on one device type. ``None`` lets torch choose otherwise."""
    devices = {p.device.type for p in params}
    ok = len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    cpu_fused = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)
    return True if ok and (cpu_fused or devices == {"cuda"}) else None


def wrap_ddp(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """``model`` itself in one process, else its DistributedDataParallel wrapper."""
    if world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: the mask head gets no gradient on a rank whose images yield no positive
    # RoI; without it DDP would wait forever for that gradient.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
