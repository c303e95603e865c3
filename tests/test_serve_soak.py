"""``benchmarks/serve_soak.py`` runs as documented (a few seconds instead of 30 minutes; the real run's figures
are in docs/serve.md): every valid request answered 200, every invalid one as it must be, memory sampled, the
latency of each valid kind in the first and the last fifth, the server alive; with ``--stream``, a synthetic
stream tracked by the server the whole time (status sampled, MJPEG frames decoded, no error)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from helpers import REPO
from test_serve_helpers import coco_images, small_xml

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def _script():
    path = REPO / "benchmarks" / "serve_soak.py"
    spec = importlib.util.spec_from_file_location("serve_soak", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["serve_soak"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.slow
def test_soak_script_short_run(tmp_path: Path) -> None:
    images = coco_images(3)[0].parent
    out = tmp_path / "soak.json"
    rc = _script().main(["--minutes", "0.4", "--model", str(small_xml()), "--images", str(images), "--count", "3",
                         "--clients", "2", "--sample-s", "1", "--invalid-share", "0.5", "--json", str(out),
                         "--stream"])
    report = json.loads(out.read_text())
    assert rc == 0, report
    assert report["valid_errors"] == 0 and report["invalid_unexpected_answers"] == 0 and report["server_alive_at_end"]
    assert report["valid_requests"] > 0 and report["invalid_requests"] > 0
    assert all(s in ("200", "400", "401", "404", "413") for kind in report["answers"].values() for s in kind)
    rss = report["rss_mib"]
    assert rss["samples"] >= 10 and len(rss["series_s_mib"]) == rss["samples"] and rss["max"] > 100
    assert len(rss["running_peak_at_each_tenth"]) == 10
    stream = report["side_loads"]["stream"]
    assert not stream["errors"] and stream["samples"] >= 2 and stream["frames"] > 0, stream
    assert stream["mjpeg_frames_decoded"] >= 1 and stream["lag_s_last_fifth_p50_p99_max"] is not None, stream


def test_stream_side_load_is_chosen_with_stream() -> None:
    script = _script()
    assert "stream" in script.SIDE_LOADS
    assert script.parse_args(["--stream"]).stream == "synth"  # a scene served by the script itself
    assert script.parse_args(["--stream", "rtsp://127.0.0.1:8554/cam"]).stream == "rtsp://127.0.0.1:8554/cam"
    assert script.parse_args([]).stream is None
    assert script.summarize_stream([(0.0, 1, 0.5, 2)], 1, [])["errors"]  # too few samples is an error
