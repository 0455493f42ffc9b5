"""Served models: what the server loaded from one repository entry, and how.

Transport-free. :func:`load_model` reads an entry's manifest, builds its signature and
admission plan, loads the artifact into every runtime wanted (checked against the
manifest's sha256) and warms each one up; a runtime that fails is recorded in
``Model.failures``, an entry that cannot be read at all raises ValueError saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..exporters.repository import check_model_name, load_manifest
from . import runtimes
from .admission import Limits, Plan
from .batcher import Batcher
from .errors import InvalidInputError, RuntimeUnavailableError, shown
from .runtimes import Runtime
from .signature import Signature

if TYPE_CHECKING:
    from ..metrics.registry import MetricSpec

log = logging.getLogger("cvscore.server.core")

# What "auto" picks, among the runtimes on the server's device first.
PREFERENCE = ("onnx", "torchscript", "torch_export")


@dataclass(frozen=True)
class CoreOptions:
    """How models are loaded and batched."""

    device: str = "auto"
    runtimes: tuple[str, ...] = ()  # empty: every artifact the repository holds
    max_batch_size: int = 64
    max_queue_delay_us: int = 500
    max_queue_size: int = 256
    align: int = 1
    threads: int = 2  # compute threads of the core's executor
    onnx_threads: int = 0  # intra-op threads of a pooled ONNX session; 0: every core
    warmup: bool = True
    # load only the default runtime at start-up, the others on first use (fast start)
    lazy: bool = True
    verify: bool = True
    limits: Limits = field(default_factory=Limits)


@dataclass
class Model:
    """One served model and the runtimes it was loaded into."""

    signature: Signature
    plan: Plan
    runtimes: dict[str, runtimes.Runtime] = field(default_factory=dict)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    default_runtime: str = ""
    # runtimes whose artifact was checked but not loaded yet: kind -> its loader
    deferred: dict[str, Callable[[], Runtime]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.signature.name

    @property
    def version(self) -> str:
        return str(self.signature.version)

    @property
    def ready(self) -> bool:
        return bool(self.runtimes)

    @property
    def device(self) -> str:
        return self.runtimes[self.default_runtime].device if self.ready else ""

    def runtime_names(self) -> list[str]:
        return [*self.runtimes, *self.deferred]

    def load_deferred(self, kind: str) -> None:
        """Load a runtime deferred at start-up (blocking: run it off the event loop)."""
        loader = self.deferred.get(kind)
        if loader is None:  # it failed for a caller before this one
            raise RuntimeUnavailableError(
                f"Model `{self.name}` has no `{kind}` runtime on this server; "
                f"available: {self.runtime_names()}"
            )
        try:
            self.runtimes[kind] = loader()
        except Exception as exc:
            log.error("model %s: cannot load %s: %s", self.name, kind, exc)
            self.failures[kind] = str(exc)
            raise RuntimeUnavailableError(
                f"Model `{self.name}` could not load its `{kind}` runtime; see the server log"
            ) from None
        finally:
            self.deferred.pop(kind, None)
        log.info("model %s: loaded %s on first use", self.name, kind)

    def reason(self) -> str:
        """Why no runtime is loaded (empty when one is), without paths: clients see it."""
        if self.ready:
            return ""
        kinds = ", ".join(
            f"{k} {'not exported' if v == 'not exported' else 'refused'}"
            for k, v in self.failures.items()
        )
        return f"no runtime could be loaded ({kinds or 'none wanted'}); see the server log"

    def pick(self, runtime: str) -> str:
        if runtime in ("", "auto"):
            return self.default_runtime
        if runtime not in runtimes.RUNTIMES:
            raise InvalidInputError(
                f"Expected `runtime` to be one of {['auto', *runtimes.RUNTIMES]}, "
                f"got {shown(runtime)!r}"
            )
        if runtime not in self.runtimes and runtime not in self.deferred:
            raise RuntimeUnavailableError(
                f"Model `{self.name}` has no `{runtime}` runtime on this server; "
                f"available: {self.runtime_names()}"
            )
        return runtime


def _spec_for(metric: str) -> MetricSpec | None:
    """The registered spec, when the registry imports and still knows the metric."""
    try:
        from ..metrics import registry

        if metric in registry.names():
            return registry.get(metric)
    except Exception:
        log.exception("the metric registry failed to import; serving from manifests alone")
    return None


def load_model(repository: Path, name: str, options: CoreOptions, device: str) -> Model:
    """Load one repository entry into every runtime wanted; ValueError when it is unusable."""
    check_model_name(name)  # never join a name that could leave the repository
    manifest = {**load_manifest(repository / name), "name": name}
    spec = _spec_for(manifest.get("metric", name))
    try:
        signature = Signature.from_manifest(manifest, spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"its manifest does not describe a signature ({exc!r})") from None
    model = Model(signature, Plan(signature, options.limits))
    artifacts = set(manifest.get("files", {}))
    from ..exporters.formats import FORMATS

    wanted = options.runtimes or PREFERENCE
    for kind in wanted:
        if FORMATS[kind] not in artifacts:
            model.failures[kind] = "not exported"
            continue
        try:  # every artifact is checked now; only the first that loads is loaded now
            opener = runtimes.check(repository, name, kind, options.verify, options.onnx_threads)
        except runtimes.ArtifactError as exc:  # tampered, truncated or missing
            log.error("model %s: refusing the %s artifact: %s", name, kind, exc)
            model.failures[kind] = str(exc)
            continue

        def loader(kind: str = kind, opener: Callable[[str], runtimes.Runtime] = opener):
            loaded = opener(device)
            if options.warmup and spec is not None and model.signature.spec is not None:
                _warm(model, spec, loaded, options.align)
            return loaded

        if options.lazy and any(r.device == device for r in model.runtimes.values()):
            model.deferred[kind] = loader
            continue
        try:
            model.runtimes[kind] = loader()
        except Exception as exc:
            log.error("model %s: cannot load %s: %s", name, kind, exc)
            model.failures[kind] = str(exc)
    model.default_runtime = _default_runtime(model, options, device)
    if model.ready:
        log.info(
            "model %s: %s on %s (auto: %s)",
            name,
            ", ".join(model.runtime_names()),
            device,
            model.default_runtime,
        )
    return model


def _warm(model: Model, spec: MetricSpec, runtime: runtimes.Runtime, align: int) -> None:
    """Run the artifact twice on valid inputs: fail at startup, not on a request."""
    import torch

    gen = torch.Generator().manual_seed(0)
    sample = spec.make_inputs(gen, {"N": max(1, align)})
    arrays = {k: v.numpy() for k, v in sample.items()}
    prepared = model.plan.prepare(arrays, model.plan.admit(arrays))
    for _ in range(2):
        runtime.run(prepared.inputs)


def _default_runtime(model: Model, options: CoreOptions, device: str) -> str:
    order = list(options.runtimes or PREFERENCE)
    on_device = [k for k in order if k in model.runtimes and model.runtimes[k].device == device]
    rest = [k for k in order if k in model.runtimes and k not in on_device]
    chosen = on_device + rest
    return chosen[0] if chosen else ""
