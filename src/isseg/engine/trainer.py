"""Training and fine-tuning of Mask R-CNN on a COCO-format dataset, in one process or under torchrun (DDP).

    from isseg.engine.trainer import TrainConfig, train
    result = train(TrainConfig(data="train.json", images="images/", output="runs/exp", epochs=12))

One loop serves every case: the iteration counter is the only clock (the epoch, the position inside it,
the learning rate and the batch order are all derived from it), and a checkpoint stores the model,
optimizer, gradient scaler, iteration and every rank's RNG state, so ``resume`` continues bit for bit
where the checkpoint was written. This module is the loop; the options are :mod:`isseg.engine.train_config`,
the pieces it is built from :mod:`isseg.engine.train_setup`, validation and checkpoints
:mod:`isseg.engine.checkpointing`. See docs/training.md for the recipe and the DDP notes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from isseg.engine import distributed as dist_utils
from isseg.engine.checkpointing import Checkpointer, f1_threshold, mask_ap, read_resume_state, validate
from isseg.engine.logger import MetricsLogger
from isseg.engine.rng_state import seed_everything
from isseg.engine.sampler import SeededDataset, TrainSampler
from isseg.engine.schedule import LRSchedule, resolve_steps
from isseg.engine.train_config import TrainConfig, TrainResult, amp_dtype, default_lr, resolve_device
from isseg.engine.train_setup import build_optimizer, build_train_model, model_config_for, training_dataset, wrap_ddp

__all__ = ["EvaluationHook", "IterationHook", "TrainConfig", "TrainResult", "build_optimizer", "train"]

IterationHook = Callable[[int, dict[str, float], nn.Module], None]
EvaluationHook = Callable[[int, dict[str, Any]], None]


def train(cfg: TrainConfig, on_iteration_end: IterationHook | None = None,
          on_evaluation: EvaluationHook | None = None) -> TrainResult:
    """Run (or resume) training as described by ``cfg``; returns where the checkpoints are.

    ``on_iteration_end(iteration, losses, model)`` is called on every rank after each optimizer step and
    after that step's checkpoint was written (``iteration`` counts finished steps; ``model`` is the bare
    MaskRCNN, not the DDP wrapper); raising in it stops the run as a kill would (used by the tests).
    ``on_evaluation(iteration, result)`` is called on rank 0 after each validation (``evaluate``'s result) and
    after ``best.pth`` was written; raising in it stops the run (a hyper-parameter search prunes this way).
    """
    cfg.validate()
    if cfg.threads is not None:
        # On a shared CPU, fewer threads than cores can be several times faster: OpenMP threads spin
        # while waiting for a sibling that another process has pre-empted.
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp_dtype(cfg.amp, device)  # reject --amp fp16 on CPU before loading anything
    owns_group = not dist_utils.is_initialized()  # leave a caller's process group alone
    dist_utils.init_distributed(device)
    try:
        return _Trainer(cfg, dist_utils.local_device(device), on_iteration_end, on_evaluation).run()
    finally:
        if owns_group:
            dist_utils.cleanup()


class _Trainer:
    def __init__(self, cfg: TrainConfig, device: torch.device, hook: IterationHook | None,
                 eval_hook: EvaluationHook | None = None) -> None:
        self.cfg = cfg
        self.device = device
        self.hook = hook
        self.eval_hook = eval_hook
        self.rank = dist_utils.get_rank()
        self.world = dist_utils.get_world_size()
        self.main = self.rank == 0
        self.out = Path(cfg.output)
        resume_state = read_resume_state(cfg.resume, self.out, self.main)

        seed_everything(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts them)
        self.model_config = model_config_for(cfg, resume_state)
        self.train_set = training_dataset(cfg, self.model_config, self.main)
        self.model = build_train_model(cfg, self.model_config, device, self.world, self.main,
                                       resuming=resume_state is not None)
        self.sampler = TrainSampler(len(self.train_set), cfg.batch_size, self.world, self.rank, cfg.seed)
        ipe = self.sampler.iters_per_epoch
        self.max_iter = cfg.iterations if cfg.iterations is not None else cfg.epochs * ipe
        global_batch = cfg.batch_size * self.world
        self.base_lr = cfg.lr if cfg.lr is not None else default_lr(global_batch)
        self.schedule = LRSchedule(
            base_lr=self.base_lr, max_iter=self.max_iter, kind=cfg.schedule,
            steps=resolve_steps(cfg.steps, self.max_iter) if cfg.schedule == "step" else (),
            gamma=cfg.gamma, warmup_iters=min(cfg.warmup_iters, self.max_iter),
            warmup_factor=cfg.warmup_factor, min_lr_factor=cfg.min_lr_factor,
        )  # fmt: skip
        self.checkpoint_every = cfg.checkpoint_every or ipe
        self.eval_every = cfg.eval_every or ipe
        self.optimizer = build_optimizer(self.model, self.schedule.lr(0), cfg.momentum, cfg.weight_decay,
                                         cfg.weight_decay_norm, cfg.optimizer)
        self.amp_dtype = amp_dtype(cfg.amp, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self.checkpoints = Checkpointer(cfg, self.out, self.rank, self.world, ipe)
        self.iteration = 0
        self.best_metric: float | None = None
        self.last_eval: dict[str, Any] | None = None
        self.eval_threshold: tuple[int, float | None] = (-1, None)  # (iteration, best-F1 threshold) of the last eval
        if resume_state is not None:
            self.iteration, self.best_metric = self.checkpoints.restore(resume_state, self.model, self.optimizer,
                                                                        self.scaler)
        else:
            seed_everything(cfg.seed + self.rank)  # RPN / RoI sampling differs per rank, reproducibly
        self.ddp = wrap_ddp(self.model, device, self.world)
        self.logger = (
            MetricsLogger(self.out, resume_iteration=self.iteration, tensorboard=cfg.tensorboard)
            if self.main else None
        )  # fmt: skip
        self.history: list[dict[str, Any]] = []

    def _save(self) -> None:
        """``last.pth`` of the current state (every rank calls it; rank 0 writes)."""
        threshold = self.eval_threshold[1] if self.eval_threshold[0] == self.iteration else None
        self.checkpoints.save(["last.pth"], self.model, self.optimizer, self.scaler, self.schedule, self.iteration,
                              self.best_metric, threshold)

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
        stopped_by_time = False
        self._train_mode()
        try:
            while self.iteration < self.max_iter and not stopped_by_time:  # a for loop per epoch, broken at the end
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
                    if not done and self._out_of_time(start_time):
                        done = stopped_by_time = True
                    if self.iteration % cfg.log_every == 0 or done:
                        self._log(window, start_time, start_iter, data_time)
                        window, data_time = [], 0.0
                    evaluated = False
                    if cfg.val_data is not None and (self.iteration % self.eval_every == 0 or done):
                        self._after_eval(validate(self.model, cfg, self.main, self._train_mode))
                        evaluated = True
                    if self.iteration % self.checkpoint_every == 0 or done or evaluated:
                        self._save()
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
            last_eval=self.last_eval, is_main=self.main, history=self.history, stopped_by_time=stopped_by_time,
            seconds=time.perf_counter() - start_time,
        )  # fmt: skip

    def _out_of_time(self, start: float) -> bool:
        """``cfg.max_minutes`` of training spent (rank 0 decides, so every rank stops at the same step)."""
        if self.cfg.max_minutes is None:
            return False
        return bool(dist_utils.broadcast_object(time.perf_counter() - start > self.cfg.max_minutes * 60))

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
        metric = mask_ap(result) if result is not None else None
        metric, threshold = dist_utils.broadcast_object((metric, f1_threshold(result)))
        self.eval_threshold = (self.iteration, threshold)
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
        best_f1 = result.get("confidence_threshold") or {}
        if best_f1.get("threshold") is not None:
            row["val_f1_threshold"], row["val_f1"] = best_f1["threshold"], best_f1["f1"]
        self.history.append(row)
        assert self.logger is not None
        self.logger.log(row)
        if metric is not None and (self.best_metric is None or metric > self.best_metric):
            self.best_metric = metric
            self.checkpoints.save_best(self.model, self.iteration, self.best_metric, threshold)
        if self.eval_hook is not None:
            self.eval_hook(self.iteration, result)
