"""The Open Inference Protocol (KServe v2) data plane, transport-free.

What ``server/kserve.py`` (gRPC) and ``server/http.py`` (HTTP/REST) both answer with:
health, metadata, configuration, the repository index, model control and inference, as
plain values. The two front ends only convert their messages to and from these, so a
metric scores through the same core, the same admission check and the same batcher
whichever transport carried it. (kserve's ``DataPlane`` has the same role.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message

from .. import __version__
from ..exporters.repository import CONFIG
from ..wire import TO_KSERVE, TRITON_DTYPES
from . import tensors
from .control import ModelControl
from .core import Model, ScoreResult, ScoringCore
from .errors import InvalidInputError, NotFoundError, shown
from .shm import SharedMemoryRegistry

EXTENSIONS = (
    "model_configuration",
    "parameters",
    "model_repository",
    "binary_tensor_data",
    "system_shared_memory",
)
# Extensions served over gRPC only (KServe HTTP has no shared memory routes here yet).
GRPC_ONLY = frozenset({"system_shared_memory"})
PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "torch_export": "torch_export",
}


@dataclass(frozen=True)
class Inference:
    """One answered inference request: the outputs asked for, in the order asked."""

    model: Model
    result: ScoreResult
    outputs: list[str]

    @property
    def version(self) -> str:
        return str(self.model.signature.version)


class DataPlane:
    """The protocol's answers over one core; ``messages`` supplies ``inference.*`` classes."""

    def __init__(
        self,
        core: ScoringCore,
        control: ModelControl,
        messages: Any,
        settings: Mapping[str, str] | None = None,
        shm: SharedMemoryRegistry | None = None,
    ) -> None:
        self.core = core
        self.control = control
        self.m = messages
        self.settings = dict(settings or {})
        # system shared memory regions, shared with cvscore.v1 (closed by the server's stop)
        self.shm = shm if shm is not None else SharedMemoryRegistry()

    # -- health ---------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.core.ready and not self.core.closing

    def model(self, name: str, version: str = "") -> Model:
        """The model (NOT_FOUND for an unknown name or version)."""
        model = self.core.model(name)
        if version not in ("", str(model.signature.version)):
            raise NotFoundError(
                f"Model `{shown(name)}` has no version {shown(version)!r}; versions: "
                f"['{model.signature.version}']"
            )
        return model

    def model_ready(self, name: str, version: str = "") -> bool:
        if name in self.core.failed:  # in the repository, but it cannot be served
            return False
        if name not in self.core.models and name in self.control.unloaded():
            return False  # in the repository, not loaded (model control)
        return self.ready() and self.model(name, version).ready

    # -- metadata -------------------------------------------------------------------------
    def server_metadata(self, transport: str = "grpc") -> dict[str, Any]:
        extensions = [e for e in EXTENSIONS if transport == "grpc" or e not in GRPC_ONLY]
        return {"name": "cvscore", "version": __version__, "extensions": extensions}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model = self.model(name, version)
        s = model.signature

        def meta(t: Any) -> dict[str, Any]:
            return {"name": t.name, "datatype": TO_KSERVE[t.dtype], "shape": list(t.dims())}

        return {
            "name": s.name,
            "versions": [str(s.version)],
            "platform": PLATFORMS.get(model.default_runtime, "cvscore"),
            "inputs": [meta(t) for t in s.inputs],
            "outputs": [meta(t) for t in s.outputs],
        }

    def model_config(self, name: str, version: str = "") -> Message:
        """``inference.ModelConfig``: the entry's config.pbtxt plus cvscore's parameters."""
        model = self.model(name, version)
        config = self.m.ModelConfig()
        path = self.core.repository / model.name / CONFIG
        if path.is_file():
            text_format.Parse(path.read_text(), config, allow_unknown_field=True)
        else:
            self._fill_config(config, model)
        params = {
            "cvscore.runtimes": ",".join(model.runtime_names()),
            "cvscore.default_runtime": model.default_runtime,
            "cvscore.device": model.device,
            **self.settings,
        }
        for key, value in params.items():
            config.parameters[key].string_value = value
        return config

    def _fill_config(self, config: Any, model: Model) -> None:
        s = model.signature
        config.name = s.name
        config.backend = "onnxruntime"
        config.max_batch_size = 0
        data_type = self.m.pool.FindEnumTypeByName("inference.DataType")
        for tensors_, field in ((s.inputs, config.input), (s.outputs, config.output)):
            for t in tensors_:
                field.add(
                    name=t.name,
                    data_type=data_type.values_by_name[TRITON_DTYPES[t.dtype]].number,
                    dims=t.dims(),
                )

    # -- statistics -----------------------------------------------------------------------
    def statistics(self, name: str = "", version: str = "") -> list[dict[str, Any]]:
        """Triton's ModelStatistics as dicts: one model (NOT_FOUND if unknown), or with no
        name every loaded model. A worker of ``--workers N`` answers for itself."""
        if not name:
            if version:
                raise InvalidInputError(
                    f"Expected a model name with version {shown(version)!r}, got none"
                )
            models = [self.core.models[n] for n in sorted(self.core.models)]
        else:
            models = [self.model(name, version)]
        return [self.core.statistics.report(m.name, m.version) for m in models]

    # -- the repository -------------------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model the server knows: READY, LOADING or UNAVAILABLE (with the reason)."""
        core = self.core
        models = []
        for name in core.expected:
            model = core.models.get(name)
            if name in core.failed:
                state, reason = "UNAVAILABLE", core.failed[name]
            elif model is None:
                state, reason = "LOADING", ""
            elif model.ready:
                state, reason = "READY", ""
            else:
                state, reason = "UNAVAILABLE", model.reason()
            version = str(model.signature.version) if model else "1"
            models.append({"name": name, "version": version, "state": state, "reason": reason})
        for name in self.control.unloaded():
            models.append(
                {"name": name, "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
            )
        return [m for m in models if not ready_only or m["state"] == "READY"]

    async def load(self, name: str, parameters: Sequence[str] = ()) -> None:
        _no_parameters("load", parameters, allowed=())
        await self.control.request_load(name)

    async def unload(self, name: str, parameters: Sequence[str] = ()) -> None:
        _no_parameters("unload", parameters, allowed=("unload_dependents",))
        await self.control.request_unload(name)

    # -- inference ------------------------------------------------------------------------
    def serving(self, name: str, version: str = "") -> Model:
        """The model an inference request names, ready to score, or the error saying why."""
        model = self.model(name, version)
        self.core.serving(model.name)
        return model

    async def infer(
        self,
        model: Model,
        inputs: Mapping[str, tensors.WireTensor],
        outputs: Sequence[str] = (),
        runtime: str = "auto",
        deadline: float | None = None,
    ) -> Inference:
        """Score declared inputs (admitted before anything is decoded) on a model from
        :meth:`serving`; every output when ``outputs`` is empty."""
        names = model.signature.output_names()
        wanted = list(outputs) or names
        unknown = [shown(n) for n in wanted if n not in names]
        if unknown:
            raise InvalidInputError(
                f"Model `{model.name}` has no output {unknown}; outputs: {names}"
            )
        result = await self.core.score(
            model.name,
            inputs,
            runtime=runtime,
            reduction="none",
            deadline=deadline,
            exact_dtypes=True,
        )
        return Inference(model, result, wanted)


def _no_parameters(action: str, given: Sequence[str], allowed: Sequence[str]) -> None:
    """cvscore loads what the repository holds: Triton's config and file overrides are not
    taken (they would serve an artifact no manifest describes)."""
    refused = sorted(shown(p) for p in given if p not in allowed)
    if refused:
        raise InvalidInputError(
            f"Expected no {action} parameters (cvscore serves the repository's entries as "
            f"exported), got {refused}"
        )
