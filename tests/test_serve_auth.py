"""Access control of ``isseg serve``: API keys (file, environment; 401 otherwise), TLS, CORS, the warnings, and
the option checks that run before any model loads.

In-process (an app over a tiny fake model, through httpx's ASGI transport): what is open and what is keyed, the
401 answers, CORS. Real servers (``keyed_server``: HTTPS with the test CA, two keys): the same answers with a
key as the open server's, tritonclient with a key over TLS (``headers=`` and a plugin), Model API's OVMSAdapter
through the documented subclass, curl with ``--cacert``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_serve_helpers import (  # noqa: F401 - fixtures
    API_KEY,
    ENV_KEY,
    Server,
    coco_images,
    collect_here,
    free_port,
    keyed_server,
    server,
    tls_files,
)

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.usefixtures("collect_here")  # tritonclient's clients die in the main thread
pytest.importorskip("fastapi")

KEY = "k" * 20


# ------------------------------------------------------------------------------------------- keys
def test_keys_from_file_and_environment(tmp_path: Path) -> None:
    from isseg.serve.auth import load_api_keys

    f = tmp_path / "keys"
    f.write_text("# a comment\n\n  abcdefghijklmnop1  \nabcdefghijklmnop2 # where it is used\nabcdefghijklmnop1\n")
    assert load_api_keys(f, environ={}) == ("abcdefghijklmnop1", "abcdefghijklmnop2")
    assert load_api_keys(None, environ={"ISSEG_API_KEYS": " x" * 0 + "qrstuvwxyz0123456, abcdefghijklmnop1"}) == (
        "qrstuvwxyz0123456", "abcdefghijklmnop1")
    assert load_api_keys(f, environ={"ISSEG_API_KEYS": "qrstuvwxyz0123456"})[-1] == "qrstuvwxyz0123456"
    assert load_api_keys(None, environ={}) == ()
    bad = [("short\n", "line 1", "too easy to guess"), ("# only a comment\n", "no key in it", None),
           ("abcdefghijklmnop1 with space\n", "line 1", "letters, digits")]
    for text, where, what in bad:
        f.write_text(text)
        with pytest.raises(ValueError) as raised:
            load_api_keys(f, environ={})
        assert where in str(raised.value) and (what is None or what in str(raised.value)), raised.value
    with pytest.raises(ValueError, match="holds no key"):
        load_api_keys(None, environ={"ISSEG_API_KEYS": " , "})
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_api_keys(tmp_path / "missing", environ={})


def test_key_check_and_header_parsing() -> None:
    from isseg.serve.auth import KeyCheck, bearer_token

    check = KeyCheck(["a" * 16, "b" * 24])
    assert check(b"a" * 16) and check(b"b" * 24)
    assert not check(b"a" * 15) and not check(b"a" * 17) and not check(b"") and not check(b"c" * 24)
    assert bearer_token([(b"authorization", b"Bearer tok")]) == b"tok"
    assert bearer_token([(b"Authorization", b"bearer   tok ")]) == b"tok"
    assert bearer_token([(b"authorization", b"Basic dXNlcjpwYXNz")]) is None
    assert bearer_token([(b"authorization", b"Bearer")]) is None
    assert bearer_token([(b"x-api-key", b"tok")]) is None


# ------------------------------------------------------------------------------------ in-process app
def _echo_model() -> Any:
    from isseg.serve.admission import ServedModel
    from isseg.serve.settings import ModelSettings

    class Echo(ServedModel):
        kind = "contract"

        def metadata(self) -> dict[str, Any]:
            return {"name": self.name, "versions": [self.version], "platform": "test",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
                    "outputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}]}

        async def infer(self, request: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            return {"x": request.inputs["x"].data}, {}

    model = Echo("echo", ModelSettings())
    model.ready = True
    return model


def _client(**settings: Any) -> Any:
    from isseg.serve import ServeSettings, create_app

    app = create_app([_echo_model()], ServeSettings(**settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _calls(client: Any, calls: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    async with client:
        return [await client.request(method, path, **kw) for method, path, kw in calls]


def _run(settings: dict[str, Any], calls: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    return asyncio.run(_calls(_client(**settings), calls))


BODY = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}]}


def test_keyed_app_refuses_without_a_key_and_keeps_health_open() -> None:
    auth = {"headers": {"Authorization": f"Bearer {KEY}"}}
    keyed = ["/v2", "/v2/models", "/v2/models/echo", "/v2/models/echo/ready", "/metrics", "/nowhere"]
    calls = [("GET", p, {}) for p in keyed] + [("POST", "/v2/models/echo/infer", {"json": BODY}),
                                               ("POST", "/predict", {"content": b"x"})]
    calls += [("GET", p, {"headers": {"Authorization": "Bearer wrong-key-0123456789"}}) for p in keyed[:2]]
    calls += [("GET", p, {}) for p in ("/v2/health/live", "/v2/health/ready", "/", "/openapi.json", "/docs")]
    calls += [("POST", "/v2/models/echo/infer", {"json": BODY, **auth}), ("GET", "/metrics", auth),
              ("GET", "/v2/models", {"headers": {"authorization": f"bearer {KEY}"}})]
    answers = _run({"api_keys": (KEY, "other-key-0123456789")}, calls)
    refused, wrong, open_, ok = answers[:8], answers[8:10], answers[10:15], answers[15:]
    for r in refused:
        assert r.status_code == 401, (r.request.url, r.status_code)
        assert r.headers["www-authenticate"] == 'Bearer realm="isseg"'
        assert r.json() == {"error": "this server needs an API key: send the header 'Authorization: Bearer <key>'"}
    for r in wrong:
        assert r.status_code == 401 and r.json() == {"error": "the API key is not valid"}
        assert r.headers["www-authenticate"] == 'Bearer realm="isseg", error="invalid_token"'
    assert [r.status_code for r in open_] == [200] * 5
    assert ok[0].status_code == 200 and ok[0].json()["outputs"][0]["data"] == [1.5, 2.5]
    assert ok[1].status_code == 200 and "isseg_unauthorized_total 10.0" in ok[1].text
    assert ok[2].status_code == 200 and ok[2].json()["models"][0]["name"] == "echo"
    schema = open_[3].json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "an API key of the server (--api-keys-file or "
                                                           "$ISSEG_API_KEYS)"}
    assert "401" in schema["paths"]["/v2/models/{name}/infer"]["post"]["responses"]
    assert "security" not in schema["paths"]["/v2/health/ready"]["get"]


def test_open_metrics_and_an_open_server() -> None:
    metrics, models = _run({"api_keys": (KEY,), "open_metrics": True},
                           [("GET", "/metrics", {}), ("GET", "/v2/models", {})])
    assert metrics.status_code == 200 and models.status_code == 401
    open_server = _run({}, [("GET", "/v2/models", {}), ("POST", "/v2/models/echo/infer", {"json": BODY}),
                            ("GET", "/openapi.json", {})])
    assert [r.status_code for r in open_server[:2]] == [200, 200]
    assert "securitySchemes" not in open_server[2].json().get("components", {})


def test_cors_off_by_default_and_exact_origins_when_given() -> None:
    origin = "https://app.example.com"
    preflight = {"headers": {"Origin": origin, "Access-Control-Request-Method": "POST",
                             "Access-Control-Request-Headers": "authorization,content-type"}}
    plain, pre = _run({"api_keys": (KEY,)}, [("GET", "/v2/health/live", {"headers": {"Origin": origin}}),
                                             ("OPTIONS", "/v2/models/echo/infer", preflight)])
    assert "access-control-allow-origin" not in plain.headers and pre.status_code == 405
    assert "access-control-allow-origin" not in pre.headers
    other = {"headers": {**preflight["headers"], "Origin": "https://evil.example.com"}}
    answers = _run({"api_keys": (KEY,), "cors_origins": (origin,)},
                   [("OPTIONS", "/v2/models/echo/infer", preflight), ("OPTIONS", "/v2/models/echo/infer", other),
                    ("GET", "/v2/models", {"headers": {"Origin": origin}}),
                    ("GET", "/v2/models", {"headers": {"Origin": origin, "Authorization": f"Bearer {KEY}"}})])
    ok, refused, unauthorized, keyed = answers
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    assert unauthorized.status_code == 401 and unauthorized.headers["access-control-allow-origin"] == origin
    assert keyed.status_code == 200 and keyed.headers["access-control-allow-origin"] == origin
    from isseg.serve import ServeSettings

    with pytest.raises(ValueError, match="expected an origin"):
        ServeSettings(cors_origins=("https://app.example.com/page",))


def test_settings_never_show_the_keys() -> None:
    from isseg.serve import ServeSettings

    assert KEY not in repr(ServeSettings(api_keys=(KEY,)))


# ------------------------------------------------------------------------------------------- the CLI
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None,
         monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, list[str], float]:
    from isseg.cli.main import main

    if monkeypatch is not None:
        monkeypatch.delenv("ISSEG_API_KEYS", raising=False)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
    t0 = time.perf_counter()
    rc = main(["serve", *argv])
    return rc, capsys.readouterr().err.strip().splitlines(), time.perf_counter() - t0


def test_every_option_is_checked_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing model file would be the error if the options were checked after the model: each bad option
    is its own one line instead."""
    missing = str(tmp_path / "missing.xml")
    (tmp_path / "cert.pem").write_text("not a certificate")
    keys = tmp_path / "keys"
    keys.write_text("tiny\n")
    cases = [
        (["--api-keys-file", str(tmp_path / "nokeys")], {}, f"--api-keys-file {tmp_path / 'nokeys'}: no such file"),
        (["--api-keys-file", str(keys)], {}, f"--api-keys-file {keys}, line 1: a key of 4 characters is too easy"),
        ([], {"ISSEG_API_KEYS": "short"}, "$ISSEG_API_KEYS: a key of 5 characters is too easy to guess"),
        (["--tls-cert", str(tmp_path / "cert.pem")], {}, "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "nokey.pem")], {},
         f"--tls-key {tmp_path / 'nokey.pem'}: no such file"),
        (["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "cert.pem")], {},
         f"--tls-cert {tmp_path / 'cert.pem'} / --tls-key {tmp_path / 'cert.pem'}: not a PEM certificate and its "
         "matching private key"),
        (["--cors-origins", "app.example.com"], {}, "--cors-origins 'app.example.com': expected an origin"),
        (["--port", "70000"], {}, "--port 70000: expected 0..65535"),
    ]
    for args, env, message in cases:
        rc, err, seconds = _cli([missing, *args], capsys, env, monkeypatch)
        assert rc == 1 and len(err) == 1 and err[0].startswith(f"isseg serve: error: {message}"), (args, err)
        assert seconds < 5, seconds


def test_a_port_in_use_fails_at_once_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The model file is not a model: had it been loaded, the error would be about it."""
    fake = tmp_path / "m.xml"
    fake.write_text("<not a model/>")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, err, seconds = _cli([str(fake), "--port", str(port)], capsys, {}, monkeypatch)
    assert rc == 1 and err == [f"isseg serve: error: port {port} on 127.0.0.1 is already in use (another "
                               "server?); stop it or choose another --port"], err
    assert seconds < 5


def test_uvicorn_failing_to_start_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Should uvicorn still fail after the checks (its own exit), the command ends with one line of its own."""
    import uvicorn

    import isseg.serve.app
    import isseg.serve.specs

    class Failing:
        started = False

        def __init__(self, config: Any) -> None:
            pass

        def run(self, sockets: list) -> None:
            raise SystemExit(3)

    model = tmp_path / "m.xml"
    model.write_text("<never loaded/>")
    monkeypatch.setattr(isseg.serve.specs, "load_models", lambda *args, **kwargs: [])
    # the real app (no models): only uvicorn fails. Its Config keeps its defaults but one: it does not set up
    # logging. In the pytest process, after an in-process export (torch adds its log handlers), uvicorn's
    # logging.config.dictConfig broke pytest's capture ("I/O operation on closed file") and the next test crashed
    monkeypatch.setattr(uvicorn, "Config", functools.partial(uvicorn.Config, log_config=None))
    monkeypatch.setattr(uvicorn, "Server", Failing)
    port = free_port()
    rc, err, _ = _cli([str(model), "--port", str(port)], capsys, {}, monkeypatch)
    assert rc == 1
    assert err[-1] == (
        f"isseg serve: error: the server could not start on 127.0.0.1:{port} (uvicorn exited with 3; its message is "
        "above)")


def test_warnings_for_a_network_address(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """One warning line without a key (or with keys but no TLS) on a non-loopback address, none on loopback;
    the fake model then fails to load (after the warning: the checks passed)."""
    from isseg.serve.network import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")
    fake = tmp_path / "m.xml"
    fake.write_text("<not a model/>")
    free = free_port()
    port = ["--port", str(free)]
    _, err, _ = _cli([str(fake), "--host", "0.0.0.0", *port], capsys, {}, monkeypatch)
    warnings = [line for line in err if line.startswith("isseg serve: warning:")]
    assert warnings == [f"isseg serve: warning: listening on 0.0.0.0 without an API key: anyone who can reach port "
                        f"{free} can run the models; set --api-keys-file or $ISSEG_API_KEYS"], err
    _, err, _ = _cli([str(fake), "--host", "0.0.0.0", *port], capsys, {"ISSEG_API_KEYS": KEY}, monkeypatch)
    assert [line for line in err if line.startswith("isseg serve: warning:")] == [
        "isseg serve: warning: listening on 0.0.0.0 without TLS: API keys and images cross the network in clear; "
        "give --tls-cert and --tls-key, or put TLS in front"], err
    _, err, _ = _cli([str(fake), *port], capsys, {}, monkeypatch)
    assert not [line for line in err if line.startswith("isseg serve: warning:")], err
    assert err[-1].startswith("isseg serve: error:"), err


# ------------------------------------------------------------------------------------------- real servers
def _predict(srv: Server, path: Path, **kw: Any) -> Any:
    return httpx.post(f"{srv.url}/predict", params={"threshold": 0.1}, files={"image": (path.name, path.read_bytes())},
                      timeout=120, verify=srv.verify, **kw)


def test_keyed_https_server_answers_as_the_open_one(keyed_server: Server, server: Server) -> None:  # noqa: F811
    photo = coco_images(1)[0]
    verify = keyed_server.verify
    assert _predict(keyed_server, photo).status_code == 401
    keyed = _predict(keyed_server, photo, headers=keyed_server.headers)
    from_env = _predict(keyed_server, photo, headers={"Authorization": f"Bearer {ENV_KEY}"})
    plain = _predict(server, photo)
    assert keyed.status_code == from_env.status_code == plain.status_code == 200, keyed.text
    strip = [{k: v for k, v in r.json().items() if k != "timings_ms"} for r in (keyed, from_env, plain)]
    assert strip[0] == strip[1] == strip[2] and len(strip[0]["detections"]) >= 3
    live = httpx.get(f"{keyed_server.url}/v2/health/live", verify=verify)
    assert live.status_code == 200 and live.json() == {"live": True}
    assert httpx.get(f"{keyed_server.url}/metrics", verify=verify).status_code == 401
    metrics = httpx.get(f"{keyed_server.url}/metrics", verify=verify, headers=keyed_server.headers).text
    assert "isseg_unauthorized_total" in metrics
    with pytest.raises(httpx.ConnectError):  # without the CA, the certificate is not trusted: TLS is real
        httpx.get(f"{keyed_server.url}/v2/health/live")
    plain_http = f"http://127.0.0.1:{keyed_server.port}/v2/health/live"
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain_http, timeout=5)


def _clients_in_a_subprocess(script: str, srv: Server) -> dict[str, Any]:
    """Run ``script`` (client code; it prints one JSON line) in a fresh Python with ``ADDRESS``, ``KEY``, ``CA``
    and ``IMAGE`` set. tritonclient over TLS loads gevent's SSL; in pytest's own process, after the other
    tests had run, the test process then died of a segmentation fault one test later, so the clients run
    apart (the assertions stay here). That did not cure the crash (``tests/run_in_groups.py``)."""
    prelude = (f"ADDRESS, KEY, CA, IMAGE = {srv.address!r}, {srv.key!r}, {str(srv.ca)!r}, "
               f"{str(coco_images(1)[0])!r}\n")
    run = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_tritonclient_with_a_key_over_tls(keyed_server: Server) -> None:  # noqa: F811
    pytest.importorskip("tritonclient.http")
    got = _clients_in_a_subprocess("""
        import json
        from typing import Any

        import numpy as np
        import tritonclient.http as tc
        from tritonclient._plugin import InferenceServerClientPlugin
        from tritonclient.utils import InferenceServerException

        out = {}
        inp = tc.InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([open(IMAGE, "rb").read()], dtype=object))
        client = tc.InferenceServerClient(ADDRESS, ssl=True, ssl_options={"ca_certs": CA})
        out["live"] = client.is_server_live()  # health: no key needed
        try:
            client.infer("seg-detections", [inp])
            out["refused"] = None
        except InferenceServerException as exc:
            out["refused"] = str(exc)
        headers = {"Authorization": f"Bearer {KEY}"}
        result = client.infer("seg-detections", [inp], parameters={"threshold": 0.1}, headers=headers)
        out["scores"] = result.as_numpy("scores").tolist()
        out["boxes"] = result.as_numpy("boxes").tolist()
        out["model_type"] = client.get_model_metadata("seg", headers=headers)["rt_info"]["model_info"]["model_type"]

        class BearerKey(InferenceServerClientPlugin):  # as docs/serve.md shows: every call sends the key
            def __init__(self, key: str) -> None:
                self.key = key

            def __call__(self, request: Any) -> None:
                request.headers["Authorization"] = f"Bearer {self.key}"

        client.register_plugin(BearerKey(KEY))
        out["again_boxes"] = client.infer("seg-detections", [inp], parameters={"threshold": 0.1}).as_numpy(
            "boxes").tolist()
        out["ready"] = client.is_model_ready("seg")
        client.close()
        print(json.dumps(out))
        """, keyed_server)
    assert got["live"] and got["ready"]
    assert got["refused"] is not None and "needs an API key" in got["refused"]
    assert len(got["scores"]) >= 3 and got["model_type"] == "MaskRCNN"
    assert got["again_boxes"] == got["boxes"]


def test_model_api_with_a_key_through_the_documented_adapter(keyed_server: Server) -> None:  # noqa: F811
    """OVMSAdapter builds its own tritonclient (no headers, no TLS options); the subclass of docs/serve.md gives
    it a client that sends the key, over TLS."""
    pytest.importorskip("tritonclient.http")
    got = _clients_in_a_subprocess("""
        import json
        from typing import Any

        import cv2
        import tritonclient.http as httpclient
        from model_api.adapters import OVMSAdapter
        from model_api.models import Model
        from tritonclient._plugin import InferenceServerClientPlugin

        out = {}
        try:  # the plain adapter: no TLS, no key
            OVMSAdapter(f"{ADDRESS}/v2/models/seg")
            out["plain"] = None
        except Exception as exc:
            out["plain"] = str(exc)

        class BearerKey(InferenceServerClientPlugin):
            def __init__(self, key: str) -> None:
                self.key = key

            def __call__(self, request: Any) -> None:
                request.headers["Authorization"] = f"Bearer {self.key}"

        class KeyedOVMSAdapter(OVMSAdapter):
            # OVMSAdapter whose client sends an API key (and trusts a CA) on every call

            def __init__(self, target_model: str, api_key: str, **client_options: Any) -> None:
                url, self.model_name, self.model_version = self.parse_model_arg(target_model)
                self.client = httpclient.InferenceServerClient(url, **client_options)
                self.client.register_plugin(BearerKey(api_key))
                if not self.client.is_model_ready(self.model_name, self.model_version):
                    raise RuntimeError(f"model {self.model_name} is not ready")
                self.metadata = self.client.get_model_metadata(self.model_name, self.model_version)
                self.inputs = self.get_input_layers()

        adapter = KeyedOVMSAdapter(f"{ADDRESS}/v2/models/seg", KEY, ssl=True, ssl_options={"ca_certs": CA})
        model = Model.create_model(adapter, configuration={"confidence_threshold": 0.1})
        out["model"] = type(model).__name__
        out["detections"] = len(model(cv2.imread(IMAGE)).scores)
        adapter.client.close()
        print(json.dumps(out))
        """, keyed_server)
    assert got["plain"] is not None and "connection closed" in got["plain"]
    assert got["model"] == "MaskRCNNModel" and got["detections"] >= 3


def test_curl_with_the_ca_and_a_key(keyed_server: Server) -> None:  # noqa: F811
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("no curl on this machine")
    base = [curl, "-sS", "--max-time", "60", "--cacert", str(keyed_server.ca)]
    listed = subprocess.run([*base, "-H", f"Authorization: Bearer {keyed_server.key}", f"{keyed_server.url}/v2/models"],
                            capture_output=True, text=True, check=True)
    assert {m["name"] for m in json.loads(listed.stdout)["models"]} == {"seg", "seg-detections"}
    refused = subprocess.run([*base, "-i", f"{keyed_server.url}/v2/models"], capture_output=True, text=True)
    assert refused.stdout.startswith("HTTP/1.1 401") and "www-authenticate: Bearer" in refused.stdout, refused.stdout
    photo = coco_images(1)[0]
    predicted = subprocess.run([*base, "-H", f"Authorization: Bearer {keyed_server.key}", "-F",
                                f"image=@{photo}", f"{keyed_server.url}/predict?threshold=0.1"],
                               capture_output=True, text=True, check=True)
    assert json.loads(predicted.stdout)["file"] == photo.name
    untrusted = subprocess.run([curl, "-sS", "--max-time", "20", f"{keyed_server.url}/v2/health/live"],
                               capture_output=True, text=True)
    assert untrusted.returncode == 60, untrusted  # curl: the peer's certificate cannot be verified
