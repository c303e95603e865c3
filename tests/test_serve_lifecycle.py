"""A failing inference is a 500 for that request only (the app factory with a model that crashes, under uvicorn in
a thread); SIGTERM drains the requests in flight and the server exits cleanly (a real ``isseg serve`` process)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_serve_helpers import coco_images, free_port, small_xml, start_server, stop

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")


def _crashing_model() -> Any:
    from isseg.serve.admission import ServedModel
    from isseg.serve.settings import ModelSettings

    class Crashy(ServedModel):
        """Doubles its input; a first element of 13 raises inside the worker thread, like a broken inference."""

        kind = "contract"

        def metadata(self) -> dict[str, Any]:
            return {"name": self.name, "versions": [self.version], "platform": "test",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
                    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]}

        async def infer(self, request: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            import asyncio

            x = request.inputs["x"].data

            def work() -> np.ndarray:
                if x.size and x.reshape(-1)[0] == 13:
                    raise RuntimeError("kernel exploded")
                return (x * 2).astype(np.float32)

            loop = asyncio.get_running_loop()
            y = await self.run(lambda: loop.run_in_executor(None, work))
            return {"y": y}, {}

    return Crashy("crashy", ModelSettings(workers=1, max_queue=4, timeout_s=10))


def test_one_crash_is_a_500_for_that_request_only() -> None:
    from isseg.serve import ServeSettings, create_app

    app = create_app([_crashing_model()], ServeSettings())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)

        def send(first: float) -> httpx.Response:
            body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [first, 1.0]}]}
            return httpx.post(f"{url}/v2/models/crashy/infer", json=body, timeout=10)

        ok = send(2)
        assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [4.0, 2.0]
        bad = send(13)
        assert bad.status_code == 500
        assert bad.json() == {"error": "inference failed: RuntimeError: kernel exploded"}
        assert send(3).status_code == 200  # the server and the model go on
        metrics = httpx.get(f"{url}/metrics").text
        assert 'isseg_errors_total{kind="server",model="crashy"} 1.0' in metrics
        assert 'isseg_queue_depth{model="crashy"} 0.0' in metrics  # the failed request freed its place
    finally:
        server.should_exit = True
        thread.join(30)
    assert not thread.is_alive()


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    xml = small_xml()
    log = tmp_path / "server.log"
    proc, port = start_server([f"seg={xml}", "--max-queue", "8", "--log-level", "info"], log)
    url = f"http://127.0.0.1:{port}"
    data = coco_images(1)[0].read_bytes()
    results: list[int] = []

    def send() -> None:
        r = httpx.post(f"{url}/predict", params={"model": "seg-detections"}, files={"image": ("a.jpg", data)},
                       timeout=120)
        results.append(r.status_code)

    try:
        threads = [threading.Thread(target=send) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until all three are admitted
            text = httpx.get(f"{url}/metrics").text
            if 'isseg_queue_depth{model="seg-detections"} 3.0' in text:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the three requests were never in the queue together")
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        rc = proc.wait(60)
    finally:
        stop(proc)
    assert results == [200, 200, 200], (results, log.read_text()[-2000:])
    assert rc == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "Traceback" not in text and "Finished server process" in text


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from isseg.cli.main import main
    from isseg.serve.specs import split_spec

    assert split_spec("seg=exported/a.xml") == ("seg", "exported/a.xml")
    assert split_spec("exported/security-0002.xml") == ("security-0002", "exported/security-0002.xml")
    assert split_spec("torchvision-v2-coco") == ("torchvision-v2-coco", "torchvision-v2-coco")
    assert main(["serve", str(tmp_path / "missing.xml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"isseg serve: error: model file not found: {tmp_path / 'missing.xml'}"]
    assert main(["serve", "x.xml", "--set", "seg.speed=3"]) == 1
    assert "expected MODEL.FIELD=VALUE" in capsys.readouterr().err
