"""``isseg serve`` end to end: a real server process, HTTP from tritonclient, Model API's OVMSAdapter, httpx."""

from __future__ import annotations

import base64
import json
import threading

import cv2
import numpy as np
import pytest

from test_serve_helpers import PRECISION, Server, coco_images, collect_here, server  # noqa: F401 - fixtures

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytestmark = pytest.mark.usefixtures("collect_here")  # tritonclient's clients die in the main thread


@pytest.fixture(scope="module")
def predictor(server: Server):  # noqa: F811
    import isseg

    return isseg.Predictor(server.xml, precision=PRECISION)


def _jpeg(index: int = 0) -> bytes:
    return coco_images(index + 1)[index].read_bytes()


def _rle_to_mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


# ------------------------------------------------------------------------------------------------ health
def test_health_metadata_and_listing(server: Server) -> None:  # noqa: F811
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{server.url}/v2").json()
    assert "binary_tensor_data" in meta["extensions"]
    listed = {m["name"]: m["kind"] for m in httpx.get(f"{server.url}/v2/models").json()["models"]}
    assert listed == {"seg": "contract", "seg-detections": "detections", "tight": "contract",
                      "tight-detections": "detections"}
    seg = httpx.get(f"{server.url}/v2/models/seg").json()
    assert seg["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [1, 3, 320, 416]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in seg["outputs"]] == [
        ("labels", "INT64", [100]), ("boxes", "FP32", [100, 5]), ("masks", "FP32", [100, 28, 28])]
    assert seg["rt_info"]["model_info"]["model_type"] == "MaskRCNN"
    assert seg["rt_info"]["model_info"]["labels"].split()[:2] == ["background", "person"]
    assert json.loads(seg["rt_info"]["isseg"]["class_names"])[0] == "person"
    assert httpx.get(f"{server.url}/v2/models/seg/versions/1").json() == seg
    assert httpx.get(f"{server.url}/v2/models/seg/ready").json()["ready"] is True
    assert httpx.get(f"{server.url}/v2/models/seg/versions/1/ready").status_code == 200
    missing = httpx.get(f"{server.url}/v2/models/seg/versions/7")
    assert missing.status_code == 404 and "no version '7'" in missing.json()["error"]
    page = httpx.get(server.url)
    assert page.status_code == 200 and "<canvas" in page.text


