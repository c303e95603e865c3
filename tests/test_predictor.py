"""``isseg.Predictor``: the PyTorch, OpenVINO and ONNX Runtime backends agree; batches, foreign IRs, errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_export_common import SMALL, coco_image, small_export

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

import isseg  # noqa: E402
from isseg.config import COCO_CLASSES  # noqa: E402
from isseg.deploy.compare import compare  # noqa: E402
from isseg.deploy.predictor import Predictor  # noqa: E402


def test_backends_agree(exported):
    image = coco_image(0)  # not the input size: letterbox, then boxes and masks back to the original
    torch_p = Predictor(exported.model, input_size=SMALL)
    ov_p = Predictor(exported.xml, precision="f32")
    onnx_p = Predictor(exported.onnx)
    assert torch_p.backend == "torch" and ov_p.backend == "openvino" and onnx_p.backend == "onnx"
    assert ov_p.input_size == onnx_p.input_size == SMALL
    ref = torch_p.predict(image)
    assert 0 < len(ref) < 100
    assert ref.masks.shape == (len(ref), *image.shape[:2]) and ref.masks.dtype == bool
    assert ref.boxes.dtype == np.float32 and ref.labels.dtype == np.int64
    assert ref.boxes[:, [0, 2]].max() <= image.shape[1] and ref.boxes[:, [1, 3]].max() <= image.shape[0]
    for p in (ov_p, onnx_p):
        det = p.predict(image)
        assert det.class_names == COCO_CLASSES and det.image_size == image.shape[:2]
        a = compare(ref, det)
        assert a.recall == 1.0 and a.precision == 1.0, a
        assert a.box_iou > 0.999 and a.mask_iou > 0.98 and a.score_diff < 1e-3, a
        assert set(p.timings) == {"preprocess", "infer", "postprocess"}
    # threshold filters; masks can be skipped
    high = ov_p.predict(image, threshold=float(np.median(ref.scores)), masks=False)
    assert 0 < len(high) < len(ref) and high.masks is None


def test_batch_async_and_inputs(exported, tmp_path):
    image = coco_image(0)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), image)
    sync = Predictor(exported.xml, precision="f32")
    expected = [sync.predict(x) for x in (image, gray)]
    batch = Predictor(exported.xml, precision="f32", mode="throughput", num_requests=2)
    results = batch.predict_batch([image, gray, path])
    assert len(results) == 3
    for det, ref in zip(results, expected + expected[:1]):
        a = compare(ref, det)
        assert a.recall == 1.0 and a.precision == 1.0 and a.box_iou > 0.999, a
    out = list(batch.predict_stream([image, tmp_path / "missing.jpg", np.zeros((4, 4, 5), np.uint8), image],
                                    errors="return"))
    assert isinstance(out[1], FileNotFoundError) and isinstance(out[2], ValueError)
    assert len(out[0]) == len(out[3]) == len(expected[0])


@pytest.mark.parametrize("mode", ["latency", "throughput"])
def test_stream_keeps_going_past_a_postprocess_error(exported, mode, monkeypatch):
    """A RuntimeError while post-processing one image (as torch raises on a failed allocation) is that image's
    error and the stream goes on, as for a failed inference: Ray actors and ``isseg predict`` rely on it."""
    image = coco_image(0)
    p = Predictor(exported.xml, precision="f32", mode=mode)
    calls = {"n": 0}
    original = p.postprocess

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory")
        return original(*args, **kwargs)

    monkeypatch.setattr(p, "postprocess", flaky)
    out = list(p.predict_stream([image, image, image], errors="return"))
    assert isinstance(out[1], RuntimeError) and len(out[0]) == len(out[2]) > 0
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="out of memory"):
        list(p.predict_stream([image, image, image]))


def test_foreign_ir_without_isseg_metadata(exported, tmp_path):
    """An IR with the seed's contract but none of our rt_info (as Open Model Zoo's) still works: COCO class
    names, masks pasted the Open Model Zoo way."""
    xml = exported.xml.read_text()
    xml = re.sub(r"<isseg>.*?</isseg>", "", xml, flags=re.S)
    xml = re.sub(r"<model_info>.*?</model_info>", "", xml, flags=re.S)
    xml = re.sub(r"<framework>.*?</framework>", "", xml, flags=re.S)
    (tmp_path / "omz.xml").write_text(xml)
    shutil.copy(exported.xml.with_suffix(".bin"), tmp_path / "omz.bin")
    p = Predictor(tmp_path / "omz.xml", precision="f32")
    assert p.class_names == COCO_CLASSES and p.config.roi.mask_paste == "torchvision"
    assert not p.config.input.pad_normalized and p.input_size == SMALL  # Open Model Zoo pads with 0
    photo = cv2.resize(coco_image(0), SMALL[::-1])  # exactly the canvas: no letterbox, the padding is moot
    ref = Predictor(exported.xml, precision="f32").predict(photo)
    det = p.predict(photo)
    a = compare(ref, det)
    assert a.recall == 1.0 and a.box_iou > 0.999 and a.mask_iou > 0.8, a


def test_errors(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Predictor(tmp_path / "missing.xml")
    with pytest.raises(FileNotFoundError, match="not found"):
        Predictor(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="backend"):
        Predictor(exported.xml, backend="tensorrt")
    p = Predictor(exported.onnx)
    with pytest.raises(ValueError, match="uint8"):
        p.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        p.predict(np.zeros((8, 8, 5), np.uint8))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="not an image"):
        p.predict(tmp_path / "bad.jpg")


def test_model_exported_on_the_fly(exported):
    """A PyTorch model with backend="onnx" is exported to a temporary file first."""
    p = Predictor(exported.model, backend="onnx", input_size=SMALL)
    assert p.backend == "onnx" and p.input_size == SMALL
    ref = Predictor(exported.onnx).predict(coco_image(0))
    a = compare(ref, p.predict(coco_image(0)))
    assert a.recall == 1.0 and a.box_iou > 0.999, a


def test_predictor_and_model_share_input_rules() -> None:
    """One validation for every entry point: RGBA is refused by the Predictor as by the model."""
    p = Predictor(small_export(11.0).onnx)
    with pytest.raises(ValueError, match="RGBA"):
        p.predict(np.zeros((8, 8, 4), np.uint8))
    assert len(p.predict(np.zeros((8, 8), np.uint8))) == 0


def test_runtimes_share_one_openvino_core(exported):
    """One ``ov.Core`` per model let deleting a model right after an async stream abort the process
    ("Resource deadlock avoided", timing-dependent: see benchmarks/stress_async.py); every runtime must use
    the process's shared Core."""
    from isseg.deploy.ov_core import shared_core

    a = Predictor(exported.xml, precision="f32")
    b = Predictor(exported.xml, mode="throughput", num_requests=2)
    assert a.runtime.core is b.runtime.core is shared_core()


