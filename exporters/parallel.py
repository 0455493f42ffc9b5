"""Exporting many metrics at once, spread over worker processes.

Exporting is CPU-bound Python (torch.export's symbolic shape reasoning, the ONNX
translation), so threads would not help; each worker is a fresh ``spawn`` process (a fork
of a process that has started torch's thread pools is not safe). A worker pays about five
seconds of imports and exporter warm-up once, so a pool is started only when at least two
models need exporting, with no more workers than models.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..metrics import registry
from . import formats as fmt
from .repository import ExportResult, export_metric, is_current

log = logging.getLogger(__name__)

# The graphs that take longest to export start first, so that they do not finish last
# alone on one core (ms_ssim: five scales of symbolic shapes, a third of a cold export).
SLOW_FIRST = ("ms_ssim",)
JOBS_ENV = "CVSCORE_EXPORT_JOBS"


@dataclass(frozen=True)
class Task:
    """One model to export: a registered metric with its parameters."""

    metric: str
    params: Mapping[str, Any] | None
    formats: tuple[str, ...]
    force: bool


def default_jobs() -> int:
    """Worker processes: ``$CVSCORE_EXPORT_JOBS``, else the cores this process may use."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if value:
        try:
            jobs = int(value)
        except ValueError:
            raise ValueError(
                f"Expected ${JOBS_ENV} to be a positive integer, got {value!r}"
            ) from None
        if jobs < 1:
            raise ValueError(f"Expected ${JOBS_ENV} to be a positive integer, got {jobs}")
        return jobs
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _run(task: Task, repo: Path) -> ExportResult:
    return export_metric(registry.get(task.metric), repo, task.params, task.formats, task.force)


def run_tasks(
    tasks: Sequence[Task],
    repo: Path,
    jobs: int,
    keep_going: bool = False,
    advance: Callable[[str], None] = lambda name: None,
) -> list[ExportResult | None]:
    """Export every task, ``jobs`` at a time; one result per task, in their order.

    A failure stops the export and is raised unless ``keep_going``, where it is logged
    with the metric's name and its result is None. ``advance`` is called with each
    metric's name as it finishes.
    """
    if jobs < 1:
        raise ValueError(f"Expected `jobs` to be a positive integer, got {jobs}")
    results: list[ExportResult | None] = [None] * len(tasks)

    def record(i: int, outcome: Callable[[], ExportResult]) -> None:
        try:
            results[i] = outcome()
        except Exception as exc:
            if not keep_going:
                raise
            log.warning("cannot export %s, leaving it out: %s", tasks[i].metric, exc)
        finally:
            advance(tasks[i].metric)

    order = sorted(range(len(tasks)), key=lambda i: tasks[i].metric not in SLOW_FIRST)
    if jobs == 1 or len(tasks) < 2:
        for i in order:
            record(i, functools.partial(_run, tasks[i], repo))
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context) as pool:
        futures: dict[Future[ExportResult], int] = {
            pool.submit(_run, tasks[i], repo): i for i in order
        }
        try:
            for future in as_completed(futures):
                record(futures[future], future.result)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def export_many(
    names: Sequence[str] | None,
    repo: Path,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    formats: Sequence[str] = tuple(fmt.FORMATS),
    force: bool = False,
    progress: bool = True,
    weights: Path | None = None,
    jobs: int | None = None,
    keep_going: bool = False,
    progress_from: int = 2,
) -> list[ExportResult]:
    """Export several metrics (all when ``names`` is empty), with a progress bar.

    ``weights`` fills the ``weights`` parameter of metrics that need a weights file (the VGG
    losses) unless ``params`` sets it. When exporting everything, a metric whose required
    file is given neither way nor by its environment variable is skipped with a warning;
    one asked for by name is exported and fails with a ValueError naming the parameter.
    Models that need exporting are spread over ``jobs`` worker processes (default
    :func:`default_jobs`); with ``keep_going`` one that fails is logged and left out.
    The progress bar shows from ``progress_from`` models on.
    """
    from tqdm import tqdm

    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (params or {}).items()}
    chosen = registry.select(names)
    stray = sorted(set(merged) - {s.name for s in chosen})
    if stray:
        raise ValueError(f"--param names metrics that are not being exported: {stray}")
    if weights is not None:
        for spec in chosen:
            if "weights" in spec.requires:
                merged.setdefault(spec.name, {}).setdefault("weights", str(weights))
    if not names:
        missing = [s for s in chosen if None in s.required_files(merged.get(s.name)).values()]
        if missing:
            log.warning(
                "skipping %s: %s a weights file; pass --weights PATH or set %s",
                ", ".join(s.name for s in missing),
                "it needs" if len(missing) == 1 else "they need",
                " / ".join(sorted({env for s in missing for env in s.requires.values()})),
            )
            chosen = [s for s in chosen if s not in missing]
    repo.mkdir(parents=True, exist_ok=True)
    tasks = [Task(s.name, merged.get(s.name), tuple(formats), force) for s in chosen]
    # up-to-date models are skipped here, so that a warm repository starts no worker
    current = []
    for task, spec in zip(tasks, chosen, strict=True):
        try:
            current.append(not force and is_current(spec, repo, task.params, formats))
        except ValueError:  # bad parameters: export_metric says so, with the others
            current.append(False)
    bar = tqdm(
        total=len(tasks),
        desc="export",
        unit="model",
        disable=not progress or len(tasks) < progress_from,
    )

    def advance(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update()

    with bar:
        stale = [i for i, t in enumerate(tasks) if not current[i]]
        outcomes = dict(
            zip(
                stale,
                run_tasks(
                    [tasks[i] for i in stale], repo, jobs or default_jobs(), keep_going, advance
                ),
                strict=True,
            )
        )
        for i, task in enumerate(tasks):
            if current[i]:
                outcomes[i] = _run(task, repo)  # skipped: reads and hashes only
                advance(task.metric)
    return [r for _, r in sorted(outcomes.items()) if r is not None]
