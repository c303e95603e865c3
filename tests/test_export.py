"""Export to OpenVINO IR and ONNX: the seed's exact contract, agreement with the PyTorch model, Model API."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from test_export_common import SMALL, coco_image, network_input, seed_export, small_export

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run_ov(xml, x: np.ndarray, precision: str = "f32"):
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    out = compiled([x])
    return {o.get_any_name(): out[o] for o in compiled.outputs}


def _run_ort(path, x: np.ndarray):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(["labels", "boxes", "masks"], session.run(["labels", "boxes", "masks"], {"image": x})))


def test_ir_contract():
    exp = seed_export()
    model = ov.Core().read_model(str(exp.xml))
    assert [i.get_any_name() for i in model.inputs] == ["image"]
    assert model.inputs[0].get_partial_shape() == ov.PartialShape([1, 3, 768, 1024])
    assert model.inputs[0].get_element_type() == ov.Type.f32
    outputs = {o.get_any_name(): o for o in model.outputs}
    assert set(outputs) == {"labels", "boxes", "masks"}
    assert outputs["labels"].get_partial_shape() == ov.PartialShape([100])
    assert outputs["labels"].get_element_type().is_integral()
    assert outputs["boxes"].get_partial_shape() == ov.PartialShape([100, 5])
    assert outputs["masks"].get_partial_shape() == ov.PartialShape([100, 28, 28])
    assert outputs["boxes"].get_element_type() == ov.Type.f32 == outputs["masks"].get_element_type()
    ops = {op.get_type_name() for op in model.get_ops()}
    assert not ops & {"Loop", "If", "TensorIterator"}
    assert {"NonMaxSuppression", "ROIAlign", "TopK"} <= ops
    info = lambda *path: str(model.get_rt_info(list(path)).astype(str))  # noqa: E731
    assert info("model_info", "model_type") == "MaskRCNN"
    assert info("model_info", "resize_type") == "fit_to_window"
    labels = info("model_info", "labels").split()
    assert labels[0] == "background" and labels[1] == "person" and "traffic_light" in labels and len(labels) == 81
    names = json.loads(info("isseg", "class_names"))
    assert names[9] == "traffic light" and len(names) == 80
    # geometry kept in fp32 under bf16: the "precise" attribute on the layers outside the network modules
    xml = exp.xml.read_text()
    assert xml.count('<attribute name="precise" version="0"') > 100
    nms = re.search(r'<layer id="\d+" name="[^"]*" type="NonMaxSuppression"[^>]*>\s*<rt_info>\s*<attribute '
                    r'name="precise"', xml)
    assert nms is not None
    # ...but the concatenation of pooled features is network: in fp32 it cost ~20 ms of layout conversions
    concats = re.findall(r'<layer id="\d+" name="/roi_heads/(?:box|mask)_roi_pool/concat/[^"]*" '
                         r'type="Concat"[^>]*>\s*(<rt_info>)?'
                         r'\s*(<attribute name="precise")?', xml)
    assert len(concats) == 2 and not any(precise for _, precise in concats), concats
    # every network scope names real layers (a renamed module would silently put the network in fp32)
    from isseg.deploy.graph import NETWORK_SCOPES

    names = [op.get_friendly_name() for op in model.get_ops()]
    for scope in NETWORK_SCOPES:
        assert any(n.startswith(scope) for n in names), f"no layer of the IR is in scope {scope}"
    convs = re.findall(r'type="Convolution"[^>]*>\s*<rt_info>\s*<attribute name="precise"', xml)
    assert not convs, "convolutions must run in the network's precision"


def test_onnx_contract_standard_ops():
    exp = seed_export()
    proto = onnx.load(str(exp.onnx), load_external_data=False)
    onnx.checker.check_model(proto)
    assert {d.domain for d in proto.opset_import} <= {"", "ai.onnx"}
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"Loop", "If", "Scan"}
    assert {"NonMaxSuppression", "RoiAlign", "TopK"} <= ops
    assert [i.name for i in proto.graph.input] == ["image"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 768, 1024]
    assert [o.name for o in proto.graph.output] == ["labels", "boxes", "masks"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_info model_type"] == "MaskRCNN"
    assert json.loads(meta["isseg class_names"])[0] == "person"


def test_traced_equals_eager():
    """The seed's 768x1024 graph in OpenVINO fp32 and ONNX Runtime against the same code run eagerly in PyTorch
    (``ExportModule`` around ``MaskRCNN.infer``), on a letterboxed photo: the raw contract outputs agree."""
    from isseg.deploy.graph import ExportModule

    exp = seed_export()
    x = network_input(coco_image(1), exp.model)  # a portrait photo: letterbox padding on the right
    assert x.shape == (1, 3, 768, 1024)
    with torch.no_grad():
        labels, boxes, masks = (t.numpy() for t in ExportModule(exp.model).eval()(torch.from_numpy(x)))
    n = int((boxes[:, 4] > 0).sum())
    assert n >= 50, "the seeded model should give realistic detections"
    for out in (_run_ov(exp.xml, x), _run_ort(exp.onnx, x)):
        np.testing.assert_array_equal(out["labels"][:n], labels[:n])
        np.testing.assert_allclose(out["boxes"][:n, 4], boxes[:n, 4], atol=1e-4)
        np.testing.assert_allclose(out["boxes"][:n, :4], boxes[:n, :4], atol=0.05)
        np.testing.assert_allclose(out["masks"][:n], masks[:n], atol=2e-3)


def test_padding_rows_are_zero():
    """Fewer than 100 detections (some on a photo, none on a flat gray image) are padded with zero rows."""
    exp = small_export(11.0)
    photo = network_input(coco_image(0), exp.model)
    flat = np.full((1, 3, *SMALL), 127, np.float32)
    for x, expect in ((photo, "some"), (flat, "none")):
        for out in (_run_ov(exp.xml, x), _run_ort(exp.onnx, x)):
            assert out["labels"].shape == (100,) and out["boxes"].shape == (100, 5)
            assert out["masks"].shape == (100, 28, 28)
            n = int((out["boxes"][:, 4] > 0).sum())
            assert (0 < n < 100) if expect == "some" else n == 0
            assert np.all(out["boxes"][n:] == 0) and np.all(out["labels"][n:] == 0) and np.all(out["masks"][n:] == 0)
            scores = out["boxes"][:n, 4]
            assert np.all(np.diff(scores) <= 0) and np.all(scores >= 0.05)
            boxes = out["boxes"][:n, :4]
            assert np.all(boxes[:, 2:] >= boxes[:, :2]) and np.all(boxes >= 0)
            assert np.all(boxes[:, [0, 2]] <= SMALL[1]) and np.all(boxes[:, [1, 3]] <= SMALL[0])


def test_model_api_zero_config():
    """OpenVINO Model API recognises the IR as Mask R-CNN from rt_info alone and agrees with the Predictor."""
    pytest.importorskip("model_api")
    import cv2
    from model_api.models import Model

    from isseg.deploy.compare import compare
    from isseg.deploy.predictor import Predictor
    from isseg.deploy.rate_probe import openvino_default
    from isseg.model.detections import Detections

    exp = seed_export()
    canvas = cv2.resize(coco_image(0), (1024, 768))  # exactly the input size: both resize and pad nothing
    wrapper = Model.create_model(str(exp.xml), configuration={"confidence_threshold": 0.5},
                                 preload=True)  # confidence_threshold is also 0.5 in rt_info
    assert type(wrapper).__name__ == "MaskRCNNModel"
    result = wrapper(canvas)
    from dataclasses import replace

    # Model API compiles in OpenVINO's default precision; isseg's own default may differ (measured), so ask for it
    predictor = Predictor(exp.xml, threshold=0.5, precision=openvino_default("CPU"))
    cfg = predictor.config  # Model API pastes masks the Open Model Zoo way
    predictor.config = replace(cfg, roi=replace(cfg.roi, mask_paste="torchvision"))
    ours = predictor.predict(canvas)
    theirs = Detections(result.bboxes.astype(np.float32), result.scores.astype(np.float32),
                        (np.asarray(result.labels) - 1).astype(np.int64), result.masks.astype(bool),
                        predictor.class_names, canvas.shape[:2])
    assert len(theirs) > 0
    assert [n.replace("_", " ") for n in result.label_names] == theirs.names
    agreement = compare(ours, theirs)
    assert agreement.recall >= 0.9 and agreement.precision >= 0.9, agreement
    assert agreement.box_iou > 0.95  # Model API rounds boxes to integers
    assert agreement.mask_iou > 0.6, agreement  # both in OpenVINO's default: bf16 is noisy on random weights


def test_export_errors(tmp_path):
    from isseg.deploy.export import export

    model = small_export(11.0).model
    with pytest.raises(ValueError, match="format"):
        export(model, tmp_path, format="tflite")
    with pytest.raises(ValueError, match="precision"):
        export(model, tmp_path, precision="int4")
    with pytest.raises(ValueError, match="fp16"):
        export(model, tmp_path, format="onnx", precision="fp16")
    with pytest.raises(FileNotFoundError):
        export(tmp_path / "missing.pth", tmp_path)
