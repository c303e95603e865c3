"""Shared pieces of the ``isseg serve`` tests (no tests here): a real server in a subprocess on a free loopback
port, serving the small 320x416 export, started once per pytest session (an open one over HTTP, and one with
API keys over HTTPS with a test CA); coco-mini images; a certificate authority and a server certificate."""

from __future__ import annotations

import gc
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO
from isseg.testing.datasets import coco_mini_dir

PRECISION = "f32"  # exact comparisons with the local Predictor


def coco_images(count: int = 2) -> list[Path]:
    """coco-mini val images ($ISSEG_COCO_MINI or ../shared/datasets/coco-mini); skips when absent."""
    root = coco_mini_dir()
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
    scheme: str = "http"
    ca: Path | None = None  # the CA of an HTTPS server's certificate
    key: str | None = None  # an API key of a keyed server

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> Any:
        """httpx's ``verify=``: the test CA of an HTTPS server."""
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    @property
    def address(self) -> str:  # tritonclient / Model API form
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_server(args: list[str], log: Path, timeout: float = 180.0, env: dict[str, str] | None = None,
                 ca: Path | None = None) -> tuple[subprocess.Popen, int]:
    """``isseg serve ARGS`` on a free port (``env`` added to the environment; HTTPS when ``ca`` is given: the CA
    of the server's certificate); returns once /v2/health/ready answers 200."""
    import httpx

    port = free_port()
    out = open(log, "w")  # noqa: SIM115 - the server writes to it while the tests run
    proc = subprocess.Popen([sys.executable, "-m", "isseg", "serve", *args, "--port", str(port)],
                            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})})
    scheme = "https" if ca else "http"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"isseg serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            verify = ssl.create_default_context(cafile=str(ca)) if ca else True
            if httpx.get(f"{scheme}://127.0.0.1:{port}/v2/health/ready", timeout=2, verify=verify).status_code == 200:
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


@pytest.fixture
def collect_here() -> Iterator[None]:
    """Collect each test's garbage at its end, in the main thread. tritonclient's HTTP client joins its gevent
    pool in ``__del__``; one left in a reference cycle (Model API's model and adapter) would otherwise be
    finalised whenever and in whichever thread the collector next runs. A precaution: the full run's
    segmentation fault (see ``test_serve_auth._clients_in_a_subprocess``) was not cured by it alone."""
    yield
    gc.collect()


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


API_KEY = "test-key-0123456789abcdef"  # a key of the keyed server (from its keys file)
ENV_KEY = "env-key-fedcba9876543210"  # another one (from $ISSEG_API_KEYS)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """-> (CA certificate, server certificate for 127.0.0.1 / localhost signed by that CA, server key)."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path, Path]) -> Iterator[Server]:
    """``seg`` + ``seg-detections`` over HTTPS (certificate of the test CA), with two API keys: one from
    ``--api-keys-file`` (with comments), one from ``$ISSEG_API_KEYS``."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    ca, cert, key = tls_files
    xml = small_xml()
    folder = tmp_path_factory.mktemp("keyed")
    keys = folder / "keys.txt"
    keys.write_text(f"# keys of the test server\n\n{API_KEY}   # the tests' key\n")
    log = folder / "server.log"
    proc, port = start_server([f"seg={xml}", "--precision", PRECISION, "--api-keys-file", str(keys),
                               "--tls-cert", str(cert), "--tls-key", str(key), "--log-level", "warning"], log,
                              env={"ISSEG_API_KEYS": ENV_KEY}, ca=ca)
    yield Server(proc, port, xml, log, "https", ca, API_KEY)
    stop(proc)


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate it signs (127.0.0.1, localhost), with the ``cryptography`` package, or
    the ``openssl`` command without it (then the certificate is its own CA). -> (ca, cert, key) PEM files."""
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", str(key_path), "-out", str(cert_path)], check=True, capture_output=True)
        ca_path.write_bytes(cert_path.read_bytes())
        return ca_path, cert_path, key_path
    ca_pem, cert_pem, key_pem = _certificates_cryptography()
    ca_path.write_bytes(ca_pem)
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return ca_path, cert_path, key_path


def _certificates_cryptography() -> tuple[bytes, bytes, bytes]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "isseg test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem
