"""Training and fine-tuning of Mask R-CNN on a COCO-format dataset, in one process or under torchrun (DDP).

    from isseg.engine.trainer import TrainConfig, train
    result = train(TrainConfig(data="train.json", images="images/", output="runs/exp", epochs=12))

One loop serves every case: the iteration counter is the only clock (the epoch, the position inside it,
the learning rate and the batch order are all derived from it), and a checkpoint stores the model,
optimizer, gradient scaler, iteration and every rank's RNG state, so ``resume`` continues bit for bit
where the checkpoint was written. See docs/training.md for the recipe and the DDP notes.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from isseg.config import ModelConfig, get_config
from isseg.engine import distributed as dist_utils
from isseg.engine.checkpoint import get_rng_state, seed_everything, set_rng_state
from isseg.engine.config_overrides import apply_overrides
from isseg.engine.logger import MetricsLogger
from isseg.engine.sampler import SeededDataset, TrainSampler
from isseg.engine.schedule import LRSchedule, resolve_steps
from isseg.weights.checkpoint import atomic_save, checkpoint_payload

LOSS_KEYS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")
# parameters that depend on the class list; re-initialized when fine-tuning on other classes
CLASS_SPECIFIC_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


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
    skip_bad_images: bool = False  # train on the rest when the pre-flight finds unusable images (else: stop)

    def validate(self) -> None:
        """Fail early, with the option's name, on values that would break a run later."""
        for name in ("data", "images"):
            if not getattr(self, name):
                raise ValueError(f"training: '{name}' is required")
        if not Path(self.data).is_file():
            raise FileNotFoundError(f"training annotation file not found: {self.data}")
        if not Path(self.images).is_dir():
            raise FileNotFoundError(f"training image directory not found: {self.images}")
        if (self.val_data is None) != (self.val_images is None):
            raise ValueError("validation needs both --val-data (annotation json) and --val-images (a folder)")
        if self.val_data is not None:
            if not Path(self.val_data).is_file():
                raise FileNotFoundError(f"validation annotation file not found: {self.val_data}")
            if not Path(str(self.val_images)).is_dir():
                raise FileNotFoundError(f"validation image directory not found: {self.val_images}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "log_every": self.log_every}
        if self.iterations is not None:
            positive["iterations"] = self.iterations
        for k in ("eval_every", "checkpoint_every"):
            if getattr(self, k) is not None:
                positive[k] = getattr(self, k)
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {value}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("momentum and weight decay must be >= 0")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup-iters must be >= 0, got {self.warmup_iters}")
        if self.schedule not in ("step", "cosine", "constant"):
            raise ValueError(f"schedule must be step, cosine or constant, got {self.schedule!r}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"clip-grad must be > 0, got {self.clip_grad}")
        if self.amp not in (None, "auto", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, bf16 or fp16, got {self.amp!r}")
        if self.freeze_stages is not None and not 0 <= self.freeze_stages <= 4:
            raise ValueError(f"freeze-stages must be in 0..4, got {self.freeze_stages}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not 0.0 <= self.horizontal_flip <= 1.0:
            raise ValueError(f"horizontal flip probability must be in [0, 1], got {self.horizontal_flip}")


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


IterationHook = Callable[[int, dict[str, float], nn.Module], None]


def train(cfg: TrainConfig, on_iteration_end: IterationHook | None = None) -> TrainResult:
    """Run (or resume) training as described by ``cfg``; returns where the checkpoints are.

    ``on_iteration_end(iteration, losses, model)`` is called on every rank after each optimizer step and
    after that step's checkpoint was written (``iteration`` counts finished steps; ``model`` is the bare
    MaskRCNN, not the DDP wrapper); raising in it stops the run as a kill would (used by the tests).
    """
    cfg.validate()
    if cfg.threads is not None:
        # On a shared CPU, fewer threads than cores can be several times faster: OpenMP threads spin
        # while waiting for a sibling that another process has pre-empted.
        torch.set_num_threads(cfg.threads)
    device = _resolve_device(cfg.device)
    _amp_dtype(cfg.amp, device)  # reject --amp fp16 on CPU before loading anything
    owns_group = not dist_utils.is_initialized()  # leave a caller's process group alone
    dist_utils.init_distributed(device)
    try:
        return _Trainer(cfg, dist_utils.local_device(device), on_iteration_end).run()
    finally:
        if owns_group:
            dist_utils.cleanup()


# ----------------------------------------------------------------------------------------------------
# implementation
# ----------------------------------------------------------------------------------------------------


class _Trainer:
    def __init__(self, cfg: TrainConfig, device: torch.device, hook: IterationHook | None) -> None:
        self.cfg = cfg
        self.device = device
        self.hook = hook
        self.rank = dist_utils.get_rank()
        self.world = dist_utils.get_world_size()
        self.main = self.rank == 0
        self.out = Path(cfg.output)
        self.resume_state = self._find_resume()

        seed_everything(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts them)
        self.model_config = self._model_config()
        self.train_set = self._dataset(cfg.data, cfg.images, train=True)
        self.model = self._build_model()
        self.sampler = TrainSampler(len(self.train_set), cfg.batch_size, self.world, self.rank, cfg.seed)
        ipe = self.sampler.iters_per_epoch
        self.max_iter = cfg.iterations if cfg.iterations is not None else cfg.epochs * ipe
        global_batch = cfg.batch_size * self.world
        self.base_lr = cfg.lr if cfg.lr is not None else 0.02 * global_batch / 16
        self.schedule = LRSchedule(
            base_lr=self.base_lr, max_iter=self.max_iter, kind=cfg.schedule,
            steps=resolve_steps(cfg.steps, self.max_iter) if cfg.schedule == "step" else (),
            gamma=cfg.gamma, warmup_iters=min(cfg.warmup_iters, self.max_iter),
            warmup_factor=cfg.warmup_factor, min_lr_factor=cfg.min_lr_factor,
        )  # fmt: skip
        self.checkpoint_every = cfg.checkpoint_every or ipe
        self.eval_every = cfg.eval_every or ipe
        self.optimizer = self._optimizer()
        self.amp_dtype = _amp_dtype(cfg.amp, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self.iteration = 0
        self.best_metric: float | None = None
        self.last_eval: dict[str, Any] | None = None
        if self.resume_state is not None:
            self._restore(self.resume_state)
            self.resume_state = None
        else:
            seed_everything(cfg.seed + self.rank)  # RPN / RoI sampling differs per rank, reproducibly
        self.ddp = self._wrap_ddp()
        self.logger = (
            MetricsLogger(self.out, resume_iteration=self.iteration, tensorboard=cfg.tensorboard)
            if self.main else None
        )  # fmt: skip
        self.history: list[dict[str, Any]] = []

    # -- setup -------------------------------------------------------------------------------------------
    def _find_resume(self) -> dict[str, Any] | None:
        last = self.out / "last.pth"
        if self.cfg.resume is True or self.cfg.resume == "auto":
            if not last.is_file():
                if self.main:
                    print(f"isseg train: no {last} to resume from; starting a new run")
                return None
            path = last
        elif self.cfg.resume:
            path = Path(str(self.cfg.resume))
            if not path.is_file():
                raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
        else:
            if last.is_file():
                raise ValueError(f"{last} exists: pass --resume to continue that run, or another --output")
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated / foreign file: pickle and zip errors of many kinds
            raise ValueError(f"--resume {path}: cannot read the checkpoint: {exc}") from None
        for key in ("model", "optimizer", "iteration", "config"):
            if not isinstance(state, dict) or key not in state:
                raise ValueError(f"--resume {path}: not an isseg training checkpoint (no '{key}' entry)")
        state["_path"] = str(path)
        return state

    def _model_config(self) -> ModelConfig:
        if self.resume_state is not None:
            return ModelConfig.from_dict(self.resume_state["config"])
        from isseg.data.coco import load_coco_json

        cats = sorted(load_coco_json(self.cfg.data)["categories"], key=lambda c: c["id"])
        names = tuple(c["name"] for c in cats)
        if not names:
            raise ValueError(f"{self.cfg.data}: 'categories' is empty; training needs at least one class")
        mc = get_config(self.cfg.preset, class_names=names)
        mc = apply_overrides(mc, self.cfg.overrides)
        if self.cfg.freeze_stages is not None:
            mc = dataclasses.replace(mc, backbone=dataclasses.replace(mc.backbone,
                                                                       frozen_stages=self.cfg.freeze_stages))
        return mc

    def _dataset(self, ann: str, images: str, train: bool) -> Any:
        from isseg.data.coco import CocoDataset

        transform = None
        if train and self.cfg.horizontal_flip > 0:
            from isseg.data.transforms import RandomHorizontalFlip

            transform = RandomHorizontalFlip(self.cfg.horizontal_flip)
        ds = CocoDataset(ann, images, train=train, class_names=self.model_config.class_names,
                         transform=transform, skip_empty=train)
        if train:
            self._preflight(ds)
        if train and len(ds) == 0:
            raise ValueError(f"{ann}: no image with a usable (non-crowd, >= 1 px) annotation to train on")
        return ds

    def _preflight(self, ds: Any) -> None:
        """Check every training image before the first step (a bad file would otherwise stop the run when it
        is first sampled, maybe hours in): list each bad one, then stop, or leave them out (skip_bad_images)."""
        import sys

        bad = ds.preflight(progress=self.main and self.cfg.progress, workers=max(1, self.cfg.workers))
        if not bad:
            return
        total = len(ds)
        if self.main:
            for _, reason in bad:
                print(f"isseg train: bad image: {reason}", file=sys.stderr)
        if not self.cfg.skip_bad_images:
            raise ValueError(f"{ds.annotation_file}: {len(bad)} of {total} training image(s) cannot be used (listed "
                             f"above); fix them, or pass --skip-bad-images to train on the other {total - len(bad)}")
        ds.drop([i for i, _ in bad])
        if self.main:
            print(f"isseg train: --skip-bad-images: training on {len(ds)} of {total} image(s)", file=sys.stderr)

    def _build_model(self) -> nn.Module:
        from isseg.model.mask_rcnn import build_model

        model = build_model(self.model_config)
        if self.resume_state is None and self.cfg.weights:
            _load_pretrained(model, self.cfg.weights, self.main)
        if self.cfg.sync_bn and self.world > 1 and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model.to(self.device)

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        return build_optimizer(self.model, self.schedule.lr(0), c.momentum, c.weight_decay, c.weight_decay_norm)

    def _wrap_ddp(self) -> nn.Module:
        if self.world == 1:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # find_unused_parameters: the mask head gets no gradient on a rank whose images yield no positive
        # RoI; without it DDP would wait forever for that gradient.
        return nn.parallel.DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _restore(self, state: dict[str, Any]) -> None:
        path = state["_path"]
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"--resume {path}: does not match this model / optimizer: {exc}") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best_metric = state.get("best_metric")
        saved = state.get("train", {})
        same_batch = saved.get("global_batch") == self.cfg.batch_size * self.world
        if not same_batch or saved.get("seed") != self.cfg.seed:
            warnings.warn(
                f"--resume {path}: global batch / seed differ from the checkpoint's "
                f"({saved.get('global_batch')}, {saved.get('seed')}); the batch order will not continue the "
                "original run's", stacklevel=2,
            )  # fmt: skip
        rng = state.get("rng") or []
        if len(rng) == self.world:
            set_rng_state(rng[self.rank])
        else:
            seed_everything(self.cfg.seed + self.rank + 7919 * self.iteration)
        if self.main:
            print(f"isseg train: resumed from {path} at iteration {self.iteration}")

    def _checkpoint_state(self) -> dict[str, Any]:
        rng = dist_utils.all_gather_object(get_rng_state())  # collective: every rank takes part
        return checkpoint_payload(
            self.model,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            schedule=dataclasses.asdict(self.schedule),
            iteration=self.iteration,
            epoch=self.iteration // self.sampler.iters_per_epoch,
            best_metric=self.best_metric,
            rng=rng,
            train={
                "global_batch": self.cfg.batch_size * self.world, "world_size": self.world,
                "seed": self.cfg.seed, "iters_per_epoch": self.sampler.iters_per_epoch,
                "config": dataclasses.asdict(self.cfg),
            },
        )  # fmt: skip

    def _save(self, names: Sequence[str]) -> None:
        """Write the same state under each of ``names``; rank 0 writes, everyone waits for it."""
        state = self._checkpoint_state()
        dist_utils.barrier()
        if self.main:
            for name in names:
                atomic_save(state, self.out / name)
        dist_utils.barrier()

    # -- evaluation ----------------------------------------------------------------------------------------
    def _evaluate(self) -> dict[str, Any] | None:
        """Rank 0 evaluates on the validation set while the others wait; returns the metrics on rank 0."""
        if self.cfg.val_data is None:
            return None
        result = None
        if self.main:
            from isseg.engine.evaluate import evaluate

            self.model.eval()
            try:
                with torch.no_grad():
                    result = evaluate(self.model, self.cfg.val_data, str(self.cfg.val_images),
                                      progress=self.cfg.progress)
            finally:
                self._train_mode()
        dist_utils.barrier()
        return result

    def _train_mode(self) -> None:
        """Train mode, except frozen backbone stages, whose trainable-BN statistics must not move."""
        getattr(self, "ddp", self.model).train()
        frozen = self.model_config.backbone.frozen_stages
        body = getattr(getattr(self.model, "backbone", None), "body", None)
        if body is None:
            return
        for name in ["conv1", "bn1"] + [f"layer{i}" for i in range(1, frozen + 1)]:
            module = getattr(body, name, None)
            if module is not None:
                module.eval()

    # -- loop ----------------------------------------------------------------------------------------------
    def _loader(self, epoch: int, start: int) -> DataLoader:
        from isseg.data.transforms import collate

        self.sampler.set_epoch(epoch, start)
        g = torch.Generator()  # the workers' base seed comes from here, not from the global generator
        g.manual_seed(self.cfg.seed * 7919 + epoch)
        return DataLoader(
            SeededDataset(self.train_set, self.cfg.seed), batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=self.cfg.workers, collate_fn=collate, generator=g,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )  # fmt: skip

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _step(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, float]:
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                    for k, v in t.items()} for t in targets]
        lr = self.schedule.apply(self.optimizer, self.iteration)
        with self._autocast():
            losses = self.ddp(images, targets)
        loss = sum(losses.values())
        values = {k: float(v.detach()) for k, v in losses.items()}
        values["loss"] = float(loss.detach())
        # Under DDP every rank must stop together, or the others would wait forever in the all-reduce.
        if self.scaler is None and not dist_utils.all_finite(values["loss"], self.device):
            raise RuntimeError(
                f"training diverged: non-finite loss at iteration {self.iteration} (this rank: "
                + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                + "); lower --lr, raise --warmup-iters or set --clip-grad"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.clip_grad is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        values["lr"] = lr
        return values

    def run(self) -> TrainResult:
        cfg = self.cfg
        ipe = self.sampler.iters_per_epoch
        bar = None
        if self.main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.max_iter, initial=self.iteration, desc="train", dynamic_ncols=True)
        window: list[dict[str, float]] = []
        start_time, start_iter = time.perf_counter(), self.iteration
        data_time = 0.0
        self._train_mode()
        try:
            while self.iteration < self.max_iter:
                epoch, pos = divmod(self.iteration, ipe)
                t_data = time.perf_counter()
                for images, targets in self._loader(epoch, pos):
                    data_time += time.perf_counter() - t_data
                    values = self._step(images, targets)
                    self.iteration += 1
                    window.append(values)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.2e}", refresh=False)
                    done = self.iteration >= self.max_iter
                    if self.iteration % cfg.log_every == 0 or done:
                        self._log(window, start_time, start_iter, data_time)
                        window, data_time = [], 0.0
                    evaluated = False
                    if cfg.val_data is not None and (self.iteration % self.eval_every == 0 or done):
                        self._after_eval(self._evaluate())
                        evaluated = True
                    if self.iteration % self.checkpoint_every == 0 or done or evaluated:
                        self._save(["last.pth"])
                    if self.hook is not None:
                        self.hook(self.iteration, values, self.model)
                    if done:
                        break
                    t_data = time.perf_counter()
        except (ValueError, FileNotFoundError) as exc:
            # An image that broke after the pre-flight: a DataLoader worker re-raises its error with the worker's
            # whole traceback in the message; keep only the worker's last line (the file and the problem).
            lines = [line for line in str(exc).splitlines() if line.strip()]
            if "Original Traceback" not in str(exc) or not lines:
                raise
            reason = lines[-1].split(": ", 1)[-1] if lines[-1].startswith(type(exc).__name__) else lines[-1]
            raise type(exc)(f"{reason} (iteration {self.iteration}; --resume continues from the last "
                            "checkpoint once the file is fixed)") from None
        finally:
            if bar is not None:
                bar.close()
            if self.logger is not None:
                self.logger.close()
        best = self.out / "best.pth"
        return TrainResult(
            output=self.out, iteration=self.iteration, last_checkpoint=self.out / "last.pth",
            best_checkpoint=best if best.is_file() else None, best_metric=self.best_metric,
            last_eval=self.last_eval, is_main=self.main, history=self.history,
        )  # fmt: skip

    def _log(self, window: list[dict[str, float]], start: float, start_iter: int, data_time: float) -> None:
        keys = [k for k in window[-1] if k != "lr"]
        mean = {k: sum(w.get(k, 0.0) for w in window) / len(window) for k in keys}
        mean = dist_utils.all_reduce_mean(mean, self.device)  # collective: every rank logs together
        if not self.main:
            return
        elapsed = time.perf_counter() - start
        per_iter = elapsed / max(1, self.iteration - start_iter)
        row: dict[str, Any] = {
            "iteration": self.iteration, "epoch": self.iteration / self.sampler.iters_per_epoch,
            "lr": window[-1]["lr"], **mean, "time_per_iter": per_iter,
            "data_time_per_iter": data_time / len(window),
            "eta_s": per_iter * (self.max_iter - self.iteration),
        }  # fmt: skip
        if torch.cuda.is_available() and self.device.type == "cuda":
            row["max_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.history.append(row)
        assert self.logger is not None
        self.logger.log(row)

    def _after_eval(self, result: dict[str, Any] | None) -> None:
        metric = _mask_ap(result) if result is not None else None
        metric = dist_utils.broadcast_object(metric)
        if not self.main or result is None:
            if metric is not None and (self.best_metric is None or metric > self.best_metric):
                self.best_metric = metric  # keep every rank's copy equal: it goes into the checkpoint
            return
        self.last_eval = result
        epoch = self.iteration / self.sampler.iters_per_epoch
        row: dict[str, Any] = {"iteration": self.iteration, "epoch": epoch}
        for kind in ("bbox", "segm"):
            for k, v in (result.get(kind) or {}).items():
                if isinstance(v, (int, float)):
                    row[f"val_{kind}_{k}"] = v
        self.history.append(row)
        assert self.logger is not None
        self.logger.log(row)
        if metric is not None and (self.best_metric is None or metric > self.best_metric):
            self.best_metric = metric
            atomic_save(self._best_state(), self.out / "best.pth")

    def _best_state(self) -> dict[str, Any]:
        """A lean checkpoint for deployment: the model and its config, no optimizer."""
        return checkpoint_payload(self.model, iteration=self.iteration, best_metric=self.best_metric)


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                    weight_decay_norm: float = 0.0) -> torch.optim.SGD:
    """SGD with momentum over the trainable parameters; norm layers' affine parameters get
    ``weight_decay_norm`` (decaying a GroupNorm / BN scale towards 0 fights the normalization)."""
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
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def _mask_ap(result: dict[str, Any]) -> float | None:
    """Validation mask AP (COCO AP@[.5:.95]) from ``evaluate``'s result, None when it has none."""
    segm = result.get("segm") or {}
    value = segm.get("AP")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def _amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    if amp is None:
        return None
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device; use --amp bf16 on CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16


def _load_pretrained(model: nn.Module, weights: str, verbose: bool) -> None:
    """Initialize from ``weights``; class-specific layers whose shape differs (other classes) are skipped,
    so the backbone, FPN, RPN and the shared heads are kept and the predictors start fresh."""
    from isseg.weights.loading import load_weights

    report = load_weights(model, weights, strict=True, reinit_class_layers=True)
    if verbose:
        print(f"isseg train: initialized from {report}")
