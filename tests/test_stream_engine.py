"""The streaming engine from Python (results in order, frame processors, what is written) and ``isseg predict`` on
a live RTSP stream served on loopback (records with times, the drawn video)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino")

from isseg.cli.main import main  # noqa: E402
from isseg.deploy.predictor import Predictor  # noqa: E402
from isseg.engine.records import read_records  # noqa: E402
from isseg.sources import Source  # noqa: E402
from isseg.stream import FrameProcessor, StreamEngine, StreamOptions  # noqa: E402
from isseg.testing.streams import RtspServer, rtsp_available  # noqa: E402


def _clip(path: Path, frames: int = 5) -> Path:
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 96))
    for _ in range(frames):
        image = rng.integers(0, 80, (96, 128, 3), dtype=np.uint8)
        cv2.circle(image, (64, 48), 25, (200, 180, 160), -1)
        writer.write(image)
    writer.release()
    return path


class Blackout(FrameProcessor):
    """Hides the whole picture and keeps only the first detection; records what it saw."""

    def __init__(self, seen: list) -> None:
        self.seen, self.closed = seen, False

    def process(self, frame, detections):
        self.seen.append(frame.index)
        return detections.filter(np.arange(len(detections)) < 1)

    def hide(self, image, frame, detections):
        return np.zeros_like(image)

    def close(self):
        self.closed = True


def test_results_in_order_with_processors_and_nothing_written(exported, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip = _clip(tmp_path / "clip.avi")
    seen: list = []
    made: list[Blackout] = []

    def processors(source: Source) -> list[FrameProcessor]:
        made.append(Blackout(seen))
        return made[-1:]

    with Predictor(exported.xml, threshold=0.0, mode="throughput") as predictor:
        engine = StreamEngine(predictor, StreamOptions(output=None), processors=processors)
        results = list(engine.results([str(clip), str(tmp_path / "missing.jpg")]))
        plain = [predictor.predict(f) for f in _frames(clip)]
        drawn = engine.render(results[0])
    assert [r.frame.index for r in results] == [0, 1, 2, 3, 4] and seen == [0, 1, 2, 3, 4]
    assert all(len(r.detections) == min(1, len(p)) for r, p in zip(results, plain))  # the processor's choice
    for r, p in zip(results, plain):  # the engine computes what predict computes
        np.testing.assert_allclose(r.detections.boxes, p.boxes[:1], atol=1e-3)
    assert results[0].record(masks=False)["frame"] == 0 and "timestamp" in results[0].record()
    black = lambda image: (image == 0).all(axis=2).mean()  # noqa: E731 - share of black pixels
    assert black(results[0].frame.image) < 0.05 and black(drawn) > 0.5  # hidden before the detections were drawn
    assert len(made) == 1 and not made[0].closed  # one set per source; still open (results() is a plain iterator)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]  # nothing was written


def _frames(clip: Path) -> list[np.ndarray]:
    cap, out = cv2.VideoCapture(str(clip)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)


@pytest.mark.skipif(rtsp_available() is not None, reason=str(rtsp_available()))
def test_predict_a_live_rtsp_stream(exported, tmp_path, capsys):
    out = tmp_path / "out"
    with RtspServer(fps=15) as server:
        rc = main(["predict", server.url, "--model", str(exported.xml), "-o", str(out), "--limit", "8",
                   "--threshold", "0.05", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "1 input(s) processed, 0 failed" in captured.out and "8 video frame(s)" in captured.out
    records = read_records(out / "results.jsonl")
    assert len(records) == 8 and all(r["file"] == server.url and r["error"] is None for r in records)
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames) and len(set(frames)) == 8
    assert all(isinstance(r["captured"], float) and isinstance(r["timestamp"], float) for r in records)
    assert [r["captured"] for r in records] == sorted(r["captured"] for r in records)
    cap = cv2.VideoCapture(str(out / "live.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()
    table = json.loads((out / "images.json").read_text())
    assert [im["frame"] for im in table["images"]] == frames
