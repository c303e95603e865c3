"""``isseg track`` on the streaming engine: tracked records, events, the summary, privacy on every written frame
(checked against an independent run of the model), and one clear line for a bad zones file or a dead webhook."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_export_common import small_export

pytest.importorskip("openvino")

from isseg.cli.main import main  # noqa: E402
from isseg.deploy.predictor import Predictor  # noqa: E402
from isseg.engine.records import read_records  # noqa: E402
from isseg.testing.streams import free_port  # noqa: E402

# The random-weight model's detections score 0.4-0.8 and start tracks or not by a few hundredths: in f32, not the
# CPU's default precision (bf16 where the CPU has it, rounded differently by each kind: an AMX Xeon tracked nothing
# on these frames in bf16), the tests see the same detections on every CPU.
F32 = ("--precision", "f32")


@pytest.fixture(scope="module")
def exported():
    return small_export(0.0)  # the random-weight model finds many things


def _video(path: Path, frames: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for i in range(frames):
        image = np.random.default_rng(0).integers(0, 90, (120, 160, 3), dtype=np.uint8)
        cv2.circle(image, (40 + 12 * i, 60), 22, (210, 190, 170), -1)
        cv2.rectangle(image, (100, 20 + 5 * i), (140, 70 + 5 * i), (60, 200, 90), -1)
        writer.write(image)
    writer.release()
    return path


def _frames(path: Path) -> list[np.ndarray]:
    cap, out = cv2.VideoCapture(str(path)), []
    while (got := cap.read())[0]:
        out.append(got[1])
    return out


def test_track_writes_tracks_events_summary_and_hides_every_private_mask(exported, tmp_path, monkeypatch, capsys):
    import isseg.deploy.visualize as visualize

    video = _video(tmp_path / "clip.avi")
    # an independent run: what privacy must hide
    with Predictor(exported.xml, threshold=0.1, precision="f32") as reference:
        plain = [reference.predict(f) for f in _frames(video)]
    names, counts = np.unique([n for det in plain for n in det.names], return_counts=True)
    private = str(names[np.argmax(counts)])  # the class the random-weight model finds most
    seen: list[np.ndarray] = []  # every picture the engine draws on: after privacy, before the overlays
    monkeypatch.setattr(visualize, "draw_detections", lambda image, det, **kw: seen.append(image.copy()) or image)
    zones = tmp_path / "zones.yaml"
    zones.write_text("lines:\n  - name: mid\n    points: [[80, 0], [80, 120]]\nzones:\n"
                     "  - name: left\n    polygon: [[0, 0], [80, 0], [80, 120], [0, 120]]\n")
    out = tmp_path / "out"
    rc = main(["track", str(video), "--model", str(exported.xml), "-o", str(out), "--zones", str(zones),
               "--privacy", private, "--privacy-mode", "fill", "--quiet", *F32])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "1 input(s) processed, 0 failed" in captured.out and "mid in" in captured.out
    records = read_records(out / "results.jsonl")
    assert [r["frame"] for r in records] == list(range(6))
    assert all("track_id" in d and d["track_id"] >= 1 for r in records for d in r["detections"])
    assert any(r["detections"] for r in records)  # something was tracked
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary[str(video)]) == {"lines", "zones"} and (out / "events.jsonl").is_file()
    # privacy: every mask of the class of every detection >= 0.1 (tracked or not) is filled in every drawn frame
    assert len(seen) == len(plain) == 6
    hidden = 0
    for image, det in zip(seen, plain):
        for mask, name in zip(det.masks, det.names):
            if name == private:
                hidden += 1
                assert (image[mask] == 0).all(), f"pixels of a {private} were written unhidden"
    assert hidden >= 6  # the check above checked something


def test_bad_zones_file_and_dead_webhook_are_one_line(exported, tmp_path, capsys):
    video = _video(tmp_path / "clip.avi")
    bad = tmp_path / "zones.yaml"
    bad.write_text("lines:\n  - name: door\n    points: [[1, 2]]\n")
    out = tmp_path / "out"
    rc = main(["track", str(video), "--model", str(exported.xml), "-o", str(out), "--zones", str(bad), "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1 and len(err) == 1 and "zones.yaml: lines[0].points" in err[0] and not out.exists()
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    zones = tmp_path / "ok.yaml"
    zones.write_text("zones:\n  - name: all\n    polygon: [[0, 0], [160, 0], [160, 120], [0, 120]]\n")
    rc = main(["track", str(video), "--model", str(exported.xml), "-o", str(out), "--zones", str(zones),
               "--events", dead, "--quiet", *F32])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "event(s) to" in captured.out  # there were events to deliver
    warnings = [line for line in captured.err.splitlines() if dead in line]
    assert 1 <= len(warnings) <= 2 and all(w.startswith("isseg track: ") for w in warnings), captured.err
    assert "Traceback" not in captured.err
