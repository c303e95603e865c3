"""Tiling on every command: ``isseg predict``, ``track``, ``evaluate`` and ``serve`` take ``--tile*``
(:mod:`isseg.cli.tiling_args`), really tile (the network runs once per planned tile) and give what the Python API
gives with the same ``TilingOptions``; ``--no-tile`` overrides a model's own tiling; bad values are one line.

predict, track and evaluate run in-process on the bright-blob "network" of ``tests/test_tiling.py`` (milliseconds
per tile); serve starts a real server process on the small 320x416 export, as the other serve tests do.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from isseg.cli.main import main
from isseg.engine.records import read_records, record_to_detections
from isseg.tiling.options import TilingOptions
from isseg.tiling.plan import plan_tiles
from test_tiling import CANVAS, BlobRuntime, _frame

TILE = 128  # square tiles of the blob model's 128x160 canvas: each reaches the "network" unscaled
TILING = TilingOptions(tile_size=TILE, overlap=0.25)
TILE_ARGS = ["--tile", str(TILE), "--tile-overlap", "0.25"]


class SureBlobRuntime(BlobRuntime):
    """Blobs with scores 0.4 higher (small blobs ~0.7), high enough to start tracks."""

    def infer(self, x: np.ndarray):
        labels, boxes, masks = super().infer(x)
        found = boxes[:, 4] > 0
        boxes[found, 4] = np.minimum(boxes[found, 4] + 0.4, 0.99)
        return labels, boxes, masks


@pytest.fixture
def blob_model(monkeypatch):
    """Every Predictor opens a fresh :class:`BlobRuntime` (kept in ``.runtimes`` to count its network calls);
    ``.own``: the tiling the "exported model" carries in its metadata (None: none); ``.sure``: scores + 0.4."""
    import isseg.deploy.predictor as predictor_module

    state = SimpleNamespace(runtimes=[], own=None, sure=False)

    def open_runtime(*_args):
        runtime = SureBlobRuntime() if state.sure else BlobRuntime()
        runtime.meta = replace(runtime.meta, tiling=state.own)
        state.runtimes.append(runtime)
        return runtime, None

    monkeypatch.setattr(predictor_module, "open_runtime", open_runtime)
    return state


def scene(h: int = 320, w: int = 600, shift: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Small squares on a grid and one long thin ellipse that several tiles cut (``shift`` moves everything right)."""
    blobs = [("rect", ((20 + shift + 66 * i, 20 + 64 * j), (26 + shift + 66 * i, 25 + 64 * j)))
             for i in range(8) for j in range(5) if j != 2]
    return _frame(h, w, [("ellipse", ((w // 2 + shift, h // 2), (w // 3, 12))), *blobs])


def api(frame: np.ndarray, tiling: TilingOptions | bool, threshold: float = 0.0):
    """What the Python API gives for ``frame`` (a Predictor with its own BlobRuntime)."""
    from isseg.deploy.predictor import Predictor

    return Predictor("blob.xml", tiling=tiling, threshold=threshold).predict(frame)


def tiles_of(frame: np.ndarray, tiling: TilingOptions = TILING) -> int:
    return len(plan_tiles(frame.shape[:2], tiling.tile_hw(CANVAS), tiling.overlap, tiling.full_frame))


def assert_same(record: dict, expected, scores_at_least: float = 0.0) -> None:
    """A written record holds ``expected``'s detections (at or above ``scores_at_least``): boxes, scores, masks."""
    got = record_to_detections(record)
    keep = expected.scores >= scores_at_least
    assert len(got) == int(keep.sum()) > 0
    np.testing.assert_allclose(got.boxes, expected.boxes[keep], atol=1e-3)
    np.testing.assert_allclose(got.scores, expected.scores[keep], atol=1e-6)
    np.testing.assert_array_equal(got.masks, expected.masks[keep])


# ---------------------------------------------------------------------------------------------------- predict
def test_predict_tiles_as_the_python_api(blob_model, tmp_path, capsys):
    frame, _ = scene()
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "frame.png"), "--model", "blob.xml", "-o", str(out), "--threshold", "0.1",
                 "--mode", "latency", "--quiet", "--no-images", *TILE_ARGS])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "tiled inference (--tile): 128x128 tiles, overlap >= 0.25, + the whole frame, merge nmm" in err
    assert blob_model.runtimes[0].calls == tiles_of(frame) > 10  # the network ran once per tile
    (record,) = read_records(out / "results.jsonl")
    tiled = api(frame, TILING)
    assert_same(record, tiled, 0.1)
    untiled = api(frame, False)
    assert len(untiled) != len(tiled) or not np.array_equal(untiled.masks, tiled.masks)  # tiling changed the result


def test_no_tile_overrides_the_models_own_tiling(blob_model, tmp_path, capsys):
    """A model that carries tiling (an IR exported with --tile) tiles by default; --no-tile runs whole frames;
    --tile replaces its options."""
    blob_model.own = TilingOptions(tile_size=160, overlap=0.1, merge="nms", match_metric="iou")
    frame, _ = scene()
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    common = ["--model", "blob.xml", "--threshold", "0.1", "--mode", "latency", "--quiet", "--no-images"]
    canvas = TilingOptions(tile_size=CANVAS, overlap=0.25)  # --tile HxW: tiles of the canvas' shape
    runs = {"own": [], "no": ["--no-tile"], "cli": ["--tile", "128x160", "--tile-overlap", "0.25"]}
    for k, (name, extra) in enumerate(runs.items()):
        assert main(["predict", str(tmp_path / "frame.png"), "-o", str(tmp_path / name), *common, *extra]) == 0
        runs[name] = (blob_model.runtimes[k].calls, read_records(tmp_path / name / "results.jsonl")[0],
                      capsys.readouterr().err)
    assert runs["own"][0] == tiles_of(frame, blob_model.own) and "tiled inference (the model's own)" in runs["own"][2]
    assert runs["no"][0] == 1 and "tiled" not in runs["no"][2]
    assert runs["cli"][0] == tiles_of(frame, canvas) and "tiled inference (--tile): 128x160 tiles" in runs["cli"][2]
    assert_same(runs["own"][1], api(frame, blob_model.own), 0.1)
    assert_same(runs["no"][1], api(frame, False), 0.1)
    assert_same(runs["cli"][1], api(frame, canvas), 0.1)


# ------------------------------------------------------------------------------------------------------ track
def test_track_tiles_every_frame(blob_model, tmp_path, capsys):
    blob_model.sure = True
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (600, 320))
    for k in range(3):
        writer.write(scene(shift=k)[0])  # 1 px a frame: the 6 px squares overlap
    writer.release()
    capture = cv2.VideoCapture(str(video))  # the frames as the command decodes them
    frames = [capture.read()[1] for _ in range(3)]
    capture.release()
    out = tmp_path / "out"
    code = main(["track", str(video), "--model", "blob.xml", "-o", str(out), "--mode", "latency", "--quiet",
                 "--no-images", *TILE_ARGS])
    assert code == 0, capsys.readouterr().err
    assert blob_model.runtimes[0].calls == sum(tiles_of(f) for f in frames)
    records = read_records(out / "results.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2]
    for record, frame in zip(records[1:], frames[1:]):  # tracks are confirmed on their second frame
        expected = api(frame, TILING, threshold=0.5)  # the tracker keeps each detection's box, score and mask
        assert all(d["track_id"] >= 1 for d in record["detections"])
        assert_same(record, expected)


# --------------------------------------------------------------------------------------------------- evaluate
def _ground_truth(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    from pycocotools import mask as mask_utils

    frame, truth = scene(480, 900)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "frame.png"), frame)
    annotations = []
    for k, mask in enumerate(truth):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        ys, xs = np.nonzero(mask)
        annotations.append({"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": int(mask.sum()),
                            "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1, "file_name": "frame.png", "height": 480, "width": 900}],
                              "annotations": annotations, "categories": [{"id": 1, "name": "blob"}]}))
    return gt, images, frame