# ------------------------------------------------------------------------------------------- tritonclient
def test_tritonclient_detections_equal_local_predictor(server: Server, predictor) -> None:  # noqa: F811
    tc = pytest.importorskip("tritonclient.http")
    client = tc.InferenceServerClient(server.address)
    assert client.is_server_ready() and client.is_model_ready("seg-detections")
    data = _jpeg(0)
    inp = tc.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([data], dtype=object))  # binary tensor extension
    result = client.infer("seg-detections", [inp], parameters={"threshold": 0.1})
    local = predictor.predict(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), threshold=0.1)
    assert len(local) >= 3, "the test model should find a few objects at 0.1"
    np.testing.assert_array_equal(result.as_numpy("boxes"), local.boxes)
    np.testing.assert_array_equal(result.as_numpy("scores"), local.scores)
    np.testing.assert_array_equal(result.as_numpy("labels"), local.labels)
    assert [n.decode() for n in result.as_numpy("names")] == local.names
    assert list(result.as_numpy("image_size")) == list(local.image_size)
    masks = np.stack([_rle_to_mask(json.loads(m)) for m in result.as_numpy("masks")])
    np.testing.assert_array_equal(masks, local.masks)
    timings = result.get_response()["parameters"]["timings_ms"]
    assert {"decode", "infer", "postprocess"} <= set(timings)

    # gzip-compressed request, two outputs asked for by name, one of them as JSON
    wanted = [tc.InferRequestedOutput("labels", binary_data=False), tc.InferRequestedOutput("scores")]
    small = client.infer("seg-detections", [inp], outputs=wanted, parameters={"threshold": 0.1},
                         request_compression_algorithm="gzip")
    assert [o["name"] for o in small.get_response()["outputs"]] == ["labels", "scores"]
    assert "data" in small.get_output("labels") and "data" not in small.get_output("scores")
    np.testing.assert_array_equal(small.as_numpy("labels"), local.labels)
    np.testing.assert_array_equal(small.as_numpy("scores"), local.scores)
    client.close()

    # JSON tensors (no binary extension): base64 BYTES in, JSON out, the per-image record by name
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(data).decode()]}],
            "outputs": [{"name": "scores"}, {"name": "record"}], "parameters": {"threshold": 0.1}}
    r = httpx.post(f"{server.url}/v2/models/seg-detections/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outs) == {"scores", "record"}
    np.testing.assert_allclose(outs["scores"]["data"], local.scores, rtol=1e-6)
    record = json.loads(outs["record"]["data"][0])
    assert [d["label"] for d in record["detections"]] == list(local.labels)


def test_tritonclient_contract_model_equals_openvino(server: Server, predictor) -> None:  # noqa: F811
    tc = pytest.importorskip("tritonclient.http")
    import openvino as ov

    image = cv2.imread(str(coco_images(1)[0]))
    scale = min(320 / image.shape[0], 416 / image.shape[1])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.zeros((320, 416, 3), np.uint8)
    canvas[:resized.shape[0], :resized.shape[1]] = resized
    tensor = canvas.transpose(2, 0, 1)[None].astype(np.float32)
    client = tc.InferenceServerClient(server.address)
    inp = tc.InferInput("image", list(tensor.shape), "FP32")
    inp.set_data_from_numpy(tensor)
    outputs = [tc.InferRequestedOutput(n, binary_data=True) for n in ("labels", "boxes", "masks")]
    result = client.infer("seg", [inp], outputs=outputs)
    client.close()
    compiled = ov.Core().compile_model(str(server.xml), "CPU", {"INFERENCE_PRECISION_HINT": PRECISION})
    want = compiled({0: tensor})
    for name in ("labels", "boxes", "masks"):
        np.testing.assert_array_equal(result.as_numpy(name), want[compiled.output(name)], err_msg=name)
    assert result.as_numpy("boxes")[0, 4] > 0.1


def test_contract_model_preprocesses_an_image_as_the_predictor(server: Server, predictor) -> None:  # noqa: F811
    """One BGR image [1, h, w, 3] (UINT8, or FP32 as Model API casts it) to the contract model gives exactly what
    OpenVINO gives for the Predictor's own network input (isseg.model.transform's pre-processing)."""
    tc = pytest.importorskip("tritonclient.http")
    import openvino as ov

    image = cv2.imread(str(coco_images(1)[0]))
    compiled = ov.Core().compile_model(str(server.xml), "CPU", {"INFERENCE_PRECISION_HINT": PRECISION})
    want = compiled({0: predictor.preprocess(image)[0]})
    client = tc.InferenceServerClient(server.address)
    outputs = [tc.InferRequestedOutput(n, binary_data=True) for n in ("labels", "boxes", "masks")]
    for dtype, datatype in ((np.uint8, "UINT8"), (np.float32, "FP32")):
        inp = tc.InferInput("image", [1, *image.shape], datatype)
        inp.set_data_from_numpy(image[None].astype(dtype))
        result = client.infer("seg", [inp], outputs=outputs)
        for name in ("labels", "boxes", "masks"):
            np.testing.assert_array_equal(result.as_numpy(name), want[compiled.output(name)], err_msg=name)
        assert result.as_numpy("boxes")[0, 4] > 0.1
    client.close()


def test_model_api_ovms_adapter_unconfigured(server: Server, predictor) -> None:  # noqa: F811
    pytest.importorskip("tritonclient.http")
    from model_api.models import Model

    image = cv2.imread(str(coco_images(1)[0]))
    model = Model.create_model(f"{server.address}/v2/models/seg")  # no configuration: rt_info says it all
    assert type(model).__name__ == "MaskRCNNModel"
    assert model.params.labels[1] == "person"
    model(image)  # the default 0.5 threshold of rt_info: runs end to end
    low = Model.create_model(f"{server.address}/v2/models/seg", configuration={"confidence_threshold": 0.1})
    res = low(image)
    local = predictor.predict(image, threshold=0.1)
    # Model API resizes the image itself (OpenCV uint8): the same objects, within a resize's difference
    assert abs(len(res.scores) - len(local)) <= 1 and len(local) >= 3
    for box, name, score in zip(local.boxes, local.names, local.scores):
        ious = [_iou(box, b) for b in res.bboxes]
        j = int(np.argmax(ious))
        assert ious[j] > 0.85 and res.label_names[j] == name and abs(res.scores[j] - score) < 0.03, (box, name)
    assert res.masks.shape[1:] == image.shape[:2]
    for m in (model, low):
        m.inference_adapter.client.close()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ------------------------------------------------------------------------------------------- /predict
def test_predict_multipart(server: Server, predictor) -> None:  # noqa: F811
    path = coco_images(1)[0]
    r = httpx.post(f"{server.url}/predict", params={"threshold": 0.1},
                   files={"image": (path.name, path.read_bytes(), "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    local = predictor.predict(cv2.imread(str(path)), threshold=0.1)
    assert body["model"] == "seg-detections" and body["file"] == path.name
    assert (body["height"], body["width"]) == local.image_size
    assert [d["name"] for d in body["detections"]] == local.names
    np.testing.assert_allclose([d["box"] for d in body["detections"]], local.boxes, atol=1e-3)
    np.testing.assert_array_equal(_rle_to_mask(body["detections"][0]["mask"]), local.masks[0])
    assert body["timings_ms"]["infer"] > 0
    no_masks = httpx.post(f"{server.url}/predict", params={"threshold": 0.1, "masks": "false"},
                          content=path.read_bytes(), headers={"content-type": "image/jpeg"}, timeout=60).json()
    assert len(no_masks["detections"]) == len(local) and no_masks["detections"][0]["mask"] is None


# ----------------------------------------------------------------------------------------- bad requests
def _err(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]
    for w in words:
        assert w in message, (w, message)


def test_bad_requests_get_clear_4xx_and_server_stays_up(server: Server) -> None:  # noqa: F811
    u = server.url
    _err(httpx.post(f"{u}/predict", files={"image": ("x.jpg", b"this is not a picture")}), 400,
         "not an image")
    _err(httpx.post(f"{u}/predict", files={"other": ("notes.txt", b"")}), 400, "empty")
    _err(httpx.post(f"{u}/predict", json={"a": 1}), 415, "multipart")
    _err(httpx.post(f"{u}/predict", params={"model": "seg"}, files={"image": ("a.jpg", _jpeg())}), 400,
         "takes tensors")
    _err(httpx.post(f"{u}/predict", params={"threshold": 3}, files={"image": ("a.jpg", _jpeg())}), 400,
         "threshold")
    _err(httpx.post(f"{u}/v2/models/nope/infer", json={"inputs": []}), 404, "unknown model 'nope'", "seg")
    _err(httpx.get(f"{u}/v2/models/nope"), 404, "unknown model")
    _err(httpx.post(f"{u}/v2/models/seg/infer", content=b"{not json"), 400, "not valid JSON")
    _err(httpx.post(f"{u}/v2/models/seg/infer", json={"inputs": "x"}), 400, "'inputs'")
    shape = {"inputs": [{"name": "image", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0.0] * 12}]}
    _err(httpx.post(f"{u}/v2/models/seg/infer", json=shape), 400, "shape [1, 3, 2, 2]", "[1, 3, 320, 416]")
    dtype = {"inputs": [{"name": "image", "shape": [1, 3, 320, 416], "datatype": "INT32",
                         "parameters": {"binary_data_size": 4 * 3 * 320 * 416}}]}
    head = json.dumps(dtype).encode()
    r = httpx.post(f"{u}/v2/models/seg/infer", content=head + bytes(4 * 3 * 320 * 416),
                   headers={"Inference-Header-Content-Length": str(len(head))})
    _err(r, 400, "datatype INT32", "FP32")
    _err(httpx.post(f"{u}/v2/models/seg/infer", json={"inputs": [{"name": "pic", "shape": [1], "datatype": "FP32",
                                                                   "data": [1]}]}), 400, "input 'image'")
    _err(httpx.post(f"{u}/v2/models/seg/infer", json={"inputs": [{"name": "image", "shape": [2],
                                                                   "datatype": "FLOAT", "data": [1, 2]}]}),
         400, "unknown datatype 'FLOAT'")
    _err(httpx.post(f"{u}/v2/models/seg/infer", content=head, headers={"Inference-Header-Content-Length": "x"}),
         400, "Inference-Header-Content-Length")
    _err(httpx.post(f"{u}/v2/models/seg/infer", content=head,
                    headers={"Inference-Header-Content-Length": str(len(head) + 50)}), 400, "outside the body")
    _err(httpx.post(f"{u}/v2/models/seg/infer", content=head + b"\0" * 10,
                    headers={"Inference-Header-Content-Length": str(len(head))}), 400, "runs past the end")
    bad_bytes = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                             "parameters": {"binary_data_size": 6}}]}
    h2 = json.dumps(bad_bytes).encode()
    _err(httpx.post(f"{u}/v2/models/seg-detections/infer", content=h2 + b"\xff\xff\xff\x00ab",
                    headers={"Inference-Header-Content-Length": str(len(h2))}), 400, "runs past the end")
    _err(httpx.post(f"{u}/v2/models/seg-detections/infer",
                    json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}),
         400, "not an image")
    _err(httpx.post(f"{u}/v2/models/seg-detections/infer",
                    json={"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1]}]}),
         400, "expected BYTES")
    _err(httpx.post(f"{u}/predict", content=b"\0" * (5 * 1024 * 1024), headers={"content-type": "image/jpeg"}),
         413, "limit")
    huge = cv2.imencode(".png", np.zeros((9000, 6000), np.uint8))[1].tobytes()  # 54 Mpx in a small file
    _err(httpx.post(f"{u}/predict", files={"image": ("big.png", huge)}, timeout=60), 413, "pixels")
    _err(httpx.get(f"{u}/nowhere"), 404, "no such endpoint")
    assert httpx.get(f"{u}/v2/health/ready").status_code == 200
    ok = httpx.post(f"{u}/predict", files={"image": ("a.jpg", _jpeg())}, timeout=60)
    assert ok.status_code == 200


def _decoder_error(data: bytes, source: str) -> str:
    """What isseg's one decoder says about ``data`` named ``source`` (it must refuse it)."""
    from isseg.sources.decode import decode_image

    with pytest.raises(ValueError) as raised:
        decode_image(data, source)
    return str(raised.value)


def test_bad_images_get_the_decoders_one_line(server: Server) -> None:  # noqa: F811
    """A truncated JPEG and a corrupt PNG: /predict names the uploaded file, the v2 detections model its input,
    both with the decoder's own message; the same problem text after the name."""
    whole = _jpeg()
    truncated = whole[:len(whole) // 2]
    png = bytearray(cv2.imencode(".png", cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR))[1])
    png[png.index(b"IDAT") + 20] ^= 0xFF  # inside the compressed data: the chunk's CRC no longer holds
    for filename, data, problem in (("half.jpg", truncated, "truncated JPEG"),
                                    ("broken.png", bytes(png), "corrupt PNG")):
        expected = _decoder_error(data, filename)
        assert expected.startswith(f"{filename}: {problem}"), expected
        r = httpx.post(f"{server.url}/predict", files={"image": (filename, data)}, timeout=60)
        assert r.status_code == 400 and r.json() == {"error": expected}, r.text
        head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": 4 + len(data)}}]}).encode()
        r = httpx.post(f"{server.url}/v2/models/seg-detections/infer",
                       content=head + len(data).to_bytes(4, "little") + data,
                       headers={"Inference-Header-Content-Length": str(len(head))}, timeout=60)
        assert r.status_code == 400 and r.json() == {"error": _decoder_error(data, "image")}, r.text
        assert r.json()["error"].split(": ", 1)[1] == expected.split(": ", 1)[1]
    raw = httpx.post(f"{server.url}/predict", content=truncated, headers={"content-type": "image/jpeg"}, timeout=60)
    assert raw.status_code == 400 and raw.json() == {"error": _decoder_error(truncated, "request body")}
    huge = cv2.imencode(".png", np.zeros((9000, 6000), np.uint8))[1].tobytes()  # 54 Mpx: over the 50 Mpx limit
    r = httpx.post(f"{server.url}/predict", files={"image": ("big.png", huge)}, timeout=60)
    assert r.status_code == 413 and r.json() == {"error": _decoder_error(huge, "big.png")}, r.text


# ------------------------------------------------------------------------------ back-pressure, timeout
def test_full_queue_is_503_with_retry_after(server: Server) -> None:  # noqa: F811
    data = _jpeg()
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        r = httpx.post(f"{server.url}/predict", params={"model": "tight-detections"},
                       files={"image": ("a.jpg", data)}, timeout=120)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 503} and codes.count(200) >= 1 and codes.count(503) >= 1, codes
    busy = next(r for r in results if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'isseg_rejected_total{model="tight-detections"}' in metrics


def test_timeout_is_504_and_the_model_recovers(server: Server) -> None:  # noqa: F811
    tensor = np.zeros((1, 3, 320, 416), np.float32)
    head = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 320, 416], "datatype": "FP32",
                                   "parameters": {"binary_data_size": tensor.nbytes}}]}).encode()
    r = httpx.post(f"{server.url}/v2/models/tight/infer", content=head + tensor.tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(head))}, timeout=60)
    _err(r, 504, "timeout")
    assert httpx.get(f"{server.url}/v2/models/tight/ready").status_code == 200


# ------------------------------------------------------------------------------------------- metrics
def test_metrics(server: Server) -> None:  # noqa: F811
    httpx.post(f"{server.url}/predict", files={"image": ("a.jpg", _jpeg())}, timeout=60)
    text = httpx.get(f"{server.url}/metrics").text
    assert 'isseg_requests_total{code="200",endpoint="predict",model="seg-detections"}' in text
    assert 'isseg_request_latency_seconds_bucket{endpoint="predict",le="0.5",model="seg-detections"}' in text
    assert 'isseg_queue_depth{model="seg-detections"} 0.0' in text
    assert "isseg_inference_seconds_count" in text and "isseg_errors_total" in text
