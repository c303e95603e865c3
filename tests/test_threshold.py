"""The deployed confidence threshold: the best-F1 sweep (hand-counted), ``isseg evaluate`` reporting it, training
storing it in its checkpoints, ``isseg export`` writing it into the model, and the Predictor / ``isseg predict``
using it when the user gives no threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isseg.engine.threshold import THRESHOLDS, best_f1_threshold, checkpoint_threshold

GT = {
    "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"},
               {"id": 2, "width": 100, "height": 100, "file_name": "b.png"}],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [0, 60, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 7, "bbox": [60, 0, 40, 40], "area": 1600, "iscrowd": 1},
    ],
}  # fmt: skip


def det(image: int, cat: int, box: list[float], score: float) -> dict:
    return {"image_id": image, "category_id": cat, "bbox": box, "score": score}


RESULTS = [
    det(1, 3, [0, 0, 20, 20], 0.9),     # cat TP
    det(1, 3, [1, 1, 20, 20], 0.8),     # cat: duplicate of the first -> FP
    det(1, 3, [50, 50, 20, 20], 0.3),   # cat TP (low score)
    det(2, 3, [10, 10, 40, 40], 0.6),   # cat TP
    det(2, 3, [80, 80, 10, 10], 0.7),   # cat FP
    det(1, 7, [0, 60, 30, 30], 0.95),   # dog TP
    det(2, 7, [60, 0, 40, 40], 0.5),    # dog on a crowd region: ignored
    det(2, 7, [0, 50, 20, 20], 0.2),    # dog FP
]  # fmt: skip


def test_sweep_is_hand_counted() -> None:
    r = best_f1_threshold(GT, RESULTS, [1, 2])
    assert r["iou"] == 0.5 and r["iou_type"] == "bbox"
    assert THRESHOLDS[0] == 0.025 and THRESHOLDS[-1] == 0.975 and len(THRESHOLDS) == 39
    curve = dict(zip(r["curve"]["thresholds"], zip(r["curve"]["f1"], r["curve"]["precision"], r["curve"]["recall"])))
    # 4 positives (the crowd dog is not one). t=0.2: TP 4, FP 3 (dup, stray cat, stray dog) -> F1 8/11
    assert curve[0.2] == pytest.approx((8 / 11, 4 / 7, 1.0))
    # t=0.3 drops the stray dog: TP 4, FP 2 -> F1 8/10, the best; t=0.325 loses the low cat: TP 3, FP 2 -> 6/9
    assert curve[0.3] == pytest.approx((0.8, 4 / 6, 1.0))
    assert curve[0.325][0] == pytest.approx(6 / 9)
    # t=0.8: TP 2 (0.9 cat, 0.95 dog), FP 1 (the 0.8 duplicate), FN 2 -> F1 4/7; t=0.975: nothing left -> 0
    assert curve[0.8][0] == pytest.approx(4 / 7) and curve[0.975] == pytest.approx((0.0, 0.0, 0.0))
    assert r["threshold"] == pytest.approx(0.225) and r["f1"] == pytest.approx(0.8)  # lowest of the F1 = 0.8 run
    rows = {row["class"]: row for row in r["per_class"]}
    # cat: 3 positives; any t <= 0.3 keeps TP 3, FP 2 -> 6/8, its best (higher ones lose true positives first)
    assert rows["cat"]["instances"] == 3 and rows["cat"]["f1"] == pytest.approx(0.75)
    assert rows["cat"]["threshold"] == pytest.approx(0.025)
    # dog: 1 positive, its stray at 0.2 and the crowd one ignored: best from 0.225 (TP 1, FP 0)
    assert rows["dog"]["instances"] == 1 and rows["dog"]["f1"] == pytest.approx(1.0)
    assert rows["dog"]["threshold"] == pytest.approx(0.225)


def test_no_ground_truth_and_bad_thresholds() -> None:
    empty = dict(GT, annotations=[])
    r = best_f1_threshold(empty, RESULTS, [1, 2])
    assert r["threshold"] is None and r["f1"] is None
    with pytest.raises(ValueError, match="thresholds"):
        best_f1_threshold(GT, RESULTS, [1, 2], thresholds=[0.0, 0.5])


def test_checkpoint_threshold_reads_only_a_stored_value(tmp_path: Path) -> None:
    torch.save({"model": {}, "confidence_threshold": 0.35}, tmp_path / "a.pth")
    torch.save({"model": {}}, tmp_path / "b.pth")
    torch.save({"model": {}, "confidence_threshold": 3.0}, tmp_path / "c.pth")
    (tmp_path / "d.pth").write_bytes(b"junk")
    assert checkpoint_threshold(tmp_path / "a.pth") == 0.35
    for name in ("b.pth", "c.pth", "d.pth", "missing.pth", "model.xml"):
        assert checkpoint_threshold(tmp_path / name) is None
    # a training run's last.pth holds numpy RNG states: read with the trusted-pickle fallback
    torch.save({"rng": [np.random.get_state()], "confidence_threshold": 0.4}, tmp_path / "last.pth")
    assert checkpoint_threshold(tmp_path / "last.pth") == 0.4


def test_metadata_threshold_reading() -> None:
    from isseg.config import get_config
    from isseg.deploy.contract import isseg_metadata, model_info, read_metadata

    cfg = get_config("security-0002")
    meta = {("model_info", k): v for k, v in model_info(cfg, 0.35).items()}
    meta.update({("isseg", k): v for k, v in isseg_metadata(cfg, "fp32").items()})
    read = read_metadata(lambda s, k: meta.get((s, k)), (768, 1024), "m.xml")
    assert read.confidence_threshold == 0.35 and read.default_threshold == 0.35
    del meta[("model_info", "confidence_threshold")]
    read = read_metadata(lambda s, k: meta.get((s, k)), (768, 1024), "m.xml")
    assert read.confidence_threshold is None and read.default_threshold == 0.5
    meta[("model_info", "confidence_threshold")] = "high"
    with pytest.raises(ValueError, match="m.xml: model_info/confidence_threshold"):
        read_metadata(lambda s, k: meta.get((s, k)), (768, 1024), "m.xml")


@pytest.mark.usefixtures("one_torch_thread")
def test_training_stores_it_export_writes_it_predict_uses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    """A 2-step run with validation: best.pth / last.pth store the validation's best-F1 threshold, the metrics
    row reports it, ``isseg export`` puts it into rt_info, the Predictor and ``isseg predict`` apply it."""
    pytest.importorskip("openvino")
    from isseg.cli.main import main
    from isseg.data.synth import make_synthetic_dataset
    from isseg.deploy.predictor import Predictor
    from isseg.engine.trainer import TrainConfig, train
    from test_train import TINY

    data = make_synthetic_dataset(tmp_path / "d", 4, seed=3, image_size=96, val_fraction=0.25, max_objects=3)
    run = tmp_path / "run"
    cfg = TrainConfig(data=str(data["train_json"]), images=str(data["train_images"]), val_data=str(data["val_json"]),
                      val_images=str(data["val_images"]), output=str(run), overrides=TINY, iterations=2, batch_size=1,
                      lr=0.01, warmup_iters=1, workers=0, progress=False, tensorboard=False)
    result = train(cfg)
    row = [r for r in result.history if "val_segm_AP" in r][-1]
    stored = checkpoint_threshold(run / "best.pth")
    assert stored == row["val_f1_threshold"] == result.last_eval["confidence_threshold"]["threshold"]
    assert checkpoint_threshold(run / "last.pth") == stored  # its weights were the ones validated
    assert 0.025 <= stored <= 0.975

    assert main(["export", str(run / "best.pth"), "--output", str(tmp_path / "x")]) == 0
    assert f"confidence threshold {stored:g} (the checkpoint's best-F1)" in capsys.readouterr().out
    xml = next((tmp_path / "x").glob("*.xml"))
    assert xml.name == "security-0002-circle_rectangle_triangle+2.xml"  # the preset and the classes
    with Predictor(xml) as predictor:
        assert predictor.default_threshold == pytest.approx(stored) and predictor.threshold == 0.0
    with Predictor(run / "best.pth") as predictor:  # a checkpoint on PyTorch: the same threshold
        assert predictor.default_threshold == pytest.approx(stored)
    assert main(["export", str(run / "best.pth"), "--output", str(tmp_path / "y"), "--name", "m",
                 "--confidence-threshold", "0.7", "--format", "onnx"]) == 0
    with Predictor(tmp_path / "y" / "m.onnx") as predictor:
        assert predictor.default_threshold == pytest.approx(0.7)

    from isseg.serve.detections import DetectionsModel
    from isseg.serve.settings import ModelSettings

    served = DetectionsModel("d", xml, ModelSettings())  # isseg serve without --threshold: the model's own
    try:
        assert served.threshold == pytest.approx(stored)
        assert served.metadata()["parameters"]["threshold"] == pytest.approx(stored)
    finally:
        served.close()
    served = DetectionsModel("d", xml, ModelSettings(), threshold=0.9)  # --threshold wins
    try:
        assert served.threshold == 0.9
    finally:
        served.close()

    out = tmp_path / "pred"
    image = next(Path(data["val_images"]).iterdir())
    assert main(["predict", str(image), "--model", str(xml), "--output", str(out), "--no-images", "-q"]) == 0
    assert f">= {stored}" in capsys.readouterr().out
    scores = [d["score"] for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
              for d in r["detections"]]
    assert all(s >= stored for s in scores)
