"""The server fuzzed: property-based tests generated from its own OpenAPI schema (schemathesis), and the
binary-tensor framing fuzzed with Hypothesis, against a real ``isseg serve`` (HTTPS, API keys: the
``keyed_server`` of the serve tests, the small random-weight export).

Over a bounded run (a bounded number of examples per operation, seconds in all) the server must answer no 5xx
to any input, every answer must match the schema (status documented, body and content type as declared), a
request without the key must get 401, and the server must still be healthy at the end. Each bug these runs found
has its own regression test at the end. A longer run: ``benchmarks/serve_fuzz.py``.
"""

from __future__ import annotations

import atexit
import gzip
import json
import os
import shutil
import struct
import tempfile
from typing import Any

import numpy as np
import pytest

from test_serve_helpers import Server, coco_images, keyed_server, tls_files  # noqa: F401 - fixtures

httpx = pytest.importorskip("httpx")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# Hypothesis keeps caches in ./.hypothesis; none in the repository (examples are not stored either: database=None)
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="isseg-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
from hypothesis import strategies as st  # noqa: E402

# examples per operation (and of the binary framing, x6): 14 operations, well under a minute here; the longer run
# of benchmarks/serve_fuzz.py sets $ISSEG_FUZZ_EXAMPLES
EXAMPLES = int(os.environ.get("ISSEG_FUZZ_EXAMPLES", "10"))
CHECK_NAMES = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "unsupported_method", "ignored_auth"]
# Left out: positive_data_acceptance (a schema-valid request may still name an unknown model or a tensor of the
# wrong shape: 4xx is right) and the stateful checks that assume created resources (there are none).


def _app_schema() -> dict[str, Any]:
    """The server's OpenAPI schema, from the app itself built without models (routes and schema do not depend on
    them; ``test_the_served_schema_is_the_apps`` checks that the running server serves this one)."""
    from isseg.serve import ServeSettings, create_app

    return create_app([], ServeSettings(api_keys=("x" * 16,))).openapi()


schema = schemathesis.openapi.from_dict(_app_schema())
schema.config.generation.update(max_examples=EXAMPLES, database="none", with_security_parameters=False)
# examples of the schema, the coverage phase (boundary values, each parameter missing or of the wrong type,
# methods the route does not take) and the fuzzing phase (random, valid and invalid)
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])


def _checks() -> list[Any]:
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    return [CHECKS.get_one(name) for name in CHECK_NAMES]


def test_the_served_schema_is_the_apps(keyed_server: Server) -> None:  # noqa: F811
    served = httpx.get(f"{keyed_server.url}/openapi.json", verify=keyed_server.verify).json()
    assert served == json.loads(json.dumps(_app_schema()))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_from_its_schema(case: Any, keyed_server: Server) -> None:  # noqa: F811
    """Requests generated from each operation's schema (valid ones and ones that break it): no 5xx, the answer
    as the schema says, 405 with Allow for a method a route does not take, 401 without the key (ignored_auth
    replays the request without it)."""
    case.call_and_validate(base_url=keyed_server.url, headers=keyed_server.headers, checks=_checks(),
                           verify=str(keyed_server.ca), timeout=120)


# --------------------------------------------------------------------------------- binary tensors
def _post(srv: Server, model: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{srv.url}/v2/models/{model}/infer", content=body, headers={**srv.headers, **headers},
                      timeout=120, verify=srv.verify)