def test_evaluate_tiles_and_scores_the_tiled_detections(blob_model, tmp_path, capsys):
    gt, images, frame = _ground_truth(tmp_path)
    reports = {}
    for name, extra in (("tiled", TILE_ARGS), ("untiled", [])):
        report = tmp_path / f"{name}.json"
        code = main(["evaluate", "--data", str(gt), "--images", str(images), "--weights", "blob.xml",
                     "--output", str(report), "--no-analysis", "--no-progress", *extra])
        assert code == 0, capsys.readouterr().err
        reports[name] = json.loads(report.read_text())
    assert [r.calls for r in blob_model.runtimes] == [tiles_of(frame), 1]
    (record,) = read_records(tmp_path / "tiled_records.jsonl")
    assert_same(record, api(frame, TILING))
    # the blobs are 6x5 px: the whole 480x900 frame shrinks them to ~1 px, tiles keep them at full size
    assert reports["tiled"]["segm"]["AP"] > reports["untiled"]["segm"]["AP"] + 0.2, reports


# ------------------------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize("command", [
    ["predict", "in.jpg", "--model", "missing.xml"], ["track", "in.mp4", "--model", "missing.xml"],
    ["evaluate", "--data", "missing.json", "--weights", "missing.xml"], ["serve", "missing.xml"],
])  # fmt: skip
@pytest.mark.parametrize("tile_args, message", [
    (["--tile", "16"], "--tile: expected a value >= 32, got 16"),
    (["--tile", "512x"], "--tile: expected SIZE or HEIGHTxWIDTH in pixels"),
    (["--tile", "512", "--tile-overlap", "1"], r"--tile-overlap: expected a fraction in \[0, 1\), got 1.0"),
    (["--tile-merge", "nms"], "--tile-merge: needs --tile SIZE"),
    (["--no-tile", "--tile", "512"], "--no-tile: cannot be combined with --tile; pick one"),
    (["--tile", "512", "--tile-max-detections", "0"], "--tile-max-detections: expected a value >= 1, got 0"),
])  # fmt: skip
def test_bad_tile_values_are_one_line_before_any_model_loads(command, tile_args, message, tmp_path, monkeypatch,
                                                             capsys):
    import re

    import isseg.deploy.predictor as predictor_module

    monkeypatch.chdir(tmp_path)  # nothing there: no model, no input; the options fail first
    monkeypatch.setattr(predictor_module, "open_runtime", lambda *a: pytest.fail("a model was loaded"))
    assert main([*command, *tile_args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"isseg {command[0]}: error: ") and re.search(message, err[0]), err


def test_tile_refused_where_it_cannot_apply(tmp_path, capsys):
    assert main(["export", "missing.pth", "-o", str(tmp_path / "o"), "--tile", "768x1024"]) == 1
    assert "Model API's tiler (which reads the IR) takes square tiles" in capsys.readouterr().err
    assert main(["predict", "in/", "--model", "m.xml", "--ray", "--tile", "512", "-o", str(tmp_path / "o")]) == 1
    assert "--tile / --no-tile with --ray" in capsys.readouterr().err
    assert main(["evaluate", "--data", "gt.json", "--results", "r.jsonl", "--no-tile"]) == 1
    assert "--results scores records computed elsewhere" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ serve
def test_serve_with_tile_answers_with_tiled_detections(tmp_path):
    """A real server on the small 320x416 IR with --tile 320: /predict answers what a local Predictor with the
    same TilingOptions gives (threshold 0.05), and the model's metadata says how it tiles."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from isseg.deploy.predictor import Predictor
    from test_export_common import coco_image
    from test_serve_helpers import PRECISION, small_xml, start_server, stop

    xml = small_xml()
    image = cv2.resize(coco_image(1), (832, 640))[200:520, :560]  # 2 tiles of 320 + the whole frame: 3 runs
    data = cv2.imencode(".png", image)[1].tobytes()
    tiling = TilingOptions(tile_size=320, overlap=0.2)
    proc, port = start_server([f"seg={xml}", "--no-contract", "--precision", PRECISION, "--tile", "320",
                               "--tile-overlap", "0.2", "--log-level", "warning"], tmp_path / "server.log")
    try:
        url = f"http://127.0.0.1:{port}"
        meta = httpx.get(f"{url}/v2/models/seg").json()
        assert TilingOptions.from_json(meta["parameters"]["tiling"]) == tiling
        answer = httpx.post(f"{url}/predict", params={"threshold": 0.05}, files={"image": ("f.png", data)},
                            timeout=300)
        assert answer.status_code == 200, answer.text
    finally:
        stop(proc)
    assert "tiled: 320x320 tiles, overlap >= 0.2" in (tmp_path / "server.log").read_text()
    with Predictor(xml, precision=PRECISION, threshold=0.05, tiling=tiling) as local:
        expected = local.predict(image)
    assert_same(answer.json(), expected)
    with Predictor(xml, precision=PRECISION, threshold=0.05, tiling=False) as whole:
        assert len(whole.predict(image)) < len(expected)  # the seeded weights find these objects in tiles only
