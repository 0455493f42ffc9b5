"""Where a metric's graph runs for a dataset driver: in this process, or on a server.

Both name every artifact with :func:`cvscore.exporters.naming.variant_name`, so a
repository built by ``cvscore export`` (plus ``--for-gate``) holds exactly what a remote
evaluation asks the server for. A backend gives a driver two things:

- ``runner(metric, params)``: a function from one batch's graph inputs to its outputs, and
  a description of the artifact (``info``) for reports;
- ``per_sample(metric, params, batches)``: every per-sample score of a list of batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
IN_PROCESS_RUNTIMES = ("eager", "torchscript", "onnx", "torch_export")


class BackendError(Exception):
    """A backend cannot run what was asked: no server, or a variant the server lacks."""


class Backend(Protocol):
    runtime: str
    progress: bool

    def runner(self, metric: str, params: Mapping[str, Any]) -> tuple[Runner, dict[str, Any]]: ...

    def per_sample(
        self, metric: str, params: Mapping[str, Any], batches: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[np.ndarray, dict[str, Any]]: ...

    def close(self) -> None: ...


class InProcess:
    """Eager modules, or exported artifacts from a repository (exported on first use)."""

    def __init__(self, runtime: str, repository: Path, device: str, progress: bool) -> None:
        if runtime not in IN_PROCESS_RUNTIMES:
            raise ValueError(f"Expected `runtime` in {list(IN_PROCESS_RUNTIMES)}, got {runtime!r}")
        self.runtime, self.repository, self.device = runtime, repository, device
        self.progress = progress

    def runner(self, metric: str, params: Mapping[str, Any]) -> tuple[Runner, dict[str, Any]]:
        from ..metrics import registry

        spec = registry.get(metric)
        resolved = spec.resolve_params(params)
        if self.runtime == "eager":
            return self._eager(spec, resolved)

        from ..exporters import export_metric, read_manifest
        from ..exporters.formats import FORMATS
        from ..server import runtimes

        result = export_metric(spec, self.repository, resolved, formats=(self.runtime,))
        model = runtimes.load(self.repository, result.name, self.runtime, self.device)
        manifest = read_manifest(self.repository / result.name) or {}
        file = FORMATS[self.runtime]
        info = {
            "metric": metric,
            "model": result.name,
            "params": resolved,
            "identity": manifest.get("identity"),
            "runtime": self.runtime,
            "file": file,
            "sha256": manifest.get("files", {}).get(file, {}).get("sha256"),
            "versions": manifest.get("versions", {}),
        }
        return model.run, info

    def _eager(self, spec: Any, resolved: dict[str, Any]) -> tuple[Runner, dict[str, Any]]:
        import torch

        from .. import __version__

        module = spec.build(**resolved).to(self.device)
        names = [o.name for o in spec.outputs]

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            tensors = {
                k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                for k, v in inputs.items()
            }
            with torch.inference_mode():
                out = module(**tensors)
            outs = out if isinstance(out, tuple | list) else (out,)
            return {n: t.detach().cpu().numpy() for n, t in zip(names, outs, strict=True)}

        from ..exporters.repository import artifact_identity

        info: dict[str, Any] = {
            "metric": spec.name,
            "params": resolved,
            "identity": artifact_identity(spec, resolved),
            "runtime": "eager",
            "versions": {"cvscore": __version__, "torch": torch.__version__},
        }
        return run, info

    def per_sample(
        self, metric: str, params: Mapping[str, Any], batches: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        from tqdm import tqdm

        run, info = self.runner(metric, params)
        bar = tqdm(batches, desc=metric, unit="batch", disable=not self.progress)
        parts = [next(iter(run(b).values())) for b in bar]
        return (np.concatenate(parts) if parts else np.zeros(0)), info

    def close(self) -> None:
        pass


class Remote:
    """Through cvscore servers (``ADDR[,ADDR...]``, calls balanced round-robin).

    Per-sample metrics stream through ``Client.evaluate``; dataset metrics send each batch
    through ``Client.score`` and are folded here, with the same aggregator as in-process.
    """

    def __init__(
        self,
        address: str,
        runtime: str,
        progress: bool,
        timeout: float | None = 60.0,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        from ..client import Client, CvscoreError

        if runtime == "eager":
            raise BackendError(
                "runtime eager runs in-process only; a server runs torchscript or onnx"
            )
        self.runtime, self.progress, self.address = runtime, progress, address
        addresses = [a.strip() for a in address.split(",") if a.strip()]
        self.client = Client(addresses, timeout=timeout, **dict(security or {}))
        try:
            self.client.health("", timeout=min(timeout or 10.0, 10.0))
        except CvscoreError as exc:
            self.client.close()
            raise BackendError(f"server {address} is unreachable ({exc})") from None

    def missing(self, variants: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """The variant names among ``variants`` that the server does not serve."""
        from ..exporters.naming import variant_name

        served = {m.name for m in self.client.list_metrics()}
        wanted = dict.fromkeys(variant_name(metric, params) for metric, params in variants)
        return [name for name in wanted if name not in served]

    def _info(self, metric: str, params: Mapping[str, Any]) -> dict[str, Any]:
        from ..client import CvscoreError
        from ..exporters.naming import variant_name
        from ..metrics import registry

        spec = registry.get(metric)
        resolved = spec.resolve_params(params)
        name = variant_name(spec, resolved)
        try:
            described = self.client.describe(name)
        except CvscoreError as exc:
            raise BackendError(f"server {self.address}: {exc}") from None
        from ..exporters.repository import artifact_identity

        return {
            "metric": metric,
            "model": name,
            "params": resolved,
            "identity": artifact_identity(spec, resolved),
            "runtime": self.runtime,
            "server": self.address,
            "server_params": described.params,
        }

    def runner(self, metric: str, params: Mapping[str, Any]) -> tuple[Runner, dict[str, Any]]:
        info = self._info(metric, params)

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = self.client.score(
                info["model"], dict(inputs), reduction="none", runtime=self.runtime
            )
            return dict(result.outputs)

        return run, info

    def per_sample(
        self, metric: str, params: Mapping[str, Any], batches: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        info = self._info(metric, params)
        result = self.client.evaluate(
            info["model"],
            list(batches),
            runtime=self.runtime,
            return_scores=True,
            progress=self.progress,
        )
        scores = result.scores if result.scores is not None else np.zeros(0)
        return np.asarray(scores), info

    def close(self) -> None:
        self.client.close()
