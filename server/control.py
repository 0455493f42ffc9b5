"""Model control: load, reload and unload repository entries while the server runs.

Transport-free; Triton's modes and names (``--model-control``):

- ``none`` (the default): the models found at start-up are served until the server stops;
  load and unload requests are refused (FAILED_PRECONDITION).
- ``explicit``: ``RepositoryModelLoad`` / ``RepositoryModelUnload`` (gRPC) and
  ``POST /v2/repository/models/{m}/load|unload`` (HTTP) load, reload and unload entries.
  Unlike Triton, which starts empty in this mode, the server starts with the models it
  would serve in ``none`` (``--models``, or every entry).
- ``poll``: the repository is rescanned every ``poll_s`` seconds; a new entry is loaded, a
  changed one (any file's size or modification time) reloaded, a removed one unloaded.
  As in Triton, explicit requests are refused in this mode.

Loading runs off the event loop. A reload that fails leaves the loaded model serving.
Unloading removes the model from what requests can reach (they get NOT_FOUND from then on),
runs what its queues hold, then closes them; readiness and the repository index follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from ..exporters.repository import MANIFEST, check_model_name, list_models
from .core import Model, ScoringCore
from .errors import (
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    RuntimeUnavailableError,
    ScoringError,
    shown,
)
from .models import load_model

log = logging.getLogger(__name__)

MODES = ("none", "explicit", "poll")
# Awaited with the model's name and the model now served (None: unloaded).
Listener = Callable[[str, Model | None], Awaitable[None]]
Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(entry: Path) -> Fingerprint:
    """Every file of a repository entry, as (path, size, mtime_ns); temporaries aside."""
    files = []
    for path in sorted(entry.rglob("*")):
        if path.name.endswith(".tmp"):
            continue
        try:
            if path.is_file():
                stat = path.stat()
                files.append((path.relative_to(entry).as_posix(), stat.st_size, stat.st_mtime_ns))
        except OSError:  # removed while scanning: the next scan sees it gone
            continue
    return tuple(files)


class ModelControl:
    """Loads and unloads the models of one core; ``mode`` says who may ask."""

    def __init__(
        self,
        core: ScoringCore,
        mode: str = "none",
        poll_s: float = 15.0,
        names: Sequence[str] = (),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Expected `model_control` to be one of {list(MODES)}, got {mode!r}")
        if poll_s <= 0:
            raise ValueError(f"Expected `repository_poll_s` to be positive, got {poll_s}")
        self.core = core
        self.mode = mode
        self.poll_s = poll_s
        self.names = tuple(names)  # poll: only these, when given (--models)
        self.listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._seen: dict[str, Fingerprint] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def repository(self) -> Path:
        return self.core.repository

    # -- lifecycle ----------------------------------------------------------------------
    def snapshot(self) -> None:
        """Remember the repository as it is before start-up loading (poll compares to it)."""
        if self.mode == "poll":
            self._seen = self._scan()

    def start(self) -> None:
        """Start polling (mode ``poll``); call once the core is started."""
        if self.mode == "poll" and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="model poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- what clients ask ----------------------------------------------------------------
    def _allowed(self, action: str) -> None:
        if self.mode == "explicit":
            return
        why = (
            "the server polls its repository (--model-control poll)"
            if self.mode == "poll"
            else "model control is off (start the server with --model-control explicit)"
        )
        raise RuntimeUnavailableError(f"Cannot {action} models on this server: {why}")

    async def request_load(self, name: str) -> None:
        self._allowed("load")
        await self.load(name)

    async def request_unload(self, name: str) -> None:
        self._allowed("unload")
        await self.unload(name)

    # -- loading and unloading ------------------------------------------------------------
    def _check(self, name: str) -> None:
        try:
            check_model_name(name)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        if self.core.closing:
            raise NotReadyError("The server is shutting down")
        if not self.core.ready:
            raise NotReadyError("The server is starting; load or unload models once it is ready")

    async def load(self, name: str) -> Model:
        """Load (or reload) one entry of the repository and serve it."""
        self._check(name)
        if not (self.repository / name / MANIFEST).is_file():
            raise NotFoundError(f"No model `{shown(name)}` in the repository")
        core = self.core
        async with self._lock:
            try:
                model = await asyncio.to_thread(
                    load_model, self.repository, name, core.options, core.device
                )
            except Exception as exc:
                reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                log.error("model %s: cannot serve it: %s", shown(name, 128), reason)
                if name not in core.models:  # a reload that fails leaves the old one serving
                    core.failed[name] = reason
                    self._expect(name)
                raise RuntimeUnavailableError(
                    f"Model `{shown(name)}` cannot be loaded: {reason}"
                ) from None
            if core.closing:
                raise NotReadyError("The server is shutting down")
            old = core.models.get(name)
            if not model.ready:
                if old is not None and old.ready:
                    raise RuntimeUnavailableError(
                        f"Model `{name}` cannot be reloaded: {model.reason()}; "
                        "the loaded model keeps serving"
                    )
                core.models[name] = model
                core.failed.pop(name, None)
                self._expect(name)
                await self._notify(name, model)
                raise RuntimeUnavailableError(f"Model `{name}` cannot be loaded: {model.reason()}")
            core.start_model(model)
            core.models[name] = model
            core.failed.pop(name, None)
            self._expect(name)
            await self._notify(name, model)
            log.info("model %s %s", name, "reloaded" if old is not None else "loaded")
            if old is not None:
                await _retire(old)
            return model

    async def unload(self, name: str) -> None:
        """Stop serving one model: refuse new requests, run its queued ones, close."""
        self._check(name)
        core = self.core
        async with self._lock:
            model = core.models.pop(name, None)
            known = model is not None or name in core.failed or name in core.expected
            if not known:
                if (self.repository / name / MANIFEST).is_file():
                    return  # in the repository, not loaded: nothing to do
                raise NotFoundError(f"No model `{shown(name)}` on this server")
            core.failed.pop(name, None)
            if name in core.expected:
                core.expected.remove(name)
            await self._notify(name, None)
            if model is not None:
                await _retire(model)
            log.info("model %s unloaded", name)

    def _expect(self, name: str) -> None:
        if name not in self.core.expected:
            self.core.expected.append(name)

    async def _notify(self, name: str, model: Model | None) -> None:
        for listener in self.listeners:
            try:
                await listener(name, model)
            except Exception:  # an observer must not break loading
                log.exception("model control listener failed")

    def unloaded(self) -> list[str]:
        """Entries of the repository that are not loaded (explicit and poll modes)."""
        if self.mode == "none":
            return []
        served = set(self.core.expected)
        return [n for n in self._wanted(list_models(self.repository)) if n not in served]

    # -- polling --------------------------------------------------------------------------
    def _wanted(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if not self.names or n in self.names]

    def _scan(self) -> dict[str, Fingerprint]:
        return {
            n: fingerprint(self.repository / n) for n in self._wanted(list_models(self.repository))
        }

    async def rescan(self) -> None:
        """Load new and changed entries, unload removed ones (what each poll does)."""
        present = await asyncio.to_thread(self._scan)
        for name, print_ in present.items():
            if self._seen.get(name) == print_:
                continue
            self._seen[name] = print_  # a failed load is retried when the entry changes
            try:
                await self.load(name)
            except ScoringError as exc:
                log.warning("poll: %s", exc.message)
        for name in [n for n in self._seen if n not in present]:
            del self._seen[name]
            if name in self.core.models or name in self.core.failed:
                try:
                    await self.unload(name)
                except ScoringError as exc:
                    log.warning("poll: %s", exc.message)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.rescan()
            except Exception:  # keep polling: the next scan may see a repaired repository
                log.exception("poll: cannot rescan the repository %s", self.repository)


async def _retire(model: Model) -> None:
    """Run what a model's queues hold, then close them (later submits are refused)."""
    batchers = list(model.batchers.values())
    await asyncio.gather(*(b.drain() for b in batchers))
    await asyncio.gather(*(b.close() for b in batchers))
