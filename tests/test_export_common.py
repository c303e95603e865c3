"""Shared, cached artifacts of the deployment tests (no tests here: a module, not fixtures, so that every test
file reuses the same exports within one pytest process).

- ``seed_export()``: a seeded realistic random-weight security-0002 model exported at the seed's 768x1024
  (OpenVINO IR + the ONNX file it was converted from, one trace);
- ``small_export(background)``: the same network at a 320x416 canvas (fast), with the background logit
  raised by ``background`` to control how many detections come out.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

SMALL = (320, 416)
EXPORT_ROOT = Path(tempfile.mkdtemp(prefix="isseg-deploy-tests-"))
"""A folder for the exports of this pytest process (removed at exit)."""
atexit.register(shutil.rmtree, EXPORT_ROOT, True)


@dataclass
class Exported:
    model: torch.nn.Module
    xml: Path
    onnx: Path
    input_size: tuple[int, int]


@functools.cache
def seed_model() -> torch.nn.Module:
    from isseg.testing.random_weights import realistic_random_model

    return realistic_random_model("security-0002", seed=0)


@functools.cache
def seed_export() -> Exported:
    from isseg.deploy.export import export

    model = seed_model()
    xml = export(model, EXPORT_ROOT / "seed", "openvino", "fp32", keep_onnx=True)
    return Exported(model, xml, xml.with_suffix(".onnx"), (768, 1024))


@functools.cache
def small_export(background: float = 0.0) -> Exported:
    from isseg.deploy.export import at_size, export
    from isseg.testing.random_weights import realistic_random_model

    model = at_size(realistic_random_model("security-0002", seed=1), SMALL)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[-1] += background
    xml = export(model, EXPORT_ROOT / f"small{background:g}", "openvino", "fp32", keep_onnx=True)
    return Exported(model, xml, xml.with_suffix(".onnx"), SMALL)


def coco_image(index: int = 0) -> np.ndarray:
    """A coco-mini val image (skips the test when coco-mini is absent)."""
    import pytest

    from isseg.testing.datasets import coco_mini_dir

    folder = coco_mini_dir() / "val2017"
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if len(files) <= index:
        pytest.skip(f"coco-mini not found at {folder}; set ISSEG_COCO_MINI")
    return cv2.imread(str(files[index]), cv2.IMREAD_COLOR)


def network_input(image: np.ndarray, model: torch.nn.Module) -> np.ndarray:
    """The exported graph's ``image`` input for a photo: the model's own pre-processing (letterbox for a "fit"
    preset), float32 [1, 3, H, W]."""
    from isseg.model.transform import network_input as prepare

    return prepare(image, model.config.input)[0]
