"""The server's configuration: everything ``cvscore serve`` can be told.

Built from flags in ``cli/serve.py`` (never from argv at import time); :meth:`ServerConfig.validate`
refuses values out of range with one line naming the flag's field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..exporters.repository import check_model_name
from .admission import Limits
from .control import MODES
from .core import CoreOptions
from .runtimes import RUNTIMES

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``cvscore serve`` can be told; built from flags in ``main()``."""

    repository: Path
    host: str = "127.0.0.1"
    port: int = 8001
    device: str = "auto"
    runtime: str = "auto"  # runtimes to load: "auto" (every artifact) or a comma list
    models: tuple[str, ...] = ()  # serve only these (default: every model)
    export_missing: bool = False  # export registered metrics missing from the repository
    max_batch_size: int = 64  # 1 turns dynamic batching off
    max_queue_delay_us: int = 500
    max_queue_size: int = 256
    max_message_mb: int = 256
    # the admission budget of one request (server/admission.py)
    max_request_mb: float = 256.0  # its inputs, decoded and cast
    max_work_mb: float = 1024.0  # what its graph allocates (an estimate), inputs included
    align: int = 1
    threads: int = 2  # compute threads per process
    workers: int = 1  # server processes sharing the ports (server/workers.py)
    worker_index: int | None = None  # set in each process of --workers N
    onnx_threads: int = 0  # ONNX Runtime intra-op threads; 0: every core (workers share them)
    grace_s: float = 30.0
    # security (see server/security.py)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: clients must present a certificate it signed
    auth_tokens_file: Path | None = None
    health_port: int | None = None  # a plaintext port serving only health (kubelet probes)
    # observability (see server/telemetry.py)
    metrics_port: int | None = None  # Prometheus /metrics; None: off, 0: a free port
    metrics_host: str = ""  # default: `host`
    # KServe v2 over HTTP/REST (see server/http.py); None: off, 0: a free port
    http_port: int | None = None
    # model control (see server/control.py): none, explicit or poll
    model_control: str = "none"
    repository_poll_s: float = 15.0

    def runtimes(self) -> tuple[str, ...]:
        if self.runtime in ("", "auto"):
            return ()
        chosen = tuple(r.strip() for r in self.runtime.split(",") if r.strip())
        unknown = [r for r in chosen if r not in RUNTIMES]
        if unknown:
            raise ValueError(
                f"Expected `runtime` to be auto or a comma list of {list(RUNTIMES)}, got {unknown}"
            )
        return chosen

    def core_options(self) -> CoreOptions:
        return CoreOptions(
            device=self.device,
            runtimes=self.runtimes(),
            max_batch_size=self.max_batch_size,
            max_queue_delay_us=self.max_queue_delay_us,
            max_queue_size=self.max_queue_size,
            align=self.align,
            threads=self.threads,
            onnx_threads=self.onnx_threads,
            limits=Limits.from_mb(self.max_request_mb, self.max_work_mb),
        )

    def validate(self) -> None:
        self.runtimes()
        for name in (
            "max_batch_size",
            "max_queue_size",
            "max_message_mb",
            "max_request_mb",
            "max_work_mb",
            "align",
            "threads",
            "workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected `{name}` to be at least 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ValueError(
                f"Expected `max_queue_delay_us` to be non-negative, got {self.max_queue_delay_us}"
            )
        for name in ("port", "health_port", "metrics_port", "http_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"Expected `{name}` in [0, 65535], got {value}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("Expected both `tls_cert` and `tls_key`, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("`tls_client_ca` (mutual TLS) needs `tls_cert` and `tls_key`")
        for name in self.models:
            check_model_name(name)
        if self.model_control not in MODES:
            raise ValueError(
                f"Expected `model_control` to be one of {list(MODES)}, got {self.model_control!r}"
            )
        if self.workers > 1 and self.model_control == "explicit":
            raise ValueError(
                "Expected `model_control` none or poll with `workers` > 1: an explicit "
                "load or unload would reach one worker only"
            )
        if not self.repository_poll_s > 0:
            raise ValueError(
                f"Expected `repository_poll_s` to be positive, got {self.repository_poll_s}"
            )
