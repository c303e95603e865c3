"""Shared pieces of the ``isseg serve`` tests (no tests here): a real server in a subprocess on a free loopback
port, serving the small 320x416 export, started once per pytest session; coco-mini images."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRECISION = "f32"  # exact comparisons with the local Predictor


def coco_images(count: int = 2) -> list[Path]:
    """coco-mini val images ($ISSEG_COCO_MINI or ../shared/datasets/coco-mini); skips when absent."""
    root = Path(os.environ.get("ISSEG_COCO_MINI", REPO.parent / "shared" / "datasets" / "coco-mini"))
    files = sorted((root / "val2017").glob("*.jpg"))
    if len(files) < count:
        pytest.skip(f"coco-mini val2017 not found under {root}; set ISSEG_COCO_MINI")
    return files[:count]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    xml: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:  # tritonclient / Model API form
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_server(args: list[str], log: Path, timeout: float = 180.0) -> tuple[subprocess.Popen, int]:
    """``isseg serve ARGS`` on a free port; returns once /v2/health/ready answers 200."""
    import httpx

    port = free_port()
    out = open(log, "w")  # noqa: SIM115 - the server writes to it while the tests run
    proc = subprocess.Popen([sys.executable, "-m", "isseg", "serve", *args, "--port", str(port)],
                            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"isseg serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"isseg serve not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def small_xml() -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from test_export_common import small_export

    return small_export(11.0).xml


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Models: ``seg`` (contract) + ``seg-detections`` with the defaults; ``tight`` (contract, 1 ms timeout) and
    ``tight-detections`` (1 worker, 1 admitted) for back-pressure and timeouts."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    xml = small_xml()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    proc, port = start_server([f"seg={xml}", f"tight={xml}", "--precision", PRECISION, "--max-body-mb", "4",
                               "--set", "tight.timeout_s=0.001", "--set", "tight-detections.max_queue=1",
                               "--set", "tight-detections.workers=1", "--log-level", "warning"], log)
    srv = Server(proc, port, xml, log)
    yield srv
    stop(proc)
