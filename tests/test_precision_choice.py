"""The default inference precision is measured, not assumed: OpenVINO's default (bf16 on CPUs with AVX512-BF16)
ran convolutions at 0.55-0.6x f32 on an Intel Xeon without AMX, so there isseg runs float IRs in f32
(isseg.deploy.rate_probe.faster_precision, remembered per machine in $ISSEG_CACHE/precisions.json)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("openvino")


def _fail(*args, **kwargs):
    raise AssertionError("measured although nothing had to be")


@pytest.fixture
def probe(tmp_path, monkeypatch):
    from isseg.deploy import rate_probe

    monkeypatch.setenv("ISSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rate_probe, "openvino_default", lambda device: "bf16")
    return rate_probe


def test_f32_replaces_the_default_only_where_it_runs_convolutions_faster_by_the_margin(probe, monkeypatch, tmp_path):
    monkeypatch.setattr(probe, "measure_precisions", lambda p, device: {"bf16": 150.0, "f32": 250.0})
    slow_bf16 = probe.faster_precision()
    assert (slow_bf16.precision, slow_bf16.openvino_default, slow_bf16.cached) == ("f32", "bf16", False)
    stored = json.loads((tmp_path / "cache" / "precisions.json").read_text())
    assert stored[slow_bf16.key]["precision"] == "f32" and stored[slow_bf16.key]["rates"]["bf16"] == 150.0
    monkeypatch.setattr(probe, "measure_precisions", _fail)
    again = probe.faster_precision()
    assert again.cached and again.precision == "f32" and again.rates == {"bf16": 150.0, "f32": 250.0}

    for rates, expected in (({"bf16": 440.0, "f32": 220.0}, "bf16"),  # Zen 4, AMX: bf16 2x f32
                            ({"bf16": 200.0, "f32": 230.0}, "bf16")):  # f32 faster, but within the margin
        monkeypatch.setenv("ISSEG_CACHE", str(tmp_path / expected / str(rates["f32"])))
        monkeypatch.setattr(probe, "measure_precisions", lambda p, device, r=rates: r)
        assert probe.faster_precision().precision == expected


def test_nothing_is_measured_where_the_default_is_f32_or_the_device_not_the_cpu(probe, monkeypatch):
    monkeypatch.setattr(probe, "measure_precisions", _fail)
    assert probe.faster_precision("GPU").precision == "bf16"
    monkeypatch.setattr(probe, "openvino_default", lambda device: "f32")
    assert probe.faster_precision().precision == "f32"


def test_a_damaged_cache_is_measured_again_and_rewritten(probe, monkeypatch, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "precisions.json").write_text("{not json")
    monkeypatch.setattr(probe, "measure_precisions", lambda p, device: {"bf16": 150.0, "f32": 250.0})
    choice = probe.faster_precision()
    assert choice.precision == "f32" and not choice.cached
    assert json.loads((tmp_path / "cache" / "precisions.json").read_text())[choice.key]["precision"] == "f32"


def test_the_probe_measures_each_precision_on_this_cpu():
    from isseg.deploy.rate_probe import measure_precisions, openvino_default

    rates = measure_precisions(("f32", openvino_default("CPU")), "CPU", rounds=2, repeats=1, size=(32, 48))
    assert set(rates) == {"f32", openvino_default("CPU")} and min(rates.values()) > 0.5  # GFLOP/s


def test_a_float_ir_runs_in_the_chosen_precision_unless_one_is_asked_for(exported, monkeypatch):
    from isseg.deploy import Predictor, rate_probe
    from isseg.deploy.ov_core import shared_core

    default = shared_core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    monkeypatch.setattr(rate_probe, "faster_precision", lambda device: rate_probe.PrecisionChoice("f32", default, {}))
    assert Predictor(exported.xml).runtime.inference_precision == "f32"
    assert Predictor(exported.xml, precision=default).runtime.inference_precision == default
    if default == "f32":
        return  # a CPU without bf16 (an AVX2-only AMD EPYC): OpenVINO's default is f32, nothing else to choose
    monkeypatch.setattr(rate_probe, "faster_precision", lambda device: rate_probe.PrecisionChoice(default, default, {}))
    assert Predictor(exported.xml).runtime.inference_precision == default


def test_a_probe_that_cannot_run_leaves_openvinos_default(exported, monkeypatch):
    from isseg.deploy import Predictor, rate_probe
    from isseg.deploy.ov_core import shared_core

    def broken(device):
        raise RuntimeError("no convolution kernel for the probe")

    monkeypatch.setattr(rate_probe, "faster_precision", broken)
    default = shared_core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert Predictor(exported.xml).runtime.inference_precision == default
