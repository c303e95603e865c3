"""``isseg serve --ray``: the command itself, run as a user runs it (its own process, its own local Ray, API keys
from the environment), then stopped with SIGTERM; and its option checks, which answer before Ray starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import cv2
import pytest

from test_export_common import coco_image, small_export

pytest.importorskip("openvino")
pytest.importorskip("fastapi")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _isseg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "isseg", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2"], "--replicas only apply with --ray"),
    (["--ray", "--replicas", "0"], "--replicas '0': expected 1 <= N"),
    (["--ray", "--cpus-per-replica", "-1"], "--cpus-per-replica must be >= 0"),
    (["--ray", "--set", "nope.workers=2"], "--set names unknown model(s) nope"),
    (["--ray", "--tls-cert", __file__, "--tls-key", __file__], "not a PEM certificate"),
])
def test_bad_options_fail_before_ray_starts(args, message):
    exported = small_export(11.0)
    t0 = time.perf_counter()
    r = _isseg("serve", str(exported.xml), *args)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert time.perf_counter() - t0 < 60  # no Ray cluster was started for it


def test_missing_model_fails_before_ray_starts(tmp_path):
    r = _isseg("serve", str(tmp_path / "missing.xml"), "--ray")
    assert r.returncode == 1 and "model file not found" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_serve_ray_command_serves_then_stops_on_sigterm():
    import isseg
    from isseg.engine.records import detections_record

    exported = small_export(11.0)
    port = _free_port()
    key = "ray-serve-key-0123456789"
    auth = {"Authorization": f"Bearer {key}"}
    proc = subprocess.Popen([sys.executable, "-m", "isseg", "serve", f"small={exported.xml}", "--ray", "local",
                             "--replicas", "1", "--port", str(port), "--threshold", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ISSEG_API_KEYS": key})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).json() == {"ready": True}:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, "isseg serve --ray did not become ready in 240 s"
            time.sleep(1)
        assert httpx.get(f"{url}/v2/models", timeout=30).status_code == 401  # each replica checks the keys
        names = {m["name"] for m in httpx.get(f"{url}/v2/models", headers=auth, timeout=30).json()["models"]}
        assert names == {"small", "small-detections"}
        ok, jpeg = cv2.imencode(".jpg", coco_image(2))
        image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        expected = detections_record(isseg.Predictor(str(exported.xml), threshold=0.05).predict(image), "")
        r = httpx.post(f"{url}/predict?model=small-detections", content=jpeg.tobytes(),
                       headers={"content-type": "image/jpeg", **auth}, timeout=120)
        assert r.status_code == 200, r.text
        got = r.json()["detections"]
        assert len(got) == len(expected["detections"]) > 0
        assert [d["label"] for d in got] == [d["label"] for d in expected["detections"]]
        for a, b in zip(got, expected["detections"]):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5) and a["mask"] == b["mask"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "isseg serve --ray: stopped" in err
        from isseg.cluster.quiet import is_noise

        assert not [line for line in err.splitlines() if is_noise(line)], err  # Ray's lines of no use: filtered
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