def test_streams_reuse_idle_requests_and_streams_at_once_do_not_share_them(exported):
    """A stream takes the idle ``AsyncInferQueue`` of an earlier one, whose requests keep their memory (a new
    queue per call, i.e. per tiled 4K frame, allocated and freed their buffers every frame); two streams
    running at once each get their own, and both give the synchronous results. In latency mode (one request)
    a stream runs on the synchronous request and makes no queue at all."""
    image = coco_image(0)
    latency = Predictor(exported.xml, precision="f32")
    ref = latency.predict(image)
    assert [compare(ref, d).recall for d in latency.predict_stream([image, image])] == [1.0, 1.0]
    assert latency.runtime.num_requests == 1 and latency.runtime._idle_queues == []
    p = Predictor(exported.xml, precision="f32", mode="throughput", num_requests=2)
    first = list(p.predict_stream([image, image]))
    pool = list(p.runtime._idle_queues)
    assert len(pool) == 1
    a, b = p.predict_stream([image] * 3), p.predict_stream([image] * 3)
    both = [next(a), next(b), *a, *b]
    assert len(p.runtime._idle_queues) == 2 and any(q is pool[0] for q in p.runtime._idle_queues)
    for det in first + both:
        agreement = compare(ref, det)
        assert agreement.recall == 1.0 and agreement.precision == 1.0 and agreement.box_iou > 0.999, agreement


def test_options_are_checked_and_a_closed_predictor_says_so(tmp_path: Path) -> None:
    from isseg.deploy.predictor import Predictor, PredictorOptions

    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        PredictorOptions(mode="fast")
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        PredictorOptions(threshold=1.5)
    model = isseg.build_model("security-0002", num_classes=2).eval()
    with Predictor(model, backend="onnx", threshold=0.25) as p:
        export_dir = p.model_file.parent  # exported on the fly into a temporary folder
        assert p.options.threshold == 0.25 and p.backend == "onnx" and p.model_file.is_file()
    assert not export_dir.exists()  # the Predictor removed its temporary export
    with pytest.raises(RuntimeError, match="this Predictor is closed"):
        p.predict(np.zeros((32, 32, 3), np.uint8))
