"""``isseg predict``: folders with a bad file, videos, JSON + drawn outputs, one-line errors."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from test_export_common import coco_image

pytest.importorskip("openvino")

from isseg.cli.main import main  # noqa: E402


def test_folder_with_corrupt_file(exported, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "000000000139.jpg"), coco_image(1))
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(coco_image(0), cv2.COLOR_BGR2GRAY))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    (folder / "notes.txt").write_text("not an image, ignored in folders")
    out = tmp_path / "out"
    rc = main(["predict", str(folder), "--model", str(exported.xml), "--output", str(out), "--threshold", "0.05",
               "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1  # one input failed, the others were processed
    errors = [line for line in captured.err.splitlines() if "broken.jpg" in line]
    assert len(errors) == 1 and "not an image" in errors[0]
    assert "2 input(s) processed, 1 failed" in captured.out
    assert (out / "000000000139.jpg").is_file() and (out / "gray.png").is_file()
    drawn = cv2.imread(str(out / "000000000139.jpg"))
    assert drawn.shape == coco_image(1).shape
    results = json.loads((out / "results.json").read_text())
    table = json.loads((out / "images.json").read_text())
    ids = {im["id"] for im in table["images"]}
    assert 139 in ids and len(ids) == 2
    assert results and {r["image_id"] for r in results} <= ids
    r = results[0]
    assert set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert r["score"] >= 0.05 and len(r["bbox"]) == 4 and isinstance(r["segmentation"]["counts"], str)
    assert table["categories"][0] == {"id": 1, "name": "person"}


def test_video_glob_and_class_filter(exported, tmp_path, capsys):
    frame = cv2.resize(coco_image(1), (320, 240))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 240))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    shutil.copy(video, tmp_path / "copy.avi")
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "*.avi"), "--model", str(exported.onnx), "--output", str(out),
               "--limit", "2", "--threshold", "0.05", "--classes", "person,7", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "clip.mp4").is_file() and (out / "copy.mp4").is_file()
    table = json.loads((out / "images.json").read_text())
    assert [im.get("frame") for im in table["images"]] == [0, 1, 0, 1]
    results = json.loads((out / "results.json").read_text())
    assert all(r["category_id"] in (1, 8) for r in results)  # person (1) and truck (index 7 -> id 8)


def test_missing_model_is_one_line(tmp_path, capsys):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    rc = main(["predict", str(image), "--model", str(tmp_path / "nope.xml"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "not found" in err[0] and "nope.xml" in err[0]
    rc = main(["predict", str(tmp_path / "missing.jpg"), "--model", str(tmp_path / "nope.xml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "missing.jpg" in err[0]
