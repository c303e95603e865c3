"""INT8 export with NNCF post-training quantization (a few calibration images, small input to stay fast)."""

from __future__ import annotations

import pytest

from test_export_common import SMALL, coco_image, small_export

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")


def test_int8_openvino(tmp_path):
    from isseg.deploy.export import export
    from isseg.deploy.predictor import Predictor

    exp = small_export(11.0)
    images = [coco_image(i) for i in range(2)]
    xml = export(exp.model, tmp_path, "openvino", "int8", input_size=SMALL, calibration=images)
    assert xml.name == "security-0002-int8.xml"
    model = ov.Core().read_model(str(xml))
    ops = [op.get_type_name() for op in model.get_ops()]
    assert ops.count("FakeQuantize") > 50  # the network is quantized...
    assert str(model.get_rt_info(["isseg", "precision"]).astype(str)) == "int8"
    assert str(model.get_rt_info(["model_info", "model_type"]).astype(str)) == "MaskRCNN"
    assert xml.read_text().count('name="precise"') > 100  # ...the geometry is not
    outputs = {o.get_any_name(): o.get_partial_shape() for o in model.outputs}
    assert outputs == {"labels": ov.PartialShape([100]), "boxes": ov.PartialShape([100, 5]),
                       "masks": ov.PartialShape([100, 28, 28])}
    det = Predictor(xml).predict(images[1])
    assert det.masks is not None and det.masks.shape[1:] == images[1].shape[:2]
    assert det.class_names[0] == "person"
    # with random weights int8 moves scores a lot; only check the result is sane
    assert len(det) <= 100 and (det.scores >= 0.05).all()


def test_calibration_images_errors(tmp_path):
    import cv2
    import numpy as np

    from isseg.deploy.quantize import calibration_images

    with pytest.raises(FileNotFoundError, match="calibration"):
        calibration_images(tmp_path / "none")
    (tmp_path / "notes.txt").write_text("not an image suffix: not looked at")
    with pytest.raises(ValueError, match="no calibration images in"):
        calibration_images(tmp_path)
    # a bad image is the one decoder's one-line error naming the file, not a silently smaller calibration set
    (tmp_path / "a.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"a\.jpg: not an image OpenCV can read") as info:
        calibration_images(tmp_path)
    assert "\n" not in str(info.value)
    ok, encoded = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8))
    assert ok
    (tmp_path / "a.jpg").write_bytes(encoded.tobytes())
    (tmp_path / "b.jpg").write_bytes(encoded.tobytes()[: len(encoded) // 2])
    with pytest.raises(ValueError, match=r"b\.jpg: truncated JPEG"):
        calibration_images(tmp_path)
    assert len(calibration_images(tmp_path, count=1)) == 1  # only the first `count` files are read


def test_int8_needs_calibration_images(tmp_path):
    from isseg.deploy.export import export

    with pytest.raises(ValueError, match="calibration images"):
        export(small_export(11.0).model, tmp_path, "openvino", "int8")
