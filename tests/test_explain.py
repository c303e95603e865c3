"""Explain: the in-graph class maps (hand-made cases), the exported ``saliency_map`` / ``feature_vector`` read by
OpenVINO Model API with the contract's outputs unchanged, per-detection gradient maps that belong to their
detection, D-RISE finding the region a stand-in detector depends on, and ``isseg explain``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isseg.explain.graph import class_saliency, paste_on_grid
from isseg.model.detections import Detections

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:running 'security-0002' at canvas")]


def test_paste_on_grid_puts_the_mask_in_its_box() -> None:
    mask = torch.zeros(1, 28, 28)
    mask[0, :, :14] = 1.0  # the left half of the box
    pasted = paste_on_grid(torch.tensor([[16.0, 8.0, 48.0, 40.0]]), mask, 64, 64, stride=8)
    assert pasted.shape == (1, 8, 8)
    # cell centres 4, 12, ..., 60: x in the box's left half (16..32) -> columns 2, 3; rows of y 8..40 -> 1..4
    expected = torch.zeros(8, 8)
    expected[1:5, 2:4] = 1.0
    torch.testing.assert_close(pasted[0], expected, atol=1e-6, rtol=0)


def test_class_saliency_is_the_score_weighted_mean_of_masks() -> None:
    boxes5 = torch.tensor([[0.0, 0.0, 16.0, 16.0, 0.9], [32.0, 32.0, 48.0, 48.0, 0.45], [0, 0, 32, 32, 0.3],
                           [0.0, 0.0, 0.0, 0.0, 0.0]])  # class 1 twice, class 0 once, a padding row
    labels = torch.tensor([1, 1, 0, 0])
    masks = torch.ones(4, 28, 28)
    maps = class_saliency(boxes5, labels, masks, num_classes=3, height=64, width=64, stride=8)
    assert maps.shape == (3, 8, 8)
    # class 1: 0.9 on the first box's 2x2 cells, 0.45 on the second's, 0 elsewhere; min-max -> 1 and 0.5
    assert maps[1, 0:2, 0:2].eq(1).all() and torch.allclose(maps[1, 4:6, 4:6], torch.tensor(0.5))
    assert maps[1].sum() == pytest.approx(4 * 1 + 4 * 0.5)
    assert maps[0, 0:4, 0:4].eq(1).all() and maps[0].sum() == 16  # the padding row (score 0) adds nothing
    assert maps[2].eq(0).all()  # no detection of class 2
    # only the detections at or above min_score count (an export's confidence threshold)
    strict = class_saliency(boxes5, labels, masks, 3, 64, 64, 8, min_score=0.5)
    assert strict[0].eq(0).all() and strict[1, 4:6, 4:6].eq(0).all() and strict[1, 0:2, 0:2].eq(1).all()


def test_export_explain_model_api_reads_both_outputs() -> None:
    """``export(explain=True)``: the contract's outputs as ``ExportModule`` gives them, plus ``saliency_map`` and
    ``feature_vector``, which Model API returns as ``result.saliency_map`` / ``result.feature_vector``."""
    ov = pytest.importorskip("openvino")
    pytest.importorskip("model_api")
    import cv2
    from model_api.models import Model

    from isseg.deploy.export import at_size, export
    from isseg.deploy.graph import ExportModule
    from isseg.explain.graph import ExplainModule
    from isseg.testing.random_weights import realistic_random_model
    from test_export_common import SMALL, coco_image, network_input

    model = at_size(realistic_random_model("security-0002", seed=1), SMALL).eval()
    xml = export(model, _tmp("explain"), "openvino", "fp32", explain=True, confidence_threshold=0.3)
    ir = ov.Core().read_model(str(xml))
    shapes = {o.get_any_name(): (o.get_partial_shape(), o.get_element_type()) for o in ir.outputs}
    assert list(shapes) == ["labels", "boxes", "masks", "saliency_map", "feature_vector"]
    assert shapes["labels"][0] == ov.PartialShape([100]) and shapes["masks"][0] == ov.PartialShape([100, 28, 28])
    assert shapes["saliency_map"] == (ov.PartialShape([1, 80, 40, 52]), ov.Type.u8)
    assert shapes["feature_vector"] == (ov.PartialShape([1, 5 * 256]), ov.Type.f32)

    image = cv2.resize(coco_image(0), (SMALL[1], SMALL[0]))  # the input size: Model API's resize and pad are no-ops
    x = network_input(image, model)
    compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = {o.get_any_name(): v for o, v in compiled([x]).items()}
    with torch.no_grad():
        labels, boxes, masks = (t.numpy() for t in ExportModule(model)(torch.from_numpy(x)))
        explained = [t.numpy() for t in ExplainModule(model, min_score=0.3)(torch.from_numpy(x))]
    n = int((boxes[:, 4] > 0).sum())
    assert n > 10
    np.testing.assert_array_equal(got["labels"][:n], labels[:n])  # the contract's outputs are unchanged
    np.testing.assert_allclose(got["boxes"][:n], boxes[:n], atol=0.05)
    np.testing.assert_allclose(got["masks"][:n], masks[:n], atol=2e-3)
    assert np.abs(got["saliency_map"].astype(int) - explained[3].astype(int)).max() <= 1
    np.testing.assert_allclose(got["feature_vector"], explained[4], rtol=1e-3, atol=1e-4)
    assert explained[3].max() == 255  # some class has detections >= 0.3

    wrapper = Model.create_model(str(xml), preload=True)
    assert type(wrapper).__name__ == "MaskRCNNModel"
    result = wrapper(image)
    theirs, ours = result.feature_vector.ravel().astype(np.float64), explained[4].ravel().astype(np.float64)
    assert result.feature_vector.shape == (1, 1280)  # Model API runs the CPU's default (bf16): close, not equal
    assert theirs @ ours / np.linalg.norm(theirs) / np.linalg.norm(ours) > 0.999
    assert np.linalg.norm(theirs) == pytest.approx(np.linalg.norm(ours), rel=0.02)
    assert len(result.saliency_map) == 81  # one per label (background first), the detected classes filled
    filled = [m for m in result.saliency_map if m.size]
    assert filled and all(m.shape == image.shape[:2] and m.dtype == np.uint8 for m in filled)
    assert any(m.max() == 255 for m in filled)
    assert len(result.scores) > 0 and float(np.min(result.scores)) > 0.3  # the exported threshold


def _tmp(name: str) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"isseg-{name}-"))


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    from isseg.deploy.export import at_size
    from isseg.testing.random_weights import realistic_random_model
    from test_export_common import SMALL

    return at_size(realistic_random_model("security-0002", seed=1), SMALL).eval()


def test_gradient_maps_belong_to_their_detection(small_model: torch.nn.Module) -> None:
    from isseg.explain.gradient import detection_gradients
    from isseg.explain.graph import ExplainModule
    from test_export_common import coco_image, network_input

    x = torch.from_numpy(network_input(coco_image(0), small_model))
    with torch.no_grad():
        labels, boxes5, _, _, _ = ExplainModule(small_model)(x)
    d = 4
    g = detection_gradients(small_model, x, boxes5[:d, :4], labels[:d], boxes5[:d, 4], layer="c4")
    assert g.maps.shape == (d, 320 // 16, 416 // 16) and g.stride == 16
    # the gradients are those of the very scores the model gave (the proposal behind each one was found again)
    torch.testing.assert_close(g.recomputed, boxes5[:d, 4], atol=1e-5, rtol=0)
    assert float(g.mismatch.max()) < 1e-4
    for i in range(d):
        m = g.maps[i]
        assert (m >= 0).all() and m.sum() > 0
        x1, y1, x2, y2 = (boxes5[i, :4] / 16).tolist()
        ys, xs = torch.meshgrid(torch.arange(m.shape[0]) + 0.5, torch.arange(m.shape[1]) + 0.5, indexing="ij")
        near = (xs >= x1 - 3) & (xs <= x2 + 3) & (ys >= y1 - 3) & (ys <= y2 + 3)  # the box + 48 px
        assert m[near].sum() / m.sum() > 0.6, i  # most of what raised the score lies at the detection
    assert not torch.allclose(g.maps[0], g.maps[1])
    with pytest.raises(ValueError, match="layer 'c9'"):
        detection_gradients(small_model, x, boxes5[:1, :4], labels[:1], boxes5[:1, 4], layer="c9")
    empty = detection_gradients(small_model, x, boxes5[:0, :4], labels[:0], boxes5[:0, 4])
    assert empty.maps.shape == (0, 20, 26)


def test_drise_finds_the_region_a_detector_depends_on() -> None:
    from isseg.explain.drise import drise_maps, random_masks

    image = np.full((64, 96, 3), 60, np.uint8)
    image[16:32, 48:72] = 250  # the object
    box = np.array([[48.0, 16.0, 72.0, 32.0]], np.float32)

    def predict(img: np.ndarray) -> Detections:  # scores the object by how much of it is visible
        score = float(img[16:32, 48:72].mean()) / 250.0
        return Detections(box, np.array([score], np.float32), np.array([0]), None, ("thing",), img.shape[:2])

    target = predict(image)
    maps = drise_maps(predict, image, target, num_masks=150, cells=8, seed=1)
    assert maps.shape == (1, 64, 96)
    inside, outside = maps[0, 16:32, 48:72].mean(), np.delete(maps[0], np.s_[12:36], axis=0).mean()
    assert inside > 5 * outside, (inside, outside)
    masks = random_masks(4, (64, 96), cells=8, seed=0)
    assert masks.shape == (4, 64, 96) and masks.min() >= 0 and masks.max() <= 1 and 0.3 < masks.mean() < 0.7
    with pytest.raises(ValueError, match="masks"):
        random_masks(0, (8, 8))
    other = Detections(box, np.array([1.0], np.float32), np.array([1]), None, ("a", "b"), (64, 96))
    assert drise_maps(lambda img: other, image, target, num_masks=5).max() == 0  # another class: no evidence


def test_explain_image_and_cli(small_model: torch.nn.Module, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from isseg.cli.main import main
    from isseg.explain.api import explain_image
    from isseg.weights.loading import save_checkpoint
    from test_export_common import coco_image

    image = coco_image(0)
    expl = explain_image(small_model, image, method="grad", threshold=0.3, max_detections=3)
    det = expl.detections
    assert len(det) > 3 and det.scores.min() >= 0.3 and expl.detection_maps.shape == (3, *image.shape[:2])
    assert set(expl.class_maps) == set(det.names) and expl.feature_vector.shape == (1280,)
    for i in range(3):  # each map peaks near its own detection
        m = expl.detection_maps[i]
        y, x = np.unravel_index(int(m.argmax()), m.shape)
        x1, y1, x2, y2 = det.boxes[i]
        assert m.max() == pytest.approx(1.0) and x1 - 60 <= x <= x2 + 60 and y1 - 60 <= y <= y2 + 60
    with pytest.raises(ValueError, match="method"):
        explain_image(small_model, image, method="magic")

    ckpt = save_checkpoint(tmp_path / "m.pth", small_model)
    image_file = tmp_path / "photo.jpg"
    import cv2

    cv2.imwrite(str(image_file), image)
    out = tmp_path / "out"
    code = main(["explain", str(image_file), str(tmp_path / "missing.jpg"), "--weights", str(ckpt), "--output",
                 str(out), "--threshold", "0.3", "--max-detections", "2"])
    assert code == 1  # one input failed, the other was explained
    captured = capsys.readouterr()
    assert "missing.jpg" in captured.err and "1 image(s) explained, 1 failed" in captured.out
    index = json.loads((out / "explain.json").read_text())
    entry = index[str(image_file)]
    mapped = [r for r in entry["detections"] if "file" in r]
    assert len(mapped) == 2 and len(entry["detections"]) >= 2 and all((out / r["file"]).is_file() for r in mapped)
    assert all((out / f).is_file() for f in entry["files"].values()) and entry["method"] == "grad"
    features = np.load(out / "features.npz")
    assert features["vectors"].shape == (1, 1280) and list(features["names"]) == [str(image_file)]
    assert main(["explain", str(image_file), "--weights", str(ckpt), "--masks", "0"]) == 1
    assert "--masks: expected a value >= 1" in capsys.readouterr().err
