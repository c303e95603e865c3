"""``isseg.cluster.serving``: ``isseg serve``'s app on Ray Serve replicas (a local Ray started by this module)."""

from __future__ import annotations

import socket

import cv2
import pytest

from test_export_common import coco_image, small_export

pytest.importorskip("openvino")
pytest.importorskip("fastapi")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from isseg.cluster.serving import parse_replicas, serve_ray  # noqa: E402
from isseg.serve.settings import ServeSettings  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """Two replicas of the small export behind Ray Serve's proxy."""
    exported = small_export(11.0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = serve_ray([f"small={exported.xml}"], ServeSettings(threshold=0.05), port=_free_port(), replicas="2")
        yield url, exported
    finally:
        serve.shutdown()
        ray.shutdown()


def test_replicas_serve_the_same_endpoints(served):
    import isseg
    from isseg.engine.records import detections_record

    url, exported = served
    status = serve.status().applications["isseg"]
    deployment = status.deployments["isseg-serve"]
    assert status.status == "RUNNING" and deployment.replica_states.get("RUNNING") == 2
    assert httpx.get(f"{url}/v2/health/ready", timeout=30).json() == {"ready": True}
    names = {m["name"] for m in httpx.get(f"{url}/v2/models", timeout=30).json()["models"]}
    assert names == {"small", "small-detections"}
    ok, jpeg = cv2.imencode(".jpg", coco_image(1))
    image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    expected = detections_record(isseg.Predictor(str(exported.xml), threshold=0.05).predict(image), "")
    for _ in range(3):  # requests spread over the replicas; each answers the local Predictor's detections
        r = httpx.post(f"{url}/predict?model=small-detections", content=jpeg.tobytes(),
                       headers={"content-type": "image/jpeg"}, timeout=120)
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["height"], got["width"]) == (expected["height"], expected["width"])
        assert [d["label"] for d in got["detections"]] == [d["label"] for d in expected["detections"]]
        for a, b in zip(got["detections"], expected["detections"]):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5) and a["mask"] == b["mask"]
    bad = httpx.post(f"{url}/predict?model=small-detections", content=b"not an image",
                     headers={"content-type": "image/jpeg"}, timeout=60)
    assert bad.status_code in (400, 415, 422) and "error" in bad.json()


def test_replica_bounds():
    assert parse_replicas("3") == {"num_replicas": 3}
    auto = parse_replicas("1:4")["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["initial_replicas"]) == (1, 4, 1)
    for bad in ("0", "4:2", "x", "1:"):
        with pytest.raises(ValueError, match="--replicas"):
            parse_replicas(bad)