def _binary_request(tensors: list[dict[str, Any]], blob: bytes, length_delta: int = 0,
                    length: str | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": tensors}).encode()
    value = length if length is not None else str(len(head) + length_delta)
    return head + blob, {"Inference-Header-Content-Length": value, "Content-Type": "application/octet-stream"}


def _assert_clean_4xx(r: httpx.Response, *statuses: int) -> None:
    assert r.status_code in (statuses or (400,)), (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body


DATATYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "UINT16", "UINT32", "UINT64", "FP16", "FP32",
             "FP64", "BYTES", "FLOAT", "", "fp32"]
dims = st.one_of(st.integers(0, 4), st.integers(0, 2**70), st.integers(-3, -1))
tensor = st.fixed_dictionaries({
    "name": st.sampled_from(["image", "x", ""]),
    "datatype": st.sampled_from(DATATYPES),
    "shape": st.lists(dims, max_size=5),
    "parameters": st.fixed_dictionaries({"binary_data_size": st.one_of(st.integers(-2, 64), st.just(2**62))})})


@settings(max_examples=6 * EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(tensors=st.lists(tensor, min_size=1, max_size=3), blob=st.binary(max_size=64),
       length_delta=st.sampled_from([0, 0, 0, -1, 1, -10_000, 10_000]),
       model=st.sampled_from(["seg", "seg-detections"]))
def test_binary_framing_fuzz(keyed_server: Server, tensors: list, blob: bytes, length_delta: int,  # noqa: F811
                             model: str) -> None:
    """Random binary-tensor requests (sizes, shapes up to 2**70, datatypes, header lengths off by a little or a
    lot) never get a 5xx; the ones that cannot be right get one clean 4xx line."""
    body, headers = _binary_request(tensors, blob, length_delta)
    r = _post(keyed_server, model, body, headers)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 200:
        _assert_clean_4xx(r, 400, 413)


def test_binary_edge_cases(keyed_server: Server) -> None:  # noqa: F811
    """Inference-Header-Content-Length wrong, negative, larger than the body; datatype and shape mismatches;
    BYTES tensors (lengths running past the end, counts that do not match); huge shapes: each one clean 4xx."""
    jpeg = coco_images(1)[0].read_bytes()
    image = struct.pack("<I", len(jpeg)) + jpeg
    bytes_input = [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(image)}}]
    fp32 = [{"name": "image", "shape": [1, 3, 320, 416], "datatype": "FP32",
             "parameters": {"binary_data_size": 4 * 3 * 320 * 416}}]
    zeros = bytes(4 * 3 * 320 * 416)
    cases: list[tuple[str, str, tuple[bytes, dict[str, str]], str]] = [
        ("seg-detections", "negative", _binary_request(bytes_input, image, length="-5"), "non-negative integer"),
        ("seg-detections", "not a number", _binary_request(bytes_input, image, length="12abc"), "non-negative"),
        ("seg-detections", "empty", _binary_request(bytes_input, image, length=""), "non-negative integer"),
        ("seg-detections", "past the body", _binary_request(bytes_input, image, length="99999999999"),
         "outside the body"),
        ("seg-detections", "one byte short", _binary_request(bytes_input, image, -1), "not valid JSON"),
        ("seg-detections", "one byte long", _binary_request(bytes_input, image, 1), "not valid JSON"),
        ("seg-detections", "zero", _binary_request(bytes_input, image, length="0"), "not valid JSON"),
        ("seg-detections", "BYTES count", _binary_request(
            [{**bytes_input[0], "shape": [2]}], image), "shape says 2 BYTES elements, data has 1"),
        ("seg-detections", "BYTES past end", _binary_request(
            bytes_input, struct.pack("<I", len(jpeg) + 9) + jpeg), "runs past the end"),
        ("seg-detections", "BYTES truncated length", _binary_request(
            [{**bytes_input[0], "parameters": {"binary_data_size": len(image) + 2}}], image + b"\x01\x00"),
         "truncated BYTES element length"),
        ("seg-detections", "not BYTES", _binary_request(fp32, zeros), "expected BYTES"),
        ("seg", "datatype", _binary_request([{**fp32[0], "datatype": "INT32"}], zeros), "datatype INT32"),
        ("seg", "size vs shape", _binary_request([{**fp32[0], "datatype": "FP16"}], zeros), "needs 798720 bytes"),
        ("seg", "huge shape", _binary_request([{**fp32[0], "shape": [2**40, 2**40]}], zeros), "needs"),
        ("seg", "shape overflowing int64", _binary_request([{**fp32[0], "shape": [2**64, 3]}], zeros), "needs"),
        ("seg", "unclaimed bytes", _binary_request(fp32, zeros + b"\0\0"), "no input claims"),
        ("seg", "no header", (json.dumps({"inputs": fp32}).encode() + zeros, {}), "not valid JSON"),
        ("seg", "binary without header", (json.dumps({"inputs": fp32}).encode(), {}), "no Inference-Header"),
        ("seg", "size is a bool", _binary_request([{**fp32[0], "parameters": {"binary_data_size": True}}], b"\0"),
         "non-negative integer"),
    ]
    for model, what, (body, headers), words in cases:
        r = _post(keyed_server, model, body, headers)
        _assert_clean_4xx(r)
        assert words in r.json()["error"], (what, r.json())
    ok = _post(keyed_server, "seg-detections", *_binary_request(bytes_input, image))
    assert ok.status_code == 200, ok.text


# ----------------------------------------------------------------------------- regressions of the fuzz runs
def _json_infer(srv: Server, model: str, doc: Any, **kw: Any) -> httpx.Response:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return httpx.post(f"{srv.url}/v2/models/{model}/infer", content=body,
                      headers={**srv.headers, "Content-Type": "application/json", **kw.pop("headers", {})},
                      timeout=120, verify=srv.verify, **kw)


