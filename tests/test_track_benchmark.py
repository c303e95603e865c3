"""benchmarks/track_quality.py runs as documented, on tiny settings, without the independent tools (the
``trackers`` package is only needed for its metrics and its trackers; the real run is in docs/tracking.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from isseg.data.synth_video import VideoSpec


def load_script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "track_quality.py"
    spec = importlib.util.spec_from_file_location("track_quality", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_a_sequence_with_isseg_and_the_omz_style_tracker(tmp_path):
    script = load_script()
    spec = VideoSpec(frames=40, walkers=4, crossing_pairs=1, dwellers=1)
    (tmp_path / "gt").mkdir()
    counts = script.run_sequence(2, spec, tmp_path / "gt", tmp_path, ("isseg", "omz-greedy"))
    assert set(counts) == {"truth", "isseg", "omz-greedy"}
    gt = np.loadtxt(tmp_path / "gt" / "seq2.txt", delimiter=",")
    ours = np.loadtxt(tmp_path / "isseg" / "seq2.txt", delimiter=",")
    assert (gt[:, 7] == 1).all() and gt[:, 0].max() <= 40 and len(ours) > 0.5 * len(gt)
    err, total, zone_err, visits = script.count_errors(counts["truth"], counts["isseg"])
    assert 0 <= err <= total + 10 and visits == sum(counts["truth"]["zone"].values())
    assert script.count_errors(counts["truth"], counts["truth"])[0::2] == (0, 0)


def test_speed_reports_the_three_output_modes():
    result = load_script().speed(5, frames=18, size=(120, 160))
    assert set(result) == {"view", "copy", "reuse"} and all(v > 0 for v in result.values())


def test_unknown_tracker_names_are_refused(capsys):
    with pytest.raises(SystemExit):
        load_script().main(["--trackers", "isseg,sort"])
    assert "unknown sort" in capsys.readouterr().err


def test_class_flips_out_of_range_are_refused(capsys):
    with pytest.raises(SystemExit):
        load_script().main(["--trackers", "isseg", "--class-flips", "1.5"])
    assert "--class-flips: expected a probability in [0, 1], got 1.5" in capsys.readouterr().err
