"""Bad requests for both APIs, each with the statuses it may get: the fuzz suite's oracle.

A :class:`Fuzzer` starts from a valid request for one of the served models and applies one
mutation (drop or add an input, another dtype, a random shape, cut bytes, garbage bytes,
flipped bits, long or control-character names, data in two places, ...). Each :class:`Case`
carries the method, the serialized message(s) and the set of status codes the mutation
allows: INTERNAL and UNKNOWN are never in it, and a status message must fit in 1 KB.
``tests/server/test_fuzz.py`` draws cases with hypothesis; ``bench/fuzz.py`` draws
thousands with a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from cvscore.v1 import scoring_pb2 as pb
from cvscore.wire import DTYPE_TO_PB as PB_DTYPES
from cvscore.wire import TO_KSERVE as KSERVE_DTYPES

SCORE = "/cvscore.v1.Scoring/Score"
EVALUATE = "/cvscore.v1.Scoring/Evaluate"
INFER = "/inference.GRPCInferenceService/ModelInfer"
MAX_MESSAGE = 1024

FLOATS = {"float16", "float32", "float64"}
BAD = frozenset({"INVALID_ARGUMENT"})
SIZED = frozenset({"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"})
# what a message that still parses after random damage may get: anything but a fault
PARSED = frozenset(
    {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
)


@dataclass(frozen=True)
class Case:
    api: str  # "v1" or "kserve"
    mutation: str
    method: str
    payloads: tuple[bytes, ...]  # one for unary methods, several for Evaluate
    allowed: frozenset[str]

    @property
    def streaming(self) -> bool:
        return self.method == EVALUATE


@dataclass
class Model:
    """A served model: its inputs' canonical dtypes and a valid sample of each."""

    name: str
    inputs: dict[str, np.ndarray]
    runtimes: tuple[str, ...] = ("onnx", "torchscript")
    outputs: tuple[str, ...] = field(default=("score",))


def send(channel: grpc.Channel, case: Case, timeout: float = 30.0) -> tuple[str, str]:
    """The status code name and message the server answers ``case`` with."""
    try:
        if case.streaming:
            channel.stream_unary(case.method)(iter(case.payloads), timeout=timeout)
        else:
            channel.unary_unary(case.method)(case.payloads[0], timeout=timeout)
    except grpc.RpcError as error:
        return error.code().name, error.details() or ""
    return "OK", ""


def _name(rng: random.Random) -> str:
    pool = ["", "x", "\n", "\x00", "../l1", "é" * 3, "m" * 2000, "a\r\nINFO forged"]
    if rng.random() < 0.5:
        return rng.choice(pool)
    alphabet = "abc_-.\t\n\x1b/"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))


def _dims(rng: random.Random) -> list[int]:
    choices = [0, 1, 2, 3, 4, 7, 64, 2**31 - 1, 2**31, 2**40, 2**62, -1, -(2**40)]
    return [rng.choice(choices) for _ in range(rng.randint(0, 18))]


