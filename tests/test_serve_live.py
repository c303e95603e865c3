"""The server's live view (``isseg serve --stream``), end to end: a real ffmpeg stream server on loopback, ``isseg
serve`` as a real process tracking it with the small random-weight export; ``/v2/streams`` and the status
(frames advancing, tracks, line and zone counts), MJPEG parts read over HTTP and decoded as JPEGs, requests still
answered while the stream runs, privacy (the chosen class's masks, found by an independent run of the model on
the same decoded frame, are filled in every served frame), API keys (MJPEG only with a short-lived view token,
never the key in a URL) and the page in headless Chromium showing the live image. Bounded: every wait has a
deadline."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_serve_helpers import start_server, stop

pytest.importorskip("fastapi")
pytest.importorskip("openvino")
httpx = pytest.importorskip("httpx")

from isseg.cli.main import main  # noqa: E402
from isseg.serve.live import redact  # noqa: E402
from isseg.serve.routes_live import MJPEG_BOUNDARY, ViewTokens  # noqa: E402
from isseg.testing.streams import HttpStreamServer, ffmpeg_available  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
KEY = "live-key-0123456789abcdef"
WAIT_S = 240  # the machine is shared: a frame of the small model can take seconds


@pytest.fixture(scope="module")
def exported():
    from test_export_common import small_export

    return small_export(0.0)  # the random-weight model finds many things


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A still scene (every frame the same, so that a reference run sees what the server sees), 320x240."""
    if ffmpeg_available():
        pytest.skip(ffmpeg_available())
    path = tmp_path_factory.mktemp("live") / "scene.avi"
    blocks = np.random.default_rng(0).integers(60, 200, (60, 80, 3), dtype=np.uint8)  # 4x4 pixel blocks: a texture
    image = cv2.resize(blocks, (320, 240), interpolation=cv2.INTER_NEAREST)  # the stream's JPEG keeps (sure scores)
    cv2.circle(image, (90, 120), 45, (230, 200, 180), -1)
    cv2.rectangle(image, (190, 50), (280, 200), (40, 180, 60), -1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for _ in range(20):
        writer.write(image)
    writer.release()
    return path


def _decoded_as_served(video: Path, folder: Path) -> np.ndarray:
    """The frame as the server decodes it: encoded as HttpStreamServer's ffmpeg encodes it (MJPEG, -q:v 5) and
    decoded by OpenCV's FFmpeg backend."""
    ref = folder / "ref.mjpeg"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(video), "-frames:v", "1", "-c:v", "mjpeg",
                    "-q:v", "5", "-f", "mjpeg", str(ref)], check=True)
    ok, image = cv2.VideoCapture(str(ref), cv2.CAP_FFMPEG).read()
    assert ok
    return image


def _wait_status(url: str, name: str, ready, headers: dict | None = None) -> dict:
    deadline, status = time.monotonic() + WAIT_S, {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/v2/streams/{name}/status", headers=headers or {}, timeout=30).json()
        if ready(status):
            return status
        time.sleep(1.0)
    raise AssertionError(f"the stream did not get there in {WAIT_S} s: {status}")


def _mjpeg_parts(url: str, count: int, headers: dict | None = None) -> list[np.ndarray]:
    """``count`` frames of an MJPEG answer, each decoded as a JPEG."""
    marker = f"--{MJPEG_BOUNDARY}\r\n".encode()
    with httpx.stream("GET", url, headers=headers or {}, timeout=httpx.Timeout(30, read=WAIT_S)) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"] == f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
        buf = b""
        for chunk in resp.iter_bytes():
            buf += chunk
            if buf.count(marker) > count:
                break
    images = []
    for part in buf.split(marker)[1:count + 1]:
        head, _, body = part.partition(b"\r\n\r\n")
        length = int(next(h for h in head.decode().split("\r\n") if h.startswith("Content-Length")).split(":")[1])
        image = cv2.imdecode(np.frombuffer(body[:length], np.uint8), cv2.IMREAD_COLOR)
        assert image is not None, "a part is not a JPEG"
        images.append(image)
    return images


@pytest.fixture(scope="module")
def tracked(exported, video, tmp_path_factory) -> Iterator[tuple[str, HttpStreamServer]]:
    """An open server tracking the stream with a line and a zone."""
    folder = tmp_path_factory.mktemp("tracked")
    zones = folder / "zones.yaml"
    zones.write_text("lines:\n  - name: mid\n    points: [[160, 0], [160, 240]]\nzones:\n"
                     "  - name: left\n    polygon: [[0, 0], [160, 0], [160, 240], [0, 240]]\n")
    with HttpStreamServer(video, mjpeg=True) as stream:
        proc, port = start_server([f"seg={exported.xml}", "--precision", "f32", "--stream", f"cam={stream.url}",
                                   "--zones", str(zones), "--track-threshold", "0.1", "--log-level", "warning"],
                                  folder / "server.log")
        try:
            yield f"http://127.0.0.1:{port}", stream
            viewer = threading.Thread(target=_watch, args=(f"http://127.0.0.1:{port}/v2/streams/cam/mjpeg",),
                                      daemon=True)
            viewer.start()  # a viewer still watching when the server stops must not hold the shutdown
            time.sleep(2)
        finally:
            t0 = time.monotonic()
            stop(proc)
    assert proc.returncode == 0, (folder / "server.log").read_text()[-3000:]
    assert time.monotonic() - t0 < 45  # the MJPEG answer ended at shutdown (uvicorn would wait 60 s for it)


def _watch(url: str) -> None:
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(30, read=None)) as resp:
            for _ in resp.iter_bytes():
                pass
    except httpx.HTTPError:
        pass


