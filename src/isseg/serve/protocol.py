"""KServe v2 Open Inference Protocol tensors: JSON and the binary-tensor extension, as tritonclient sends them.

A request body is either plain JSON or, with the ``Inference-Header-Content-Length: L`` header, L bytes of JSON
followed by the raw data of every input whose ``parameters.binary_data_size`` is set, in input order. BYTES
tensors in binary form are a 4-byte little-endian length before each element. Outputs come back binary when the
request asks for it (``parameters.binary_data_output`` or an output's ``parameters.binary_data``).

Everything wrong with a request raises :class:`ProtocolError` with the HTTP status and a message that names the
field, so the server can answer a clear 4xx instead of failing.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "inference-header-content-length"
_DIGITS = re.compile(r"^[0-9]{1,18}$")

# v2 datatype -> numpy dtype (BYTES is an object array of bytes)
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
_NUMPY_TO_V2 = {np.dtype(v): k for k, v in DATATYPES.items() if k != "BYTES"}


class ProtocolError(Exception):
    """A request the server refuses: ``status`` (4xx/5xx) and one line saying what was wrong."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    inputs: dict[str, Tensor]
    outputs: list[dict[str, Any]] | None  # requested outputs (None: all)
    parameters: dict[str, Any]
    id: str | None = None

    def wants_binary(self, name: str, request_level: bool = True) -> bool:
        """Whether output ``name`` goes back as binary data: its own ``binary_data`` first, then (when
        ``request_level``) the request's ``binary_data_output``."""
        for out in self.outputs or []:
            if out.get("name") == name and "binary_data" in (out.get("parameters") or {}):
                return bool(out["parameters"]["binary_data"])
        return request_level and bool(self.parameters.get("binary_data_output", False))

    def only_input(self, name: str, model: str) -> Tensor:
        """The input ``name`` of a request to a model with that one input (400 when it is missing or others
        come with it)."""
        if name not in self.inputs:
            raise ProtocolError(400, f"model '{model}' has input '{name}'; the request has "
                                     f"{', '.join(repr(k) for k in self.inputs)}")
        extra = [k for k in self.inputs if k != name]
        if extra:
            raise ProtocolError(400, f"model '{model}' has no input {extra[0]!r} (its only input is '{name}')")
        return self.inputs[name]


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == np.object_:
        return "BYTES"
    try:
        return _NUMPY_TO_V2[array.dtype]
    except KeyError:
        raise TypeError(f"no v2 datatype for numpy dtype {array.dtype}") from None


