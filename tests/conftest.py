"""Shared fixtures. ``coco_mini``: the real COCO subset used by data / evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from isseg.testing.datasets import coco_mini_dir


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """Folder of coco-mini (``annotations/instances_{train,val}2017.json``, ``train2017/``, ``val2017/``)."""
    path = coco_mini_dir()
    if not (path / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"coco-mini not found at {path}; set ISSEG_COCO_MINI to its folder")
    return path


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a test module: on a CPU shared with other jobs, two OpenMP threads spin-wait on
    each other and were measured 3-10x slower than one on 2 shared cores; on an idle 2-core machine one
    thread costs well under 2x. The results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