def test_streams_status_and_mjpeg(tracked, video) -> None:
    url, stream = tracked
    listed = httpx.get(f"{url}/v2/streams", timeout=30).json()["streams"]
    assert [s["name"] for s in listed] == ["cam"] and listed[0]["url"] == stream.url
    first = _wait_status(url, "cam", lambda s: s["frames"] >= 2 and s["tracks"] > 0)
    assert first["state"] == "live" and len(first["track_ids"]) == first["tracks"]
    assert all(t >= 1 for t in first["track_ids"])
    assert set(first["lines"]) == {"mid"} and set(first["zones"]) == {"left"}
    assert first["lag_s"] is not None and 0 <= first["lag_s"] < 120
    images = _mjpeg_parts(f"{url}/v2/streams/cam/mjpeg", 2)
    assert all(im.shape == (240, 320, 3) for im in images)
    original = cv2.VideoCapture(str(video)).read()[1]
    assert np.abs(images[-1].astype(int) - original).mean() > 2  # tracks, line and zone drawn over the frame
    later = _wait_status(url, "cam", lambda s: s["frames"] > first["frames"])
    assert later["frame_index"] > first["frame_index"]
    # the API still answers while the stream is tracked (requests go first)
    jpeg = cv2.imencode(".jpg", original)[1].tobytes()
    resp = httpx.post(f"{url}/predict", files={"image": ("scene.jpg", jpeg)}, timeout=WAIT_S)
    assert resp.status_code == 200 and resp.json()["width"] == 320
    missing = httpx.get(f"{url}/v2/streams/nope/status", timeout=30)
    assert missing.status_code == 404 and "cam" in missing.json()["error"]


def _classes(exported, frame: np.ndarray) -> tuple[str, str, list[np.ndarray]]:
    """(the class the model finds most in ``frame``, a class it does not find, that class's masks >= 0.1)."""
    from isseg.deploy.predictor import Predictor

    with Predictor(exported.xml, threshold=0.05, precision="f32") as reference:
        det = reference.predict(frame)
    names, counts = np.unique(det.names, return_counts=True)
    private = str(names[np.argmax(counts)])
    absent = next(c for c in reference.class_names if c not in set(det.names) and c != "background")
    masks = [m for m, n, s in zip(det.masks, det.names, det.scores) if n == private and s >= 0.1]
    return private, absent, masks


def test_privacy_keys_and_page(exported, video, tmp_path) -> None:
    frame = _decoded_as_served(video, tmp_path)
    private, absent, masks = _classes(exported, frame)
    assert masks
    with HttpStreamServer(video, mjpeg=True) as stream:
        proc, port = start_server([f"seg={exported.xml}", "--precision", "f32", "--stream", stream.url,
                                   "--privacy", private, "--privacy-mode", "fill", "--track-classes", absent,
                                   "--log-level", "warning"], tmp_path / "server.log", env={"ISSEG_API_KEYS": KEY})
        url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {KEY}"}
        try:
            assert httpx.get(f"{url}/v2/streams", timeout=30).status_code == 401
            _wait_status(url, "live", lambda s: s["frames"] >= 1, auth)
            mjpeg = f"{url}/v2/streams/live/mjpeg"
            assert httpx.get(mjpeg, timeout=30).status_code == 401
            assert httpx.get(f"{mjpeg}?token=forged.token", timeout=30).status_code == 401
            token = httpx.post(f"{url}/v2/streams/live/token", headers=auth, timeout=30).json()["token"]
            assert KEY not in token
            assert httpx.get(f"{url}/v2/streams/live/status?token={token}", timeout=30).status_code == 401
            served = _mjpeg_parts(f"{mjpeg}?token={token}", 2)
            # only privacy-masked frames: every pixel of the private class's masks is filled (JPEG noise aside)
            for image in served:
                for mask in masks:
                    assert frame[mask].mean() > 60  # there was something to hide
                    assert np.percentile(image[mask].max(axis=1), 99) < 60, f"a {private} was served unhidden"
            _page_shows_live_image(url, tmp_path)
        finally:
            stop(proc)
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()[-3000:]


