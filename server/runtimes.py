"""Runtimes: load one artifact once, then run it many times on numpy inputs.

Transport-free: nothing here knows about gRPC. Each runtime takes a mapping of input name to
numpy array in the artifact's canonical shapes and returns a mapping of output name to numpy
array. Inputs go to the device once per call and outputs come back once.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..exporters.formats import FORMATS
from ..exporters.repository import MANIFEST, VERSION, read_manifest, sha256_file
from ..wire import RUNTIMES

log = logging.getLogger(__name__)


class ArtifactError(Exception):
    """An artifact is missing, tampered with or cannot be loaded."""


class Runtime(Protocol):
    name: str
    device: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("Expected a CUDA device for `--device cuda`, but torch sees none")
    if device not in {"cpu", "cuda"}:
        raise ValueError(f"Expected `device` to be auto, cpu or cuda, got {device!r}")
    return device


class TorchRuntime:
    """TorchScript (``model.pt``) or torch.export (``model.pt2``) on CPU or CUDA."""

    def __init__(self, path: Path, kind: str, output_names: list[str], device: str) -> None:
        self.name = kind
        self.device = device
        self.output_names = output_names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "torchscript":
                self._call: Any = torch.jit.load(str(path), map_location=device).eval()
            else:
                program = torch.export.load(str(path))
                self._call = program.module().to(device)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
            if self.device != "cpu":
                tensors = {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}
            out = self._call(**tensors)
        outs = out if isinstance(out, tuple | list) else (out,)
        return {
            name: t.detach().cpu().numpy() for name, t in zip(self.output_names, outs, strict=True)
        }


class OnnxRuntime:
    """ONNX Runtime session: CUDA execution provider when present and asked for, else CPU.

    Small runs, the ones the server computes on its event loop, go to a second CPU session
    without an intra-op thread pool (:meth:`run_inline`, made on first use): for a graph
    that takes microseconds, waking the pool's threads costs more than the work, and their
    spinning afterwards takes a core from gRPC and the client. Both sessions give the same
    bits (``tests/test_invariance.py``).
    """

    def __init__(self, path: Path, device: str, threads: int = 0) -> None:
        import onnxruntime as ort

        self.name = "onnx"
        self._path = path
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._session = _onnx_session(path, threads, providers)
        self.device = "cuda" if self._session.get_providers()[0].startswith("CUDA") else "cpu"
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._single: Any = None

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._session.run(self.output_names, dict(inputs))
        return dict(zip(self.output_names, outs, strict=True))

    def run_inline(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The same run on the single-threaded session (on CUDA: the one session)."""
        if self.device != "cpu":
            return self.run(inputs)
        if self._single is None:
            self._single = _onnx_session(self._path, 1, ["CPUExecutionProvider"])
        outs = self._single.run(self.output_names, dict(inputs))
        return dict(zip(self.output_names, outs, strict=True))


def _onnx_session(path: Path, threads: int, providers: list[str]) -> Any:
    """An ONNX Runtime session, quiet, with ``threads`` intra-op threads (0: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers)


def load(repo: Path, name: str, runtime: str, device: str = "cpu", verify: bool = True) -> Runtime:
    """Load ``REPO/<name>/1/<artifact>`` after checking it against the manifest's sha256."""
    return check(repo, name, runtime, verify)(device)


def check(
    repo: Path, name: str, runtime: str, verify: bool = True, threads: int = 0
) -> Callable[[str], Runtime]:
    """Check an artifact against its manifest now; return what loads it (later, on a device).

    The check is cheap (a sha256); loading is what takes seconds, so the server checks every
    artifact at start-up and loads all but the default runtime on first use.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"Expected `runtime` to be one of {list(RUNTIMES)}, got {runtime!r}")
    model_dir = repo / name
    manifest = read_manifest(model_dir)
    if manifest is None:
        raise ArtifactError(f"{model_dir / MANIFEST} is missing or unreadable")
    filename = FORMATS[runtime]
    path = model_dir / VERSION / filename
    entry = manifest.get("files", {}).get(filename)
    if entry is None or not path.is_file():
        raise ArtifactError(f"{path} is not in the repository")
    if verify:
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ArtifactError(
                f"{path} does not match its manifest (sha256 {actual[:12]}..., "
                f"expected {entry['sha256'][:12]}...); refusing to load it"
            )
    outputs = [o["name"] for o in manifest["outputs"]]

    def open_on(device: str) -> Runtime:
        if runtime == "onnx":
            return OnnxRuntime(path, device, threads)
        return TorchRuntime(path, runtime, outputs, device)

    return open_on
