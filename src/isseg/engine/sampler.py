"""Deterministic, resumable batch order for single-process and DistributedDataParallel training.

Iteration ``i`` of epoch ``e`` always uses the same *global* batch: a permutation of the dataset seeded
by ``(seed, e)`` is cut into consecutive global batches of ``batch_size * world_size`` images, and rank
``r`` takes the ``r``-th slice of ``batch_size`` of each. So a 2-process run with 1 image per process and
a 1-process run with 2 images see exactly the same images per step, and a run resumed at iteration
``i`` only needs ``i`` to pick up where it stopped (no sampler state besides the seed).

Augmentation randomness is tied to the sample, not to the process: :class:`SeededDataset` seeds the
python / NumPy / torch generators from ``(seed, epoch, index)`` around each ``dataset[index]`` call and
restores them afterwards, so the result does not depend on the number of DataLoader workers, on which
rank loads the image, or on whether the run was resumed — and the model's own random sampling (RPN /
RoI) in the main process is not disturbed by data loading.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class TrainSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` keys for this rank, for one epoch starting at ``start_iter``.

    Every epoch has ``iters_per_epoch`` full batches: ``len(dataset) // global_batch`` (the tail that
    does not fill a global batch is dropped; it is a different tail every epoch), or 1 when the dataset is
    smaller than one global batch, in which case the permutation is repeated to fill it.
    """

    def __init__(self, size: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        if size < 1:
            raise ValueError("the training dataset is empty")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.size = size
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.global_batch = batch_size * world_size
        self.iters_per_epoch = max(1, size // self.global_batch)
        self.epoch = 0
        self.start_iter = 0

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        """Select the epoch (and the first iteration within it, for a resumed run)."""
        if not 0 <= start_iter <= self.iters_per_epoch:
            raise ValueError(f"start iteration {start_iter} outside 0..{self.iters_per_epoch}")
        self.epoch = epoch
        self.start_iter = start_iter

    def epoch_order(self, epoch: int) -> list[int]:
        """All indices of ``epoch`` in global order (``iters_per_epoch * global_batch`` of them)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        need = self.iters_per_epoch * self.global_batch
        if len(order) < need:
            order = (order * math.ceil(need / len(order)))[:need]
        return order[:need]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order(self.epoch)
        for it in range(self.start_iter, self.iters_per_epoch):
            first = it * self.global_batch + self.rank * self.batch_size
            for index in order[first:first + self.batch_size]:
                yield self.epoch, index

    def __len__(self) -> int:
        return (self.iters_per_epoch - self.start_iter) * self.batch_size


class SeededDataset(Dataset):
    """Wraps a map-style dataset so ``dataset[(epoch, index)]`` is reproducible (see the module docstring)."""

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                random.seed(seed)
                np.random.seed(seed)
                torch.manual_seed(seed)
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