# ------------------------------------------------------------------------------------------------ BYTES
def serialize_bytes(elements: np.ndarray) -> bytes:
    """BYTES tensor -> length-prefixed binary form."""
    parts = []
    for item in elements.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(raw: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """Length-prefixed binary form -> object array of ``count`` bytes elements."""
    out: list[bytes] = []
    view = memoryview(raw)
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise ProtocolError(400, f"input '{name}': truncated BYTES element length at byte {pos}")
        (n,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + n > len(view):
            raise ProtocolError(400, f"input '{name}': BYTES element of {n} bytes runs past the end of its data")
        out.append(bytes(view[pos:pos + n]))
        pos += n
    if len(out) != count:
        raise ProtocolError(400, f"input '{name}': shape says {count} BYTES elements, data has {len(out)}")
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


# --------------------------------------------------------------------------------------------- requests
def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise ProtocolError(400, f"input '{name}': 'shape' must be a list of non-negative integers, got "
                                 f"{value!r:.200}")
    return value


def _json_data(data: Any, datatype: str, shape: list[int], name: str, params: dict[str, Any]) -> np.ndarray:
    count = math.prod(shape)  # exact: numpy's product of a huge shape overflows
    if datatype == "BYTES":
        try:
            flat = np.array(data if isinstance(data, list) else [data], dtype=object).reshape(-1)
        except ValueError:  # nested deeper than numpy's 64 dimensions
            raise ProtocolError(400, f"input '{name}': 'data' is not a list of strings") from None
        if flat.size != count:
            raise ProtocolError(400, f"input '{name}': shape {shape} needs {count} elements, 'data' has {flat.size}")
        b64 = str(params.get("content_type", "")).lower() == "base64"
        items = []
        for el in flat:
            if not isinstance(el, str):
                raise ProtocolError(400, f"input '{name}': BYTES elements in JSON must be strings")
            try:
                items.append(base64.b64decode(el, validate=True) if b64 else el.encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800")
                raise ProtocolError(400, f"input '{name}': an element is not valid Unicode text") from None
            except ValueError:
                raise ProtocolError(400, f"input '{name}': an element is not valid base64") from None
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    try:
        arr = np.asarray(data, dtype=DATATYPES[datatype])
    except (ValueError, TypeError):
        raise ProtocolError(400, f"input '{name}': 'data' is not a list of {datatype} numbers") from None
    except OverflowError:  # e.g. 1000 as INT8, -1 as UINT8
        raise ProtocolError(400, f"input '{name}': a value of 'data' is out of the range of {datatype}") from None
    if arr.size != count:
        raise ProtocolError(400, f"input '{name}': shape {shape} needs {count} elements, 'data' has {arr.size}")
    return arr.reshape(shape)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """-> (the JSON part, the binary part) of a body, by the Inference-Header-Content-Length header."""
    if header_length is None:
        return body, memoryview(b"")
    if not _DIGITS.match(header_length):
        raise ProtocolError(400, f"header Inference-Header-Content-Length: expected a non-negative integer, got "
                                 f"{header_length[:40]!r}")
    json_len = int(header_length)
    if json_len > len(body):
        raise ProtocolError(400, f"header Inference-Header-Content-Length: {json_len} is outside the body of "
                                 f"{len(body)} bytes")
    return body[:json_len], memoryview(body)[json_len:]


def _object(value: Any, where: str) -> dict[str, Any]:
    """An optional JSON object field (read with a default of {} when absent; null is not an object)."""
    if not isinstance(value, dict):
        raise ProtocolError(400, f"{where}: expected an object")
    return value


def _binary_data(name: str, datatype: str, shape: list[int], size: Any, binary: memoryview, offset: int,
                 header_given: bool) -> np.ndarray:
    """The ``size`` bytes of input ``name`` at ``offset`` of the binary part, as its array."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(400, f"input '{name}': binary_data_size must be a non-negative integer")
    if not header_given:
        raise ProtocolError(400, f"input '{name}' has binary_data_size but the request has no "
                                 "Inference-Header-Content-Length header")
    if offset + size > len(binary):
        raise ProtocolError(400, f"input '{name}': binary_data_size {size} runs past the end of the body "
                                 f"({len(binary) - offset} bytes left)")
    chunk = binary[offset:offset + size]
    count = math.prod(shape)
    if datatype == "BYTES":
        return deserialize_bytes(chunk, count, name).reshape(shape)
    itemsize = np.dtype(DATATYPES[datatype]).itemsize
    if size != count * itemsize:
        raise ProtocolError(400, f"input '{name}': shape {shape} of {datatype} needs {count * itemsize} bytes, "
                                 f"binary_data_size is {size}")
    return np.frombuffer(chunk, dtype=DATATYPES[datatype]).reshape(shape)


def _parse_input(i: int, item: Any, binary: memoryview, offset: int, header_given: bool) -> tuple[Tensor, int]:
    """``inputs[i]`` -> (its tensor, the offset of the next binary input)."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ProtocolError(400, f"inputs[{i}]: expected an object with 'name', 'shape', 'datatype'")
    name = item["name"]
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(400, f"input '{name}': unknown datatype {str(datatype)[:40]!r}; expected one of "
                                 f"{', '.join(DATATYPES)}")
    shape = _shape(item.get("shape"), name)
    iparams = _object(item.get("parameters", {}), f"input '{name}': 'parameters'")
    size = iparams.get("binary_data_size")
    if size is not None:
        data = _binary_data(name, datatype, shape, size, binary, offset, header_given)
        offset += size
    elif "data" in item:
        if not isinstance(item["data"], list):
            raise ProtocolError(400, f"input '{name}': 'data' must be a list (flat or nested) of the elements")
        data = _json_data(item["data"], datatype, shape, name, iparams)
    else:
        raise ProtocolError(400, f"input '{name}': neither 'data' nor parameters.binary_data_size")
    return Tensor(name, datatype, shape, data, iparams), offset


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The inputs of a v2 infer request body (JSON or JSON + binary tensors)."""
    head, binary = _split_body(body, header_length)
    where = "the JSON header (first Inference-Header-Content-Length bytes)" if header_length else "the body"
    try:
        doc = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(400, f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(400, f"{where} nests JSON arrays or objects too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError(400, "the request must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError(400, "field 'inputs': expected a non-empty list of tensors")
    params = _object(doc.get("parameters", {}), "field 'parameters'")
    inputs: dict[str, Tensor] = {}
    offset = 0
    for i, item in enumerate(raw_inputs):
        tensor, offset = _parse_input(i, item, binary, offset, header_length is not None)
        if tensor.name in inputs:
            raise ProtocolError(400, f"input '{tensor.name}' appears twice")
        inputs[tensor.name] = tensor
    if offset != len(binary):
        raise ProtocolError(400, f"the body has {len(binary) - offset} bytes of binary data that no input claims")
    outputs = doc.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("parameters", {}), dict)
            for o in outputs)):
        raise ProtocolError(400, "field 'outputs': expected a list of objects with a 'name' (and 'parameters', an "
                                 "object)")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError(400, "field 'id': expected a string")
    return InferRequest(inputs, outputs, params, rid)


# -------------------------------------------------------------------------------------------- responses
def encode_infer_response(model: str, version: str, outputs: dict[str, np.ndarray], request: InferRequest,
                          parameters: dict[str, Any] | None = None, request_level_binary: bool = True,
                          default_outputs: Sequence[str] | None = None) -> tuple[bytes, dict[str, str]]:
    """-> (body, headers): JSON only, or JSON + binary outputs with Inference-Header-Content-Length.

    ``request_level_binary=False`` sends binary only for outputs that ask for it by name (see
    ``ContractModel.request_level_binary``); ``default_outputs``: what a request that names none gets."""
    wanted = [o["name"] for o in request.outputs] if request.outputs else list(default_outputs or outputs)
    unknown = [n for n in wanted if n not in outputs]
    if unknown:
        raise ProtocolError(400, f"unknown output {unknown[0]!r}; the model has {', '.join(outputs)}")
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in wanted:
        arr = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(arr), "shape": list(arr.shape)}
        if request.wants_binary(name, request_level_binary):
            blob = serialize_bytes(arr) if arr.dtype == np.object_ else np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif arr.dtype == np.object_:
            entry["data"] = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                             for x in arr.reshape(-1)]
        else:
            entry["data"] = arr.reshape(-1).tolist()
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id is not None:
        doc["id"] = request.id
    if parameters:
        doc["parameters"] = parameters
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
