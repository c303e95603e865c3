"""Every preset exports: the fixed-size graph computes what the preset's model computes on the same input,
and its ONNX file (standard ops) gives the same in ONNX Runtime."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from test_export_common import SMALL, canvas_of, coco_image

ort = pytest.importorskip("onnxruntime")

PRESETS = ["torchvision-v1", "torchvision-v2", "detectron2-r50-fpn", "mmdet-r50-caffe-fpn"]


def _as_deployed(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights with the deployment's input handling (fit into SMALL, cv2, pad with pixel 0), so that
    a SMALL canvas goes through the PyTorch model unchanged."""
    from isseg.model.mask_rcnn import MaskRCNN

    cfg = model.config
    inp = replace(cfg.input, resize="fit", fit_size=SMALL, resize_backend="cv2", size_rounding="round",
                  pad_to="fixed", pad_normalized=False)
    twin = MaskRCNN(replace(cfg, input=inp, roi=replace(cfg.roi, clip_to_original=False))).eval()
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_exports_and_agrees(preset, tmp_path):
    from isseg.deploy.compare import compare
    from isseg.deploy.export import export
    from isseg.deploy.predictor import Predictor
    from isseg.testing.random_weights import realistic_random_model

    model = realistic_random_model(preset, seed=2)
    canvas = canvas_of(coco_image(1), SMALL)
    ref = _as_deployed(model).predict(canvas)
    assert len(ref) > 0
    graph = Predictor(model, input_size=SMALL).predict(canvas)  # DeployGraph in eager PyTorch
    a = compare(ref, graph)
    assert a.recall >= 0.98 and a.precision >= 0.98 and a.box_iou > 0.999 and a.mask_iou > 0.97, a
    path = export(model, tmp_path, "onnx", input_size=SMALL)
    onnx_det = Predictor(path).predict(canvas)
    b = compare(graph, onnx_det)
    assert b.recall >= 0.98 and b.precision >= 0.98 and b.box_iou > 0.999 and b.mask_iou > 0.98, b
    assert np.isclose(onnx_det.scores, graph.scores[: len(onnx_det)], atol=1e-3).mean() > 0.9
