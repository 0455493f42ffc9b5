"""``cvscore serve`` as a real process: it prints its address, drains on SIGTERM, exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cvscore.client import Client

READY = "cvscore serving on "


class Process:
    """A ``cvscore serve`` subprocess with its stderr collected line by line."""

    def __init__(self, repo: Path, *flags: str) -> None:
        cmd = [
            sys.executable, "-m", "cvscore.cli", "serve", "--repository", str(repo),
            "--port", "0", "--no-progress", *flags,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.stdout: list[str] = []
        threading.Thread(
            target=self._pump, args=(self.proc.stderr, self.lines), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True
        ).start()

    def _pump(self, stream, into: list[str]) -> None:
        for line in stream:
            with self.cond:
                into.append(line)
                self.cond.notify_all()
        with self.cond:
            into.append("")  # EOF marker
            self.cond.notify_all()

    def wait_line(self, into: list[str], text: str, timeout: float = 120.0) -> str:
        def found() -> str | None:
            for line in into:
                if text in line:
                    return line
            if "" in into:
                raise AssertionError(f"process ended without {text!r}: {''.join(self.lines)}")
            return None

        with self.cond:
            assert self.cond.wait_for(lambda: found() is not None, timeout), "".join(self.lines)
            return found() or ""

    def address(self) -> str:
        return self.wait_line(self.stdout, READY).strip()[len(READY) :]


@pytest.fixture
def processes():
    started: list[Process] = []

    def start(repo: Path, *flags: str) -> Process:
        process = Process(repo, *flags)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def test_sigterm_drains_in_flight_requests_and_exits_0(small_repo: Path, processes) -> None:
    # A 60 s batching delay: a request close behind another stays queued until the shutdown
    # drains the queue (the first one is lone, no company coming, and runs at once).
    server = processes(
        small_repo, "--models", "l1", "--runtime", "onnx",
        "--max-queue-delay-us", "60000000", "--log-level", "debug",
    )  # fmt: skip
    address = server.address()
    preds = np.arange(8, dtype=np.float32).reshape(2, 4)
    with Client(address, timeout=120) as client, ThreadPoolExecutor(1) as pool:
        assert client.score("l1", preds=preds, target=preds + 1).scores.tolist() == [1.0, 1.0]
        pending = pool.submit(client.score, "l1", preds=preds, target=preds + 2)
        server.wait_line(server.lines, "l1/onnx: queued 2 rows")
        server.proc.send_signal(signal.SIGTERM)
        result = pending.result()
    assert result.scores.tolist() == [2.0, 2.0]
    assert server.proc.wait(60) == 0
    server.wait_line(server.lines, "stopped")


def test_sigint_stops_cleanly_and_new_calls_are_refused(small_repo: Path, processes) -> None:
    server = processes(small_repo, "--models", "giou", "--runtime", "onnx")
    address = server.address()
    with Client(address, timeout=30, retries=0) as client:
        assert client.health() == "SERVING"
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(60) == 0
        with pytest.raises(Exception, match="UNAVAILABLE"):
            client.score(
                "giou", preds=np.zeros((1, 4), np.float32), target=np.zeros((1, 4), np.float32)
            )


def test_bad_flags_exit_2_with_one_line(small_repo: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cvscore.cli", "serve", "--repository", str(small_repo),
         "--max-batch-size", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "cvscore serve: error: Expected `max_batch_size` to be at least 1, got 0"
    )


def test_a_missing_repository_or_model_is_exported_on_first_start(
    small_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cvscore.exporters.repository import list_models
    from cvscore.server.app import ServerConfig, prepare_repository

    cache = tmp_path / "cache"  # what `cvscore serve` without --repository does
    prepare_repository(ServerConfig(cache, models=("l1",), export_missing=True))
    assert list_models(cache) == ["l1"]
    assert "export" in capsys.readouterr().err  # the progress bar
    manifest = (cache / "l1" / "manifest.json").read_bytes()
    prepare_repository(ServerConfig(cache, models=("l1",), export_missing=True))
    assert (cache / "l1" / "manifest.json").read_bytes() == manifest  # up to date: kept
    repo = tmp_path / "repo"  # an explicit repository lacking a requested model
    repo.mkdir()
    (repo / "l1").symlink_to(cache / "l1", target_is_directory=True)
    with pytest.raises(ValueError, match="mse can be exported with --export-missing"):
        prepare_repository(ServerConfig(repo, models=("l1", "mse")), progress=False)
    assert list_models(repo) == ["l1"]  # never written to unless asked
    prepare_repository(ServerConfig(repo, models=("l1", "mse"), export_missing=True))
    assert list_models(repo) == ["l1", "mse"]


def _serve(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvscore.cli", "serve", "--port", "0", "--no-progress",
         "--log-level", "error", *flags],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_missing_repository_is_refused_unless_asked_to_export(tmp_path: Path) -> None:
    typo = tmp_path / "reop"
    out = _serve("--repository", str(typo))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"cvscore serve: error: The repository {typo} does not exist; pass --export-missing "
        f"to export the metric zoo into it, or run `cvscore export --out {typo}` first"
    ]
    assert not typo.exists()


def test_an_unknown_model_is_one_line_naming_the_known_ones(small_repo: Path) -> None:
    from cvscore.exporters.repository import list_models

    out = _serve("--repository", str(small_repo), "--models", "gioux")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"cvscore serve: error: Unknown model gioux; the repository {small_repo} holds: "
        + ", ".join(list_models(small_repo))
    ]


def test_a_tls_key_that_does_not_match_its_certificate_is_named(
    small_repo: Path, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=localhost", "-keyout", f"{name}.key", "-out", f"{name}.pem"],
            cwd=tmp_path, check=True, capture_output=True,
        )  # fmt: skip
    cert, key = tmp_path / "a.pem", tmp_path / "b.key"
    out = _serve("--repository", str(small_repo), "--tls-cert", str(cert), "--tls-key", str(key))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"cvscore serve: error: The TLS key {key} does not match the certificate {cert} "
        "(--tls-key, --tls-cert)"
    ]


def test_sigterm_while_loading_stops_at_once(zoo_repo: Path, processes) -> None:
    # the whole zoo in all three runtimes takes tens of seconds to load
    server = processes(zoo_repo, "--log-level", "info")
    server.wait_line(server.lines, "listening on")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    server.wait_line(server.lines, "stopping while loading models")
    assert not any(READY in line for line in server.stdout)


def test_a_busy_port_is_a_one_line_error(small_repo: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "cvscore.cli", "serve", "--repository", str(small_repo),
             "--port", str(port), "--models", "l1", "--runtime", "onnx", "--log-level", "error"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        f"cvscore serve: error: cannot listen on 127.0.0.1:{port}: address in use or not available"
    )
