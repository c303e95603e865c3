"""What a training run is asked to do and what it hands back: :class:`TrainConfig` (every option, checked by
:meth:`TrainConfig.validate` before anything is loaded), :class:`TrainResult`, and the device and mixed-precision
choices the options resolve to. The loop that uses them is :mod:`isseg.engine.trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from isseg.tiling.options import TilingOptions


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model preset (which ``preset`` / ``overrides`` give).

    Iteration counts are in optimizer steps; ``batch_size`` is per process, so the global batch under
    torchrun is ``batch_size * world_size``. ``lr=None`` applies the linear scaling rule,
    ``0.02 * global_batch / 16`` (the rate detectron2 and mmdetection use for a batch of 16).
    """

    data: str
    images: str
    output: str = "runs/train"
    val_data: str | None = None
    val_images: str | None = None
    preset: str = "security-0002"
    overrides: tuple[str, ...] = ()  # "section.field=value", see isseg.engine.config_overrides
    weights: str | None = None  # checkpoint path or registry name to start from
    epochs: int = 12
    iterations: int | None = None  # overrides epochs
    batch_size: int = 2
    lr: float | None = None
    optimizer: Literal["sgd", "adamw"] = "sgd"  # adamw: decoupled weight decay, betas (momentum, 0.999)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0  # for BN / GN affine parameters, as detectron2
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    schedule: Literal["step", "cosine", "constant"] = "step"
    steps: tuple[float, ...] = (0.67, 0.89)  # fractions of the run (< 1) or iterations (>= 1)
    gamma: float = 0.1
    min_lr_factor: float = 0.0  # cosine floor
    clip_grad: float | None = None  # max global L2 norm of the gradients
    amp: Literal["auto", "bf16", "fp16"] | None = None  # auto: bf16 on CPU, fp16 on CUDA
    freeze_stages: int | None = None  # override the preset's backbone.frozen_stages
    sync_bn: bool = False  # convert trainable BatchNorm to SyncBatchNorm under DDP on CUDA
    eval_every: int | None = None  # iterations; None: at the end of each epoch (and at the end)
    checkpoint_every: int | None = None  # iterations; None: at the end of each epoch (and at the end)
    log_every: int = 20
    workers: int = 2
    device: str = "auto"
    threads: int | None = None  # torch CPU threads of this process (None: torch's default)
    resume: str | bool = False  # True: <output>/last.pth if present; a path: that checkpoint
    seed: int = 0
    progress: bool = True
    tensorboard: bool = True
    horizontal_flip: float = 0.5  # probability of the training flip (0 disables it)
    color_jitter: float = 0.0  # contrast / brightness strength in [0, 1] (isseg.engine.augment)
    scale_jitter: float = 0.0  # training sizes spread over [1 - s, 1 + s] x the inference size, s in [0, 1)
    max_minutes: float | None = None  # stop (evaluate, checkpoint) once training ran this long
    recipe: str | None = None  # the recipe the run was made from (isseg.recipes), recorded in the checkpoint
    skip_bad_images: bool = False  # train on the rest when the pre-flight finds unusable images (else: stop)
    tile: int | None = None  # train on tiles of this size (isseg.data.tiles); stored in the checkpoint's tiling
    tile_overlap: float | None = None  # the stored tiling's overlap (needs tile; None: TilingOptions' default)
    tile_empty: float = 0.15  # fraction of background tiles among the training tiles (with tile)

    def tiling(self) -> TilingOptions | None:
        """The tiled inference a run with ``tile`` stores in its checkpoints (None without ``tile``)."""
        if self.tile is None:
            return None
        from isseg.tiling.options import TilingOptions

        extra = {} if self.tile_overlap is None else {"overlap": float(self.tile_overlap)}
        return TilingOptions(tile_size=int(self.tile), **extra)

    def validate(self) -> None:
        """Fail early, with the option's name, on values that would break a run later."""
        _check_paths(self)
        check_values(self)


def _check_paths(cfg: TrainConfig) -> None:
    """The annotation files and image folders exist (validation: both or neither)."""
    for name in ("data", "images"):
        if not getattr(cfg, name):
            raise ValueError(f"training: '{name}' is required")
    if not Path(cfg.data).is_file():
        raise FileNotFoundError(f"training annotation file not found: {cfg.data}")
    if not Path(cfg.images).is_dir():
        raise FileNotFoundError(f"training image directory not found: {cfg.images}")
    if (cfg.val_data is None) != (cfg.val_images is None):
        raise ValueError("validation needs both --val-data (annotation json) and --val-images (a folder)")
    if cfg.val_data is not None:
        if not Path(cfg.val_data).is_file():
            raise FileNotFoundError(f"validation annotation file not found: {cfg.val_data}")
        if not Path(str(cfg.val_images)).is_dir():
            raise FileNotFoundError(f"validation image directory not found: {cfg.val_images}")