def _page_shows_live_image(url: str, tmp_path: Path) -> None:
    """The page asks for the key, then shows the Live panel with the MJPEG image and the counts; the key is
    never in a URL."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium")
    profile = tempfile.mkdtemp(prefix="isseg-chromium-")
    requests: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                            headless=True)
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            page.wait_for_function("document.body.dataset.state === 'key'")
            page.fill("#apikey", KEY)
            page.click("#keysave")
            page.wait_for_function("document.body.dataset.streams === '1'", timeout=60_000)
            assert page.is_visible("#live")
            page.wait_for_function("document.querySelector('#streams img').naturalWidth > 0", timeout=WAIT_S * 1000)
            assert page.evaluate("document.querySelector('#streams img').naturalWidth") == 320
            page.wait_for_function("document.querySelector('#streams pre').textContent.includes('frames')",
                                   timeout=30_000)
            page.screenshot(path=str(tmp_path / "live_page.png"))
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert any("/mjpeg?token=" in u for u in requests) and all(KEY not in u for u in requests), requests


def test_bad_stream_options_are_one_line(exported, tmp_path, capsys) -> None:
    bad_zones = tmp_path / "zones.yaml"
    bad_zones.write_text("lines:\n  - name: door\n    points: [[1, 2]]\n")
    cases = [(["--stream", str(tmp_path / "clip.txt")], "--stream"),
             (["--stream", "rtsp://127.0.0.1:9/cam", "--zones", str(bad_zones)], "zones.yaml: lines[0].points"),
             (["--zones", str(bad_zones)], "--zones only apply with --stream"),
             (["--stream", "a=rtsp://127.0.0.1:9/x", "--stream", "a=rtsp://127.0.0.1:9/y"], "two streams")]
    for extra, expected in cases:
        rc = main(["serve", str(exported.xml), "--port", "0", *extra])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert rc == 1 and len(err) == 1 and err[0].startswith("isseg serve: error: ") and expected in err[0], err


def test_redact_and_view_tokens() -> None:
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/live?user=a&password=b") == \
        "rtsp://***@10.0.0.5:554/live?user=***&password=***"
    assert redact("http://cam.local/live.mjpg") == "http://cam.local/live.mjpg"
    tokens = ViewTokens(ttl_s=60)
    token = tokens.make("cam", now=1000.0)
    assert tokens.valid(token, "cam", now=1059.0)
    assert not tokens.valid(token, "cam", now=1061.0)  # expired
    assert not tokens.valid(token, "other", now=1000.0)  # one stream only
    assert not ViewTokens().valid(token, "cam", now=1000.0)  # another server's secret
    body, sig = token.split(".", 1)
    assert not tokens.valid(body + "x." + sig, "cam", now=1000.0) and not tokens.valid("x", "cam")
    scope = {"type": "http", "method": "GET", "path": "/v2/streams/cam/mjpeg",
             "query_string": f"token={tokens.make('cam')}".encode()}
    assert tokens.admit(scope)
    assert not tokens.admit({**scope, "path": "/v2/streams/cam/status"})
    assert not tokens.admit({**scope, "method": "POST"})


def test_unreachable_stream_is_one_line_and_retried(exported) -> None:
    """A stream that cannot be opened does not stop the server: one line (no password in it), then retries."""
    from isseg.deploy.predictor import Predictor
    from isseg.serve.detections import DetectionsModel
    from isseg.serve.live import LiveViews, parse_stream
    from isseg.serve.settings import ModelSettings
    from isseg.testing.streams import free_port

    url = f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/cam"  # nothing listens there
    model = DetectionsModel("d", exported.xml, ModelSettings(), predictors=[Predictor(exported.xml, threshold=0.0)])
    lines: list[str] = []
    live = LiveViews([parse_stream(url)], [model], log=lines.append)
    live.start()
    try:
        stream = live.streams["cam"]
        deadline = time.monotonic() + 60
        while stream.errors < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        summary = stream.summary()
        assert stream.errors >= 2 and summary["state"] == "reconnecting" and summary["frames"] == 0, summary
        assert summary["url"] == url.replace("admin:s3cret", "***")
    finally:
        live.stop()
        model.close()
    assert len(lines) == 1 and "cannot open" in lines[0] and "s3cret" not in lines[0], lines