def test_regressions_found_by_the_fuzz_runs(keyed_server: Server) -> None:  # noqa: F811
    """Each was a 500 (or a wrong answer) before the fix."""
    srv = keyed_server

    def one(shape: list, datatype: str, data: Any) -> dict:
        return {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}]}

    # numbers out of the datatype's range: numpy's OverflowError was a 500
    for datatype, value in (("INT8", 1000), ("UINT8", -1), ("UINT64", 2**70), ("INT64", -(2**70))):
        r = _json_infer(srv, "seg", one([1], datatype, [value]))
        _assert_clean_4xx(r)
        assert f"out of the range of {datatype}" in r.json()["error"]
    # JSON nested past Python's recursion limit: a RecursionError was a 500
    r = _json_infer(srv, "seg", b"[" * 100_000 + b"]" * 100_000)
    _assert_clean_4xx(r)
    assert "too deeply" in r.json()["error"]
    # a lone surrogate in a name the error repeats: encoding the answer failed (a 500 without the error body)
    r = _json_infer(srv, "seg", b'{"inputs": [{"name": "\\ud800", "shape": [1], "datatype": "FLOAT", "data": [1]}]}')
    _assert_clean_4xx(r)
    assert r.json()["error"].startswith("input '\\ud800': unknown datatype 'FLOAT'")
    r = _json_infer(srv, "seg-detections", b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", '
                                           b'"data": ["\\udc00"]}]}')
    _assert_clean_4xx(r)
    assert "not valid Unicode text" in r.json()["error"]
    # a shape whose product overflows int64 wrapped to 0 elements and reached numpy's reshape
    r = _json_infer(srv, "seg", one([2**32, 2**32], "FP32", []))
    _assert_clean_4xx(r)
    assert r.json()["error"] == f"input 'image': shape [{2**32}, {2**32}] needs {2**64} elements, 'data' has 0"
    # an output's parameters that are not an object: a TypeError when the answer was encoded
    outputs = {**one([1, 3, 320, 416], "FP32", [0.0] * (3 * 320 * 416)), "outputs": [{"name": "labels",
                                                                                       "parameters": 5}]}
    _assert_clean_4xx(_json_infer(srv, "seg", outputs))
    # fields of the wrong JSON type that were accepted: id (a number), parameters (a list or null), data (a scalar)
    for doc, words in ((dict(one([1], "FP32", [1.0]), id=7), "field 'id': expected a string"),
                       (dict(one([1], "FP32", [1.0]), parameters=[]), "field 'parameters': expected an object"),
                       (dict(one([1], "FP32", [1.0]), parameters=None), "field 'parameters': expected an object"),
                       (one([], "FP32", 1.0), "'data' must be a list"),
                       (one([1], "BYTES", "x"), "'data' must be a list")):
        r = _json_infer(srv, "seg", doc)
        _assert_clean_4xx(r)
        assert words in r.json()["error"], (doc, r.json())
    # a 405 (a method a route does not take) lacked its Allow header (RFC 9110)
    r = httpx.request("DELETE", f"{srv.url}/v2/models/seg/infer", headers=srv.headers, verify=srv.verify)
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json() == {"error": "Method Not Allowed"}
    # a gzip body with a bad header length, and the same body that is fine
    tensor = np.zeros((1, 3, 320, 416), np.float32)
    body, headers = _binary_request([{"name": "image", "shape": [1, 3, 320, 416], "datatype": "FP32",
                                      "parameters": {"binary_data_size": tensor.nbytes}}], tensor.tobytes())
    zipped = {"Content-Encoding": "gzip"}
    bad = _post(srv, "seg", gzip.compress(body), {**headers, **zipped, "Inference-Header-Content-Length": "+12"})
    _assert_clean_4xx(bad)
    assert _post(srv, "seg", gzip.compress(body), {**headers, **zipped}).status_code == 200


def test_still_healthy_after_the_fuzzing(keyed_server: Server) -> None:  # noqa: F811
    """Runs last in this module: the server process is alive, ready, and answers a real request correctly."""
    assert keyed_server.proc.poll() is None, keyed_server.logs()
    assert httpx.get(f"{keyed_server.url}/v2/health/ready", verify=keyed_server.verify).json() == {"ready": True}
    photo = coco_images(1)[0]
    r = httpx.post(f"{keyed_server.url}/predict", params={"threshold": 0.1}, headers=keyed_server.headers,
                   files={"image": (photo.name, photo.read_bytes())}, timeout=120, verify=keyed_server.verify)
    assert r.status_code == 200 and len(r.json()["detections"]) >= 3
    metrics = httpx.get(f"{keyed_server.url}/metrics", headers=keyed_server.headers, verify=keyed_server.verify).text
    assert 'isseg_errors_total{kind="server"' not in metrics, "a request failed inside the server"
    assert "Traceback" not in keyed_server.logs(), keyed_server.logs()
