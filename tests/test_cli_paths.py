"""The command line computes the preset's function: ``isseg predict --weights`` with a torchvision checkpoint gives
torchvision's own detections (its 800/1333 resize, not a letterbox), and ``isseg predict`` and ``isseg evaluate``
give the same detections for the same weights."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from isseg.cli.main import main
from isseg.engine.records import read_records, record_to_detections
from isseg.testing.equality import same_detections

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ASPECT_PHOTOS
from tv_reference import seeded_torchvision, torchvision_predict, tv_label_to_isseg  # noqa: E402

PHOTOS = (ASPECT_PHOTOS[0], ASPECT_PHOTOS[2])  # portrait 0.56 and wide 2.11


def _by_file(path: Path) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in read_records(path)}


@pytest.mark.parametrize("version", [1, 2])
def test_cli_predict_gives_torchvision_detections(version, coco_mini, tmp_path, one_torch_thread):
    tv = seeded_torchvision(version)
    ckpt = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), ckpt)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(coco_mini / "val2017" / name, photos / name)
    out = tmp_path / "out"
    rc = main(["predict", str(photos), "--weights", str(ckpt), "--preset", f"torchvision-v{version}",
               "--threshold", "0", "--no-images", "--output", str(out), "--quiet"])
    assert rc == 0
    records = _by_file(out / "results.jsonl")
    for name in PHOTOS:
        image = cv2.imread(str(photos / name))
        ref = torchvision_predict(tv, image)
        ref["labels"] = tv_label_to_isseg(ref["labels"], 91)
        det = record_to_detections(records[name])
        assert len(ref["scores"]) >= 20 and det.image_size == image.shape[:2]
        eq = same_detections(type("Ref", (), ref), det, mask_paste="torchvision")
        print(f"isseg predict vs torchvision v{version} {name}: {eq}")
        assert eq.ok and eq.matched == len(det), eq


def test_predict_and_evaluate_compute_one_function(coco_mini, tmp_path, one_torch_thread):
    from isseg.deploy.export import at_size
    from isseg.testing.random_weights import realistic_random_model
    from isseg.weights.checkpoint import save_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = at_size(realistic_random_model("security-0002", seed=5), (320, 416))
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[-1] += 2.0
    ckpt = save_checkpoint(tmp_path / "model.pth", model)
    ann = coco_mini / "annotations" / "instances_val2017.json"
    first = [im["file_name"] for im in json.loads(ann.read_text())["images"][:3]]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in first:
        shutil.copy(coco_mini / "val2017" / name, photos / name)
    assert main(["predict", str(photos), "--weights", str(ckpt), "--threshold", "0", "--no-images",
                 "--output", str(tmp_path / "pred"), "--quiet"]) == 0
    assert main(["evaluate", "--data", str(ann), "--images", str(coco_mini / "val2017"), "--weights", str(ckpt),
                 "--max-images", "3", "--output", str(tmp_path / "eval" / "report.json"), "--no-progress"]) == 0
    predicted = _by_file(tmp_path / "pred" / "results.jsonl")
    evaluated = _by_file(tmp_path / "eval" / "report_records.jsonl")
    assert sorted(predicted) == sorted(evaluated) == sorted(first)
    for name in first:
        a, b = record_to_detections(predicted[name]), record_to_detections(evaluated[name])
        assert len(a) >= 5
        assert len(a) == len(b)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.masks, b.masks)
