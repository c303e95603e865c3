"""One model, one function: for every preset, ``model.predict``, the ``Predictor`` on PyTorch, on the exported
OpenVINO IR (fp32) and on ONNX Runtime give the same detections on photos of any aspect ratio (letterboxed for
the fixed-canvas seed, resized by the preset's own rule for the others, whose exports have a dynamic input).

Tolerances (``isseg.testing.equality``): boxes 0.05 px, scores 1e-4, mask IoU 0.98, same labels and counts up
to detections whose score ties a cut within 1e-4; for the other runtimes at most one "jump" per photo (a detection
replaced by an overlapping one of the same label: float rounding tipped a discrete choice upstream, measured
once in 15 photo x backend pairs).
"""

from __future__ import annotations

import functools

import cv2
import pytest
import torch

from helpers import ASPECT_PHOTOS as PHOTOS
from test_export_common import EXPORT_ROOT

ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

# a portrait (0.56), an exact 4:3 and a wide (2.11) photo of coco-mini val2017
# small inference sizes so that CPU tests stay fast: a fit canvas (H, W), or (short, long)
SIZES = {"security-0002": (320, 416), "torchvision-v1": (320, 480), "torchvision-v2": (320, 480),
         "detectron2-r50-fpn": (320, 480), "mmdet-r50-caffe-fpn": (320, 480)}


def photos(coco_mini):
    return [cv2.imread(str(coco_mini / "val2017" / name)) for name in PHOTOS]


@functools.cache
def exported(preset: str):
    """A realistic random-weight model of ``preset`` at its test size, exported once (IR + ONNX)."""
    from isseg.deploy.export import at_size, export
    from isseg.testing.random_weights import realistic_random_model

    model = at_size(realistic_random_model(preset, seed=3), SIZES[preset])
    with torch.no_grad():  # fewer, better separated detections: most stay below the 100 kept
        model.roi_heads.box_predictor.cls_score.bias[-1] += 2.0
    xml = export(model, EXPORT_ROOT / f"one-function-{preset}", keep_onnx=True)
    return model, xml


@pytest.mark.parametrize("preset", list(SIZES))
def test_every_path_computes_the_preset_function(preset, coco_mini):
    from isseg.deploy.predictor import Predictor
    from isseg.testing.equality import same_detections

    model, xml = exported(preset)
    predictors = {
        "torch": Predictor(model),
        "openvino fp32": Predictor(xml, precision="f32"),
        "onnxruntime": Predictor(xml.with_suffix(".onnx")),
    }
    for p in predictors.values():
        assert p.config == model.config  # the export carries the whole preset
    for name, image in zip(PHOTOS, photos(coco_mini)):
        ref = model.predict(image)
        assert len(ref) >= 5, f"{preset} {name}: the seeded model should detect something ({len(ref)})"
        for backend, p in predictors.items():
            det = p.predict(image)
            assert det.image_size == image.shape[:2] and det.masks.shape == (len(det), *image.shape[:2])
            # another runtime's float rounding may tip one discrete choice upstream (an RPN NMS decision, the
            # 1000th proposal, a pyramid level), so one detection comes from a neighbouring proposal: at most
            # one such jump per photo (same label, overlapping box), reported
            eq = same_detections(ref, det, mask_paste=model.config.roi.mask_paste,
                                 discontinuities=0 if backend == "torch" else 1)
            print(f"{preset} {name} {backend}: {eq}")
            assert eq.ok, f"{preset} {name} {backend}: {eq}"
            if backend == "torch":  # the exported code run eagerly: exactly the model's function
                assert eq.matched == len(ref) == len(det) and eq.max_box_diff < 1e-3


def test_shortest_edge_exports_are_dynamic_fit_exports_static():
    """A "shortest_edge" preset's export takes each photo at its own resized size; the seed's a fixed canvas."""
    _, xml = exported("torchvision-v2")
    shape = ov.Core().read_model(str(xml)).inputs[0].get_partial_shape()
    assert shape[0].get_length() == 1 and shape[1].get_length() == 3 and shape[2].is_dynamic and shape[3].is_dynamic
    _, xml = exported("security-0002")
    assert ov.Core().read_model(str(xml)).inputs[0].get_partial_shape() == ov.PartialShape([1, 3, 320, 416])


def test_exports_keep_the_checkpoint_size_unless_told(tmp_path, recwarn):
    """The inference size travels with the model: export uses it, and says so when told another one."""
    from isseg.deploy.export import export
    from isseg.deploy.predictor import Predictor

    model, _ = exported("security-0002")
    xml = export(model, tmp_path / "a", format="onnx")
    assert Predictor(xml).input_size == (320, 416) and not [w for w in recwarn if "instead of" in str(w.message)]
    with pytest.warns(UserWarning, match="at canvas 256x320 instead of its preset's 320x416"):
        xml = export(model, tmp_path / "b", format="onnx", input_size=(256, 320))
    assert Predictor(xml).input_size == (256, 320)
