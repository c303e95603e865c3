"""Constants and small builders shared by the test files (``from helpers import ...``: pytest puts ``tests/``
on ``sys.path``).
Fixtures are in ``conftest.py``; the converter tests' random states in ``converter_states.py``; the cached
exports of the deployment tests in ``test_export_common.py``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from isseg.config import ModelConfig, get_config

REPO = Path(__file__).resolve().parents[1]
"""The repository checkout (``src/``, ``tests/``, ``benchmarks/``)."""

REFERENCES = REPO.parent / "shared" / "references"
"""The reference libraries (detectron2, mmdetection), used through paths and never copied."""

ASPECT_PHOTOS = ("000000536038.jpg", "000000126107.jpg", "000000549055.jpg")
"""Three coco-mini val2017 photos of three shapes: a portrait (aspect 0.56), an exact 4:3 and a wide one (2.11)."""

TRAIN_SIZE = 96
"""The square canvas of the tiny training runs (:data:`TINY_TRAIN`, synthetic images of this size)."""

TINY_TRAIN = (
    f"input.size=[{TRAIN_SIZE},{TRAIN_SIZE}]", f"input.train_sizes=[{TRAIN_SIZE}]",
    "rpn.pre_nms_top_n_train=256", "rpn.post_nms_top_n_train=128", "rpn.pre_nms_top_n_test=256",
    "rpn.post_nms_top_n_test=64", "roi.batch_size_per_image=64", "backbone.fpn_channels=64",
    "roi.representation_size=256", "backbone.norm=gn", "backbone.frozen_stages=0",
)  # fmt: skip
"""``--set`` overrides of a security-0002 model small enough to train a few iterations in seconds on a CPU."""


def small_config(preset: str = "security-0002", num_classes: int = 3) -> ModelConfig:
    """A preset at a small input size, so that CPU tests stay fast."""
    cfg = get_config(preset, num_classes=num_classes)
    return dataclasses.replace(
        cfg,
        input=cfg.input.with_size((128, 160), train_sizes=(128,)),
        rpn=dataclasses.replace(cfg.rpn, pre_nms_top_n_test=200, post_nms_top_n_test=100,
                                pre_nms_top_n_train=200, post_nms_top_n_train=100),
    )  # fmt: skip