def default_lr(global_batch: int) -> float:
    """The learning rate of ``lr=None``: the linear scaling rule, 0.02 for a global batch of 16."""
    return 0.02 * global_batch / 16


def check_values(cfg: TrainConfig) -> None:
    """Counts, rates and choices are in range (the message names the command-line option)."""
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "log_every": cfg.log_every}
    if cfg.iterations is not None:
        positive["iterations"] = cfg.iterations
    for k in ("eval_every", "checkpoint_every"):
        if getattr(cfg, k) is not None:
            positive[k] = getattr(cfg, k)
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {value}")
    if cfg.lr is not None and cfg.lr <= 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if cfg.momentum < 0 or cfg.weight_decay < 0:
        raise ValueError("momentum and weight decay must be >= 0")
    if cfg.optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be sgd or adamw, got {cfg.optimizer!r}")
    if cfg.optimizer == "adamw" and not cfg.momentum < 1:
        raise ValueError(f"momentum (AdamW's beta1) must be < 1, got {cfg.momentum}")
    if cfg.warmup_iters < 0:
        raise ValueError(f"warmup-iters must be >= 0, got {cfg.warmup_iters}")
    if cfg.schedule not in ("step", "cosine", "constant"):
        raise ValueError(f"schedule must be step, cosine or constant, got {cfg.schedule!r}")
    if cfg.clip_grad is not None and cfg.clip_grad <= 0:
        raise ValueError(f"clip-grad must be > 0, got {cfg.clip_grad}")
    if cfg.amp not in (None, "auto", "bf16", "fp16"):
        raise ValueError(f"amp must be auto, bf16 or fp16, got {cfg.amp!r}")
    if cfg.freeze_stages is not None and not 0 <= cfg.freeze_stages <= 4:
        raise ValueError(f"freeze-stages must be in 0..4, got {cfg.freeze_stages}")
    if cfg.workers < 0:
        raise ValueError(f"workers must be >= 0, got {cfg.workers}")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1, got {cfg.threads}")
    if not 0.0 <= cfg.horizontal_flip <= 1.0:
        raise ValueError(f"horizontal flip probability must be in [0, 1], got {cfg.horizontal_flip}")
    if not 0.0 <= cfg.color_jitter <= 1.0:
        raise ValueError(f"color-jitter must be in [0, 1], got {cfg.color_jitter}")
    if not 0.0 <= cfg.scale_jitter < 1.0:
        raise ValueError(f"scale-jitter must be in [0, 1), got {cfg.scale_jitter}")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise ValueError(f"max-minutes must be > 0, got {cfg.max_minutes}")
    _check_tiles(cfg)


def _check_tiles(cfg: TrainConfig) -> None:
    """``tile``, ``tile_overlap`` and ``tile_empty`` (the overlap and the empty share need a tile size)."""
    if cfg.tile is None:
        if cfg.tile_overlap is not None:
            raise ValueError("tile-overlap: needs --tile SIZE (the tile size turns tiled training on)")
        return
    if isinstance(cfg.tile, bool) or not isinstance(cfg.tile, int) or cfg.tile < 32:
        raise ValueError(f"tile: expected a tile size >= 32 pixels, got {cfg.tile}")
    if cfg.tile_overlap is not None and not 0.0 <= cfg.tile_overlap < 1.0:
        raise ValueError(f"tile-overlap: expected a fraction in [0, 1), got {cfg.tile_overlap}")
    if not 0.0 <= cfg.tile_empty <= 1.0:
        raise ValueError(f"tile-empty: expected a fraction in [0, 1], got {cfg.tile_empty}")


@dataclass
class TrainResult:
    """What a finished run produced. ``best_metric`` is the validation mask AP of ``best.pth``."""

    output: Path
    iteration: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None = None
    best_metric: float | None = None
    last_eval: dict[str, Any] | None = None
    is_main: bool = True  # rank 0 (the process that wrote the files)
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_by_time: bool = False  # max_minutes ended the run before its last iteration
    seconds: float = 0.0  # wall time of the training loop (this process, this session)


def resolve_device(name: str) -> torch.device:
    """``TrainConfig.device`` as a torch device: ``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``TrainConfig.amp`` on ``device`` (None: no autocast); fp16 needs CUDA."""
    if amp is None:
        return None
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device; use --amp bf16 on CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16
