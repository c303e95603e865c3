"""Process-group helpers for DistributedDataParallel training launched by ``torchrun``.

Everything degrades to a no-op in a single process, so the trainer has one code path. The process group
is created from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...):
gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def launched_distributed() -> bool:
    """True when started by torchrun (or any launcher that sets ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by the environment; returns False when not launched by torchrun.

    On CUDA each process takes the GPU ``LOCAL_RANK``. Idempotent: an existing group is reused (the test
    suite and notebooks may have created one).
    """
    if is_initialized():
        return True
    if not launched_distributed():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


def local_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` under DDP on CUDA, else ``device`` unchanged."""
    if device.type == "cuda" and is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if is_initialized() and get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar metrics over ranks (for logging only: gradients are averaged by DDP itself)."""
    world = get_world_size()
    if world == 1 or not values:
        return dict(values)
    keys = list(values)  # every rank builds the dict the same way, so the order agrees
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= world
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_finite(value: float, device: torch.device) -> bool:
    """Whether ``value`` is finite on every rank (one tiny all-reduce per call under DDP)."""
    if get_world_size() == 1:
        return math.isfinite(value)
    flag = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=device)
    dist.all_reduce(flag)
    return float(flag.item()) == 0.0


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank (used for the per-rank RNG states in checkpoints)."""
    world = get_world_size()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send rank ``src``'s object to all ranks (e.g. rank 0's decision to stop or its eval result)."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