class Fuzzer:
    """Cases for ``models``; ``rng`` decides everything, so a seed replays a case."""

    def __init__(self, models: Sequence[Model]) -> None:
        self.models = list(models)
        self.v1: dict[str, Callable[[random.Random, Model], Case]] = {
            "unknown metric": self._v1_unknown_metric,
            "missing input": self._v1_missing_input,
            "extra input": self._v1_extra_input,
            "duplicate input": self._v1_duplicate,
            "other dtype": self._v1_dtype,
            "random shape": self._v1_shape,
            "cut or padded bytes": self._v1_bytes,
            "runtime enum": self._v1_runtime,
            "reduction enum": self._v1_reduction,
            "garbage": self._garbage(SCORE, pb.ScoreRequest, "v1"),
            "flipped bits": self._flipped(SCORE, pb.ScoreRequest, "v1"),
            "bad stream message": self._v1_stream,
        }
        self.kserve: dict[str, Callable[[random.Random, Model], Case]] = {
            "unknown model": self._k_unknown_model,
            "other datatype": self._k_datatype,
            "raw and contents": self._k_both,
            "typed count": self._k_typed_count,
            "raw count": self._k_raw_count,
            "random shape": self._k_shape,
            "runtime parameter": self._k_runtime,
            "unknown output": self._k_output,
            "garbage": self._garbage(INFER, service_pb2.ModelInferRequest, "kserve"),
            "flipped bits": self._flipped(INFER, service_pb2.ModelInferRequest, "kserve"),
        }

    def mutations(self, api: str) -> list[str]:
        return sorted(self.v1 if api == "v1" else self.kserve)

    def case(self, api: str, mutation: str, seed: int) -> Case:
        rng = random.Random(seed)
        model = rng.choice(self.models)
        table = self.v1 if api == "v1" else self.kserve
        return table[mutation](rng, model)

    def good(self, api: str, model: Model) -> Case:
        if api == "v1":
            return self._v1(model, "good", self._tensors(model.inputs), {"OK"})
        return self._k(model, "good", self._infer(model, model.inputs), {"OK"})

    # -- cvscore.v1 -------------------------------------------------------------------------
    @staticmethod
    def _tensors(arrays: Mapping[str, np.ndarray]) -> list[pb.Tensor]:
        return [
            pb.Tensor(name=k, dtype=PB_DTYPES[str(v.dtype)], shape=list(v.shape), data=v.tobytes())
            for k, v in arrays.items()
        ]

    @staticmethod
    def _v1(
        model: Model, mutation: str, tensors: list[pb.Tensor], allowed: set[str], **fields
    ) -> Case:
        fields.setdefault("metric", model.name)
        request = pb.ScoreRequest(inputs=tensors, **fields)
        return Case("v1", mutation, SCORE, (request.SerializeToString(),), frozenset(allowed))

    def _v1_unknown_metric(self, rng: random.Random, model: Model) -> Case:
        name = _name(rng)
        served = {m.name for m in self.models}
        allowed = {"NOT_FOUND"} if name not in served else {"OK"}
        return self._v1(model, "unknown metric", self._tensors(model.inputs), allowed, metric=name)

    def _v1_missing_input(self, rng: random.Random, model: Model) -> Case:
        keep = dict(model.inputs)
        keep.pop(rng.choice(list(keep)))
        return self._v1(model, "missing input", self._tensors(keep), set(BAD))

    def _v1_extra_input(self, rng: random.Random, model: Model) -> Case:
        extra = dict(model.inputs)
        name = _name(rng) or "extra"
        allowed = set(BAD)
        if name in extra:
            allowed.add("OK")
        extra[name] = np.zeros(3, np.float32)
        return self._v1(model, "extra input", self._tensors(extra), allowed)

    def _v1_duplicate(self, rng: random.Random, model: Model) -> Case:
        tensors = self._tensors(model.inputs)
        tensors.append(rng.choice(tensors))
        return self._v1(model, "duplicate input", tensors, set(BAD))

    def _v1_dtype(self, rng: random.Random, model: Model) -> Case:
        name = rng.choice(list(model.inputs))
        want = str(model.inputs[name].dtype)
        code = rng.choice([0, 8, 99, -1, *PB_DTYPES.values()])
        tensors = self._tensors(model.inputs)
        t = next(t for t in tensors if t.name == name)
        t.dtype = code
        got = next((k for k, v in PB_DTYPES.items() if v == code), "")
        allowed = set(BAD)
        if got == want or (got in FLOATS and want in FLOATS):
            allowed = set(SIZED)  # the byte length may or may not fit the new itemsize
        return self._v1(model, "other dtype", tensors, allowed)

    def _v1_shape(self, rng: random.Random, model: Model) -> Case:
        name = rng.choice(list(model.inputs))
        tensors = self._tensors(model.inputs)
        t = next(t for t in tensors if t.name == name)
        dims = _dims(rng)
        del t.shape[:]
        t.shape.extend(dims)
        array = model.inputs[name]
        fits = (
            all(0 <= d < 2**31 for d in dims)
            and len(dims) <= 16
            and math.prod(dims) * array.itemsize == array.nbytes
        )
        return self._v1(model, "random shape", tensors, set(SIZED) if fits else set(BAD))

    def _v1_bytes(self, rng: random.Random, model: Model) -> Case:
        tensors = self._tensors(model.inputs)
        t = rng.choice(tensors)
        cut = rng.choice([-1, -3, 1, 5, -len(t.data)])
        t.data = t.data[:cut] if cut < 0 else t.data + b"\x00" * cut
        return self._v1(model, "cut or padded bytes", tensors, set(BAD))

    def _v1_runtime(self, rng: random.Random, model: Model) -> Case:
        value = rng.choice([1, 2, 3, 4, 42, -5, 2**30])
        names = {1: "torchscript", 2: "onnx", 3: "torch_export"}
        allowed = {"INVALID_ARGUMENT"}
        if value in names:
            allowed = {"OK"} if names[value] in model.runtimes else {"FAILED_PRECONDITION"}
        return self._v1(model, "runtime enum", self._tensors(model.inputs), allowed, runtime=value)

    def _v1_reduction(self, rng: random.Random, model: Model) -> Case:
        value = rng.choice([4, 5, 42, -1, 2**30])
        return self._v1(
            model, "reduction enum", self._tensors(model.inputs), set(BAD), reduction=value
        )

    def _v1_stream(self, rng: random.Random, model: Model) -> Case:
        first = pb.EvaluateRequest(metric=model.name, inputs=self._tensors(model.inputs))
        bad = rng.choice(
            [
                b"\xff\xff\xff\xff",
                pb.EvaluateRequest(metric=_name(rng) + "?").SerializeToString(),
                pb.EvaluateRequest(
                    inputs=self._tensors({"preds": np.zeros((2, 3), np.float32)})
                ).SerializeToString(),
            ]
        )
        payloads = (first.SerializeToString(), bad)
        return Case("v1", "bad stream message", EVALUATE, payloads, BAD)

    # -- KServe v2 --------------------------------------------------------------------------
    @staticmethod
    def _infer(model: Model, arrays: Mapping[str, np.ndarray]) -> service_pb2.ModelInferRequest:
        request = service_pb2.ModelInferRequest(model_name=model.name)
        for k, v in arrays.items():
            request.inputs.add(name=k, datatype=KSERVE_DTYPES[str(v.dtype)], shape=list(v.shape))
            request.raw_input_contents.append(v.tobytes())
        return request

    @staticmethod
    def _k(model: Model, mutation: str, request: object, allowed: set[str]) -> Case:
        data = request.SerializeToString()  # type: ignore[attr-defined]
        return Case("kserve", mutation, INFER, (data,), frozenset(allowed))

    def _k_unknown_model(self, rng: random.Random, model: Model) -> Case:
        request = self._infer(model, model.inputs)
        if rng.random() < 0.5:
            request.model_name = _name(rng)
            allowed = {"OK"} if request.model_name in {m.name for m in self.models} else set()
        else:
            request.model_version = rng.choice(["2", "0", "-1", _name(rng)])
            allowed = {"OK"} if request.model_version in ("", "1") else set()
        return self._k(model, "unknown model", request, allowed or {"NOT_FOUND"})

    def _k_datatype(self, rng: random.Random, model: Model) -> Case:
        request = self._infer(model, model.inputs)
        t = rng.choice(request.inputs)
        want = KSERVE_DTYPES[str(model.inputs[t.name].dtype)]
        t.datatype = rng.choice([*KSERVE_DTYPES.values(), "BYTES", "fp32", "", _name(rng)])
        allowed = {"OK"} if t.datatype == want else set(BAD)
        return self._k(model, "other datatype", request, allowed)

    def _k_both(self, rng: random.Random, model: Model) -> Case:
        request = self._infer(model, model.inputs)
        t = rng.choice(request.inputs)
        t.contents.fp32_contents.extend([1.0, 2.0])
        return self._k(model, "raw and contents", request, set(BAD))

    def _k_typed_count(self, rng: random.Random, model: Model) -> Case:
        request = service_pb2.ModelInferRequest(model_name=model.name)
        fields = {"FP32": "fp32_contents", "INT64": "int64_contents", "FP64": "fp64_contents"}
        for k, v in model.inputs.items():
            datatype = KSERVE_DTYPES[str(v.dtype)]
            t = request.inputs.add(name=k, datatype=datatype, shape=list(v.shape))
            getattr(t.contents, fields[datatype]).extend(v.ravel().tolist())
        t = rng.choice(request.inputs)
        values = getattr(t.contents, fields[t.datatype])
        if rng.random() < 0.5 and len(values):
            del values[-1]
        else:
            values.append(values[0] if len(values) else 0)
        return self._k(model, "typed count", request, set(BAD))

    def _k_raw_count(self, rng: random.Random, model: Model) -> Case:
        request = self._infer(model, model.inputs)
        if rng.random() < 0.5:
            del request.raw_input_contents[-1]
        else:
            request.raw_input_contents.append(b"\x00" * 4)
        return self._k(model, "raw count", request, set(BAD))

    def _k_shape(self, rng: random.Random, model: Model) -> Case:
        request = self._infer(model, model.inputs)
        i = rng.randrange(len(request.inputs))
        dims = _dims(rng)
        del request.inputs[i].shape[:]
        request.inputs[i].shape.extend(dims)
        array = model.inputs[request.inputs[i].name]
        fits = (
            all(0 <= d < 2**31 for d in dims)
            and len(dims) <= 16
            and math.prod(dims) * array.itemsize == array.nbytes
        )
        return self._k(model, "random shape", request, set(SIZED) if fits else set(BAD))

    def _k_runtime(self, rng: random.Random, model: Model) -> Case:
        request = self._infer(model, model.inputs)
        value = rng.choice(["onnx", "torchscript", "torch_export", "auto", "", _name(rng)])
        request.parameters["runtime"].string_param = value
        if value in ("", "auto") or value in model.runtimes:
            allowed = {"OK"}
        elif value == "torch_export":
            allowed = {"FAILED_PRECONDITION"}
        else:
            allowed = set(BAD)
        return self._k(model, "runtime parameter", request, allowed)

    def _k_output(self, rng: random.Random, model: Model) -> Case:
        request = self._infer(model, model.inputs)
        name = _name(rng)
        request.outputs.add(name=name)
        allowed = {"OK"} if name in model.outputs else set(BAD)
        return self._k(model, "unknown output", request, allowed)

    # -- both -------------------------------------------------------------------------------
    def _garbage(self, method: str, message: type, api: str) -> Callable[..., Case]:
        def make(rng: random.Random, model: Model) -> Case:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
            return Case(api, "garbage", method, (data,), _parsed(message, data))

        return make

    def _flipped(self, method: str, message: type, api: str) -> Callable[..., Case]:
        def make(rng: random.Random, model: Model) -> Case:
            good = self.good(api, model).payloads[0]
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return Case(api, "flipped bits", method, (bytes(data),), _parsed(message, bytes(data)))

        return make


def _parsed(message: type, data: bytes) -> frozenset[str]:
    """BAD when the bytes do not parse as ``message``; else anything but a fault."""
    try:
        message.FromString(data)  # type: ignore[attr-defined]
    except DecodeError:
        return BAD
    return PARSED
