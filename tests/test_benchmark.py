"""The deployment benchmark: the compute-ceiling probe, the bounds it gives, and one small end-to-end run."""

from __future__ import annotations

import math
import statistics
import time

import pytest

from isseg.deploy import rate_probe
from isseg.testing import bench_measure, bench_report, benchmark, ceiling


def test_int8_probe_runs_an_integer_convolution() -> None:
    # the int8 bound is only meaningful if the probe really is quantized like an NNCF model
    assert "i8" in rate_probe.probe_exec_type("int8").lower()
    assert "i8" not in rate_probe.probe_exec_type("fp32").lower()


def test_probe_rate_is_a_positive_rate() -> None:
    rate = rate_probe.probe_rate("fp32", threads=1, channels=64, size=(32, 48), repeats=2)
    assert math.isfinite(rate) and rate > 0.5  # GFLOP/s; any CPU that runs the tests does far more


def test_rate_sampler_keeps_one_rate_per_sample_and_gives_their_median() -> None:
    sampler = ceiling.RateSampler(["fp32", "int8"], repeats=1, channels=64, size=(32, 48))
    assert sampler.samples == {"fp32": [], "int8": []}
    for _ in range(3):
        sampler.sample()
    assert all(len(v) == 3 and min(v) > 0.5 for v in sampler.samples.values())
    assert sampler.rate("int8") == statistics.median(sampler.samples["int8"])


def test_probe_rejects_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        rate_probe.probe_rate("int4")


def test_bounds_use_the_detections_each_configuration_had(monkeypatch: pytest.MonkeyPatch) -> None:
    from isseg.model.complexity import count_flops
    from isseg.model.mask_rcnn import build_model

    rates = {"fp32": 100.0, "int8": 400.0}
    monkeypatch.setattr(rate_probe, "probe_rate", lambda p: rates[p])
    model = build_model("security-0002").eval()
    cfg = benchmark.BenchConfig(input_size=(128, 160), precisions=("fp32", "int8"))
    results = [bench_measure.Result("a", precision="fp32", detections=10.0), bench_measure.Result("b", precision="int8",
                                                                                        detections=100.0)]
    compute = benchmark.compute_ceiling(model, results, cfg, log=lambda _: None)
    flops = count_flops(model, 128, 160)
    per_mask = flops["mask_head"] / 100
    assert results[0].bound_ms == pytest.approx(1000 * (flops["total"] - 90 * per_mask) / 100.0)
    assert results[1].bound_ms == pytest.approx(1000 * flops["total"] / 400.0)
    assert compute["rates"]["int8"]["bound_ms"] == pytest.approx(1000 * flops["total"] / 400.0)


def test_small_end_to_end_run_reports_ratios_and_bounds(coco_mini, tmp_path) -> None:  # noqa: ANN001
    cfg = benchmark.BenchConfig(images=1, backends=("openvino",), precisions=(), input_size=(192, 256),
                                throughput=False, workdir=str(tmp_path), detections=())  # fp32 runs anyway
    report = benchmark.run_benchmark(cfg, log=lambda _: None)
    names = [r["name"] for r in report["results"]]
    assert names[0] == "torchvision eager fp32" and "openvino fp32" in names
    ov32 = next(r for r in report["results"] if r["name"] == "openvino fp32")
    assert ov32["agreement"]["matched_all"] == 1.0  # the reference of the agreement columns is itself
    assert ov32["precision"] == "fp32" and ov32["bound_ms"] > 0
    assert report["baseline_e2e_ms"] > 0 and report["compute"]["max_speedup"]["fp32"] > 0
    samples = report["compute"]["rates"]["fp32"]["samples"]  # the probe, between the measured images
    assert len(samples) >= 1 and report["compute"]["rates"]["fp32"]["gflops_per_s"] == statistics.median(samples)
    # every bound comes from samples taken between the images, fp32's too although it was not asked for
    assert all(row["samples"] for row in report["compute"]["rates"].values())
    text = bench_report.format_report(report)
    assert "compute ceiling" in text and "| openvino fp32 |" in text and "samples taken between" in text



