"""The page at ``/`` in a real headless browser (Debian's chromium driven by Playwright): upload a coco-mini photo,
wait for the drawing, check what is shown, keep a screenshot; on a server with API keys (over HTTPS), the page
asks for the key once and sends it in a header, never in a URL."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from test_serve_helpers import Server, coco_images, keyed_server, server, tls_files  # noqa: F401 - the fixtures

CHROMIUM = os.environ.get("ISSEG_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def server_class_names(server: Server) -> list[str]:  # noqa: F811
    import httpx

    return httpx.get(f"{server.url}/v2/models/seg-detections").json()["parameters"]["class_names"]


def test_page_draws_segmented_photo(server: Server, tmp_path: Path) -> None:  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium")
    photo = coco_images(1)[0]
    profile = tempfile.mkdtemp(prefix="isseg-chromium-")
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                            headless=True, viewport={"width": 1280, "height": 900})
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url, wait_until="load")
            page.wait_for_function("document.getElementById('model').options.length > 0")
            assert page.locator("#model").input_value() == "seg-detections"
            page.fill("#threshold", "0.1")
            page.set_input_files("#file", str(photo))
            page.wait_for_function("document.body.dataset.state === 'done' || document.body.dataset.state === "
                                   "'error'", timeout=120_000)
            status = page.inner_text("#status")
            assert page.evaluate("document.body.dataset.state") == "done", status
            rows = page.locator("#detections tbody tr")
            count = rows.count()
            assert count >= 3 and f"{count} detections" in status, status
            names = {r.split("\t")[0].strip() for r in rows.all_inner_texts()}
            assert names <= set(server_class_names(server)), names
            timing_names = page.locator("#timings td:first-child").all_inner_texts()
            assert {"decode", "infer", "postprocess"} <= set(timing_names), timing_names
            # the canvas holds the photo at its own size, with colored masks and boxes drawn over it
            size = page.evaluate("[document.getElementById('view').width, document.getElementById('view').height]")
            from PIL import Image

            original = Image.open(photo)
            assert tuple(size) == original.size
            w, h = size
            drawn = np.array(page.evaluate(
                f"Array.from(document.getElementById('view').getContext('2d').getImageData(0, 0, {w}, {h}).data)"),
                np.uint8).reshape(h, w, 4)[..., :3]
            changed = np.mean(np.any(np.abs(drawn.astype(int) - np.asarray(original.convert("RGB"), int)) > 40,
                                     axis=2))
            assert 0.005 < changed < 0.9, changed
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            keep = os.environ.get("ISSEG_SCREENSHOT")
            if keep:
                shutil.copy(shot, keep)
            assert shot.stat().st_size > 10_000 and not errors, errors
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_page_asks_for_the_key_once(keyed_server: Server) -> None:  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium")
    photo = coco_images(1)[0]
    profile = tempfile.mkdtemp(prefix="isseg-chromium-")
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                            headless=True, ignore_https_errors=True)
            page = browser.new_page()
            requests: list[tuple[str, str | None]] = []
            page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
            page.goto(keyed_server.url, wait_until="load")
            page.wait_for_function("document.body.dataset.state === 'key'")
            assert page.is_visible("#apikey") and "needs an API key" in page.inner_text("#status")
            page.fill("#apikey", "not-the-key-0123456789")
            page.click("#keysave")
            page.wait_for_function("document.body.dataset.state === 'key' && "
                                   "document.getElementById('status').textContent.includes('refused')")
            page.fill("#apikey", keyed_server.key)
            page.click("#keysave")
            page.wait_for_function("document.body.dataset.models === 'loaded'")
            assert not page.is_visible("#apikey")
            page.fill("#threshold", "0.1")
            page.set_input_files("#file", str(photo))
            page.wait_for_function("['done', 'error', 'key'].includes(document.body.dataset.state)", timeout=120_000)
            assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#status")
            assert page.locator("#detections tbody tr").count() >= 3
            page.reload(wait_until="load")  # the same tab: the key is kept, not asked again
            page.wait_for_function("document.body.dataset.models === 'loaded'")
            assert not page.is_visible("#apikey")
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert all(keyed_server.key not in url for url, _ in requests), requests
    sent = [(url, auth) for url, auth in requests if "/predict" in url or url.endswith("/v2/models")]
    assert any(auth == f"Bearer {keyed_server.key}" for url, auth in sent if "/predict" in url), sent
