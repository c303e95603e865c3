"""``--mode auto`` decides by measurement: the probe (isseg.deploy.mode_probe), its cache, and choose_mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino")


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)


def test_choose_mode_asks_the_probe_only_where_both_modes_apply():
    from isseg.sources import Source
    from isseg.stream import choose_mode

    asked = []

    def probe() -> str:
        asked.append(1)
        return "latency"

    image, video = Source("image", "a.jpg"), Source("video", "v.mp4")
    assert choose_mode("auto", "openvino", [image, Source("image", "b.jpg")], probe) == "latency"
    assert choose_mode("auto", "openvino", [video], probe) == "latency"
    assert len(asked) == 2
    assert choose_mode("auto", "openvino", [image], probe) == "latency"  # one image: nothing to overlap
    assert choose_mode("auto", "openvino", [video, Source("camera", "0")], probe) == "latency"
    assert choose_mode("auto", "onnx", [video], probe) == "latency"
    assert choose_mode("throughput", "openvino", [video], probe) == "throughput"
    assert len(asked) == 2
    assert choose_mode("auto", "openvino", [video]) == "throughput"  # no probe: the rule


def test_faster_mode_measures_both_modes_keeps_the_faster_and_remembers_it(exported, tmp_path, monkeypatch):
    from isseg.deploy import mode_probe

    monkeypatch.setenv("ISSEG_CACHE", str(tmp_path / "cache"))
    first = mode_probe.faster_mode(exported.xml, _image(), rounds=1)
    assert set(first.rates) == {"latency", "throughput"} and all(r > 0 for r in first.rates.values())
    assert first.mode == max(first.rates, key=first.rates.get) and not first.cached
    stored = json.loads((tmp_path / "cache" / "modes.json").read_text())
    assert stored[first.key]["mode"] == first.mode

    def fail(*args, **kwargs):
        raise AssertionError("measured again although the answer was cached")

    monkeypatch.setattr(mode_probe, "measure_modes", fail)
    again = mode_probe.faster_mode(exported.xml, _image(1), rounds=1)
    assert again.cached and again.mode == first.mode and again.rates == pytest.approx(first.rates)

    # another precision is another question; a damaged cache file is measured again and rewritten
    calls = []
    monkeypatch.setattr(mode_probe, "measure_modes", lambda *a, **k: calls.append(a) or {"latency": 2.0,
                                                                                       "throughput": 1.0})
    other = mode_probe.faster_mode(exported.xml, _image(), precision="f32", rounds=1)
    assert other.mode == "latency" and not other.cached and other.key != first.key and len(calls) == 1
    (tmp_path / "cache" / "modes.json").write_text("{not json")
    assert mode_probe.faster_mode(exported.xml, _image(), rounds=1).mode == "latency" and len(calls) == 2
    assert first.key in json.loads((tmp_path / "cache" / "modes.json").read_text())


def test_predict_auto_probes_an_ir_once_and_says_what_it_chose(exported, tmp_path, monkeypatch, capsys):
    import cv2

    from isseg.cli.main import main
    from isseg.deploy import mode_probe

    monkeypatch.setenv("ISSEG_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), _image(i))
    common = [str(folder), "--model", str(exported.xml), "--no-images"]  # (--quiet hides the --mode auto line)
    assert main(["predict", *common, "-o", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "--mode auto: " in err and "measured:" in err
    chosen = json.loads((tmp_path / "cache" / "modes.json").read_text())
    assert len(chosen) == 1
    monkeypatch.setattr(mode_probe, "measure_modes", lambda *a, **k: pytest.fail("probed twice"))
    assert main(["predict", *common, "-o", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert f"--mode auto: {next(iter(chosen.values()))['mode']} (measured before" in err
    assert main(["predict", *common, "-o", str(tmp_path / "c"), "--mode", "latency"]) == 0
    assert "--mode auto" not in capsys.readouterr().err
    assert main(["predict", *common, "-o", str(tmp_path / "d"), "--quiet"]) == 0  # measured before, not said
    assert "--mode auto" not in capsys.readouterr().err