def test_throughput_mode_and_detection_counts_are_measured(coco_mini, tmp_path) -> None:  # noqa: ANN001
    cfg = benchmark.BenchConfig(images=2, backends=("openvino",), precisions=("fp32",), input_size=(192, 256),
                                torchvision=False, ceiling=False, workdir=str(tmp_path), detections=(0, 7, 100))
    report = benchmark.run_benchmark(cfg, log=lambda _: None)
    ov32 = next(r for r in report["results"] if r["name"] == "openvino fp32")
    assert ov32["latency_ips"] > 0 and ov32["throughput"] > 0 and "requests" in ov32["throughput_mode"]
    assert "per stream" in ov32["throughput_mode"] and ov32["latency_mode"].startswith("1 request, ")
    assert set(ov32["auto_rates"]) == {"latency", "throughput"}  # --mode auto's probe, run on each configuration
    assert ov32["auto_mode"] == max(ov32["auto_rates"], key=ov32["auto_rates"].get)
    assert ov32["paired_latency"] > 0  # latency mode measured again in rounds alternated with throughput mode
    assert ov32["mode_noise"] >= 0  # how far a mode's own rounds moved
    counts = {r["name"]: r["detections"] for r in report["detections_sweep"]}
    assert len(counts) == 3
    zero = next(v for k, v in counts.items() if k.endswith(", 0 detections"))
    seven = next(v for k, v in counts.items() if k.endswith(", 7 detections"))
    full = next(v for k, v in counts.items() if k.endswith(", 100 detections"))
    assert zero == 0 and 0 < seven <= 7  # the twins return what they were made to
    default = next(r for r in report["results"] if r["name"].startswith("openvino default"))
    assert full > 7 and full == default["detections"]  # the model itself, not a twin's export under its name
    text = bench_report.format_report(report)
    assert "by number of detections" in text and f"{ov32['auto_mode']} (probe " in text
    assert f"latency mode {ov32['paired_latency']:.2f} in the same rounds" in text


class _FakeMode:
    """A predictor in one mode that takes ``seconds`` per image and logs what it ran."""

    def __init__(self, mode: str, seconds: float, log: list[str]) -> None:
        self.mode, self.seconds, self.log = mode, seconds, log
        self.runtime = type("Runtime", (), {"num_requests": 2 if mode == "throughput" else 1})()
        self.closed = False

    def predict(self, image: object) -> object:
        self.log.append(self.mode)
        time.sleep(self.seconds)
        return image

    def predict_stream(self, images: object) -> object:
        for image in images:
            yield self.predict(image)

    def close(self) -> None:
        self.closed = True


def test_mode_rounds_alternate_read_a_round_of_frames_each_and_measure_their_spread() -> None:
    from isseg.deploy.mode_probe import ModeRounds, measure_rounds

    log: list[str] = []
    made: dict[str, _FakeMode] = {}
    asked: list[int] = []

    def make(mode: str) -> _FakeMode:
        made[mode] = _FakeMode(mode, 0.02 if mode == "latency" else 0.01, log)
        return made[mode]

    def frames(n: int) -> object:
        asked.append(n)
        return iter([object()] * 3)

    rounds = measure_rounds(make, frames, rounds=3)
    assert all(p.closed for p in made.values())
    assert set(asked) == {2}  # told the requests throughput mode keeps in flight
    runs = log[3:]  # after the warm-up (1 latency, then one per throughput request)
    order = [runs[i] for i in range(0, len(runs), 3)]
    assert order == ["latency", "throughput", "throughput", "latency", "latency", "throughput"]
    assert [len(v) for v in rounds.rates.values()] == [3, 3]
    medians = rounds.medians()
    assert 1.4 < medians["throughput"] / medians["latency"] < 2.6  # 0.01 s against 0.02 s per image
    assert 0 <= rounds.noise() < 0.5

    assert ModeRounds({"latency": [1.0, 1.2, 0.9], "throughput": [2.0, 2.0, 2.0]}, {}).noise() == pytest.approx(0.3)
    assert ModeRounds({"latency": [1.0], "throughput": [2.0]}, {}).noise() == 0.0


def test_report_says_whether_auto_lost_beyond_the_modes_noise() -> None:
    row = {"throughput": 1.0, "paired_latency": 1.1, "auto_mode": "throughput", "mode_noise": 0.2}
    assert "within the noise" in bench_report.auto_loss(row) and "by 9%" in bench_report.auto_loss(row)
    assert "beyond the noise: a mode's rounds moved 5%" in bench_report.auto_loss(row | {"mode_noise": 0.05})
    assert "noise" not in bench_report.auto_loss(row | {"mode_noise": 0.0})  # a report without the spread
