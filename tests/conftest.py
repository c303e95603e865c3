"""Shared fixtures. ``coco_mini``: the real COCO subset used by data / evaluation tests; ``exported``: the small
export most deployment tests run; ``one_torch_thread``. Shared constants are in ``helpers.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Ray's metrics exporter outlives ray.shutdown(): from the third ray.init in one process (the three in-process
# Ray test modules), its OpenTelemetry readers kept exporting to the dead metrics agent every 10 s, each from
# a new thread, for the rest of the process (seen in the driver log, python-core-driver-*.log). The tests use
# no Ray metrics; set before Ray is imported. (It did not cure the full run's crash: tests/run_in_groups.py.)
os.environ.setdefault("RAY_enable_metrics_collection", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

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


@pytest.fixture(scope="session")
def exported():  # noqa: ANN201 - test_export_common.Exported
    """The small security-0002 export (320x416 canvas, OpenVINO IR + its ONNX file), its background logit raised
    by 11 so that an image gives a few detections: ``test_export_common.small_export(11.0)``, built once."""
    from test_export_common import small_export

    return small_export(11.0)
