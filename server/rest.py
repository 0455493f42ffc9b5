"""The KServe v2 REST wire format: JSON inference requests and responses, binary tensors.

Transport-free (bytes and headers in, bytes out); ``server/http.py`` serves it.

- JSON tensors: ``{"name", "shape", "datatype", "data"}`` with ``data`` a flat or nested
  list of numbers (``true`` / ``false`` for BOOL). Values are checked against the datatype
  (no strings, nulls or fractions for integers, integers within range) before the core's
  admission check sees the tensor.
- The binary-tensor extension (Triton's): the body is a JSON header of
  ``Inference-Header-Content-Length`` bytes followed by raw little-endian tensors; an input
  whose ``parameters`` hold ``binary_data_size`` takes that many bytes, in input order.
  Outputs are binary when the request asks (``outputs[].parameters.binary_data``, or the
  request parameter ``binary_data_output``); the response then carries the same header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from ..wire import KSERVE_DTYPES, TO_KSERVE
from . import tensors
from .dataplane import Inference
from .errors import InvalidInputError, shown

HEADER_LENGTH = "Inference-Header-Content-Length"
# the kinds of numpy array (from JSON values) each datatype takes
KINDS = {
    "BOOL": "b",
    "UINT8": "iu",
    "INT32": "iu",
    "INT64": "iu",
    "FP16": "iuf",
    "FP32": "iuf",
    "FP64": "iuf",
}
WHAT = {"b": "true or false", "iu": "integers", "iuf": "numbers"}


@dataclass
class InferRequest:
    """An inference request as the data plane takes it."""

    inputs: dict[str, tensors.WireTensor]
    outputs: list[str] = field(default_factory=list)
    binary: dict[str, bool] = field(default_factory=dict)  # output name -> binary
    binary_default: bool = False
    runtime: str = "auto"
    id: str | None = None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"Expected {what} to be a JSON object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def json_body(data: bytes | memoryview, what: str = "the request body") -> Any:
    """Parsed JSON; INVALID_ARGUMENT (without echoing the body) when it is not JSON."""
    try:
        return json.loads(bytes(data))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"Expected {what} to be JSON: {exc.msg} at byte {exc.pos}"
        ) from None
    except ValueError:  # not UTF-8
        raise InvalidInputError(f"Expected {what} to be JSON in UTF-8") from None


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """An inference request from its body and ``Inference-Header-Content-Length``."""
    size = len(body)
    if header_length is None:
        header, binary = memoryview(body), memoryview(b"")
    else:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= size:
            raise InvalidInputError(
                f"Expected {HEADER_LENGTH} to be a byte count between 0 and the body's "
                f"length ({size}), got {shown(header_length)!r}"
            )
        view = memoryview(body)
        header, binary = view[:n], view[n:]
    doc = _object(json_body(header, "the inference request"), "the inference request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInputError(f"Expected `inputs` to be a list, got {_kind(inputs)}")
    params = _object(doc.get("parameters", {}), "`parameters`")
    runtime = params.get("runtime", "auto")
    if not isinstance(runtime, str):
        raise InvalidInputError(
            f"Expected the parameter `runtime` to be a string, got {_kind(runtime)}"
        )
    request = InferRequest(
        inputs={},
        runtime=runtime,
        binary_default=params.get("binary_data_output") is True,
        id=str(doc["id"]) if isinstance(doc.get("id"), str) else None,
    )
    offset = 0
    for i, item in enumerate(inputs):
        t = _object(item, f"input {i}")
        name = t.get("name")
        if not isinstance(name, str):
            raise InvalidInputError(
                f"Expected input {i} to have a string `name`, got {_kind(name)}"
            )
        if name in request.inputs:
            raise InvalidInputError(f"Input `{shown(name)}` appears more than once")
        datatype = t.get("datatype")
        dtype = KSERVE_DTYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise InvalidInputError(
                f"Expected `{shown(name)}` to have a datatype in {sorted(KSERVE_DTYPES)}, "
                f"got {shown(datatype)!r}"
            )
        shape = _shape(name, t.get("shape"))
        tparams = _object(t.get("parameters", {}), f"the parameters of `{shown(name)}`")
        nbytes = tparams.get("binary_data_size")
        if nbytes is not None:
            if "data" in t:
                raise InvalidInputError(
                    f"Input `{shown(name)}` has binary data and JSON `data`; send one or the other"
                )
            if type(nbytes) is not int or nbytes < 0:
                raise InvalidInputError(
                    f"Expected `binary_data_size` of `{shown(name)}` to be a byte count, "
                    f"got {shown(nbytes)!r}"
                )
            if offset + nbytes > len(binary):
                raise InvalidInputError(
                    f"Expected {nbytes} bytes of binary data for `{shown(name)}` after the "
                    f"JSON header, {len(binary) - offset} left"
                )
            data = bytes(binary[offset : offset + nbytes])
            offset += nbytes
            request.inputs[name] = tensors.WireTensor(name, dtype, shape, data)
        elif "data" in t:
            values = _values(name, str(datatype), t["data"])
            request.inputs[name] = tensors.WireTensor(name, dtype, shape, values=values)
        else:
            raise InvalidInputError(
                f"Expected `{shown(name)}` to carry `data` or a `binary_data_size` parameter"
            )
    if offset != len(binary):
        raise InvalidInputError(
            f"Expected {offset} bytes of binary data after the JSON header (the inputs' "
            f"binary_data_size), got {len(binary)}"
        )
    _outputs(doc.get("outputs", []), request)
    return request


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or any(type(d) is not int for d in shape):
        raise InvalidInputError(f"Expected the shape of `{shown(name)}` to be a list of integers")
    return tuple(shape)


def _values(name: str, datatype: str, data: Any) -> Sequence[Any]:
    """JSON values as a flat array of the right kind (cast to the dtype by the core)."""
    kinds = KINDS[datatype]
    problem = f"Expected the data of `{shown(name)}` ({datatype}) to be a list of {WHAT[kinds]}"
    if not isinstance(data, list):
        raise InvalidInputError(f"{problem}, got {_kind(data)}")
    try:
        array = np.array(data)
    except (ValueError, OverflowError):  # ragged nesting, integers past 64 bits
        raise InvalidInputError(f"{problem} (nested lists of equal lengths)") from None
    flat = array.reshape(-1)
    if flat.size == 0:
        return cast(Sequence[Any], flat)
    if array.dtype.kind not in kinds:
        got = {"f": "fractions", "b": "booleans", "U": "strings", "O": "nulls or objects"}
        raise InvalidInputError(f"{problem}, got {got.get(array.dtype.kind, 'other values')}")
    if "f" not in kinds and "u" in kinds:
        info = np.iinfo(np.dtype(KSERVE_DTYPES[datatype]))
        low, high = int(flat.min()), int(flat.max())
        if low < info.min or high > info.max:
            raise InvalidInputError(
                f"{problem} within [{info.min}, {info.max}], got values in [{low}, {high}]"
            )
    return cast(Sequence[Any], flat)


def _outputs(outputs: Any, request: InferRequest) -> None:
    if not isinstance(outputs, list):
        raise InvalidInputError(f"Expected `outputs` to be a list, got {_kind(outputs)}")
    for i, item in enumerate(outputs):
        o = _object(item, f"output {i}")
        name = o.get("name")
        if not isinstance(name, str):
            raise InvalidInputError(
                f"Expected output {i} to have a string `name`, got {_kind(name)}"
            )
        oparams = _object(o.get("parameters", {}), f"the parameters of output `{shown(name)}`")
        request.outputs.append(name)
        if "binary_data" in oparams:
            request.binary[name] = oparams["binary_data"] is True


def encode_infer(done: Inference, request: InferRequest) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    outputs, blobs = [], []
    for name in done.outputs:
        array = done.result.outputs[name]
        entry: dict[str, Any] = {
            "name": name,
            "datatype": TO_KSERVE[tensors.dtype_name(array.dtype)],
            "shape": list(array.shape),
        }
        if request.binary.get(name, request.binary_default):
            blob = tensors.to_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": done.model.name,
        "model_version": done.version,
        "parameters": {"runtime": done.result.runtime, "device": done.result.device},
        "outputs": outputs,
    }
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def message_dict(message: Message) -> dict[str, Any]:
    """A protobuf message as Triton's HTTP API writes it: field names kept, 64-bit
    integers as JSON numbers (protobuf's JSON mapping would quote them)."""
    doc = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return cast(dict[str, Any], _numbers(message.DESCRIPTOR, doc))


INT64 = {
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_FIXED64,
    descriptor.FieldDescriptor.TYPE_SFIXED64,
}


def _numbers(desc: descriptor.Descriptor, doc: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key, value in doc.items():
        f = desc.fields_by_name.get(key)
        if f is None:
            continue
        if f.type in INT64:
            out[key] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif f.message_type is not None:
            sub = f.message_type
            if sub.GetOptions().map_entry:
                inner = sub.fields_by_name["value"]
                if inner.message_type is not None:
                    out[key] = {k: _numbers(inner.message_type, v) for k, v in value.items()}
                elif inner.type in INT64:
                    out[key] = {k: int(v) for k, v in value.items()}
            elif isinstance(value, list):
                out[key] = [_numbers(sub, v) for v in value]
            elif isinstance(value, dict):
                out[key] = _numbers(sub, value)
    return out
