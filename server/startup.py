"""Start-up checks of the repository, and exporting into it when asked.

``cvscore serve`` serves a repository as it is: it must exist and hold every model named in
``--models``. Only with ``export_missing`` (``--export-missing``, and the default cache when
no ``--repository`` is given) are registered metrics exported into it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import ServerConfig

log = logging.getLogger("cvscore.server.app")


def prepare_repository(config: ServerConfig, progress: bool = True) -> Path:
    """Check the repository and, when asked, export into it; return the repository.

    With ``export_missing`` (``--export-missing``, and the default cache) every registered
    metric, or those in ``models``, is exported unless up to date; a metric that fails to
    export is logged and left out rather than stopping the server. Without it the
    repository must exist and hold every model in ``models`` (:func:`check_repository`).
    """
    from ..exporters import export_many
    from ..exporters.repository import list_models
    from ..metrics import registry

    repo = config.repository
    present = set(list_models(repo))
    known = registry.names()
    check_repository(config, sorted(present), known)
    if not config.export_missing:
        check_staleness(repo, config.models)  # served as it is, never written to unless asked
        return repo
    wanted = [n for n in (config.models or known) if n in known]
    if not wanted:
        check_staleness(repo, config.models, rebuild=True)
        return repo
    log.info("exporting %d model(s) into %s", len(wanted), repo)
    # a metric that fails to export is logged and left out; the others are served
    export_many(wanted, repo, progress=progress, keep_going=True, progress_from=1)
    check_staleness(repo, config.models, rebuild=True)  # variants with non-default params
    return repo


def check_repository(config: ServerConfig, present: Sequence[str], known: Sequence[str]) -> None:
    """ValueError, one line, when the repository or a requested model cannot be served."""
    repo = config.repository
    if not config.export_missing:
        if not repo.is_dir():
            raise ValueError(
                f"The repository {repo} does not exist; pass --export-missing to export the "
                f"metric zoo into it, or run `cvscore export --out {repo}` first"
            )
        if not present and config.model_control == "none":  # others may load models later
            raise ValueError(
                f"The repository {repo} holds no models; pass --export-missing to export the "
                "metric zoo into it, or serve it with --model-control explicit or poll"
            )
    servable = set(present) | (set(known) if config.export_missing else set())
    unknown = [n for n in config.models if n not in servable]
    if not unknown:
        return
    exportable = [n for n in unknown if n in known]
    hint = (
        f"; {', '.join(exportable)} can be exported with --export-missing"
        if exportable and not config.export_missing
        else ""
    )
    where = "known models" if config.export_missing else f"the repository {repo} holds"
    raise ValueError(
        f"Unknown model{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
        f"{where}: {', '.join(sorted(servable)) or 'none'}{hint}"
    )


def check_staleness(repo: Path, models: Sequence[str] = (), rebuild: bool = False) -> list[str]:
    """Report the models whose artifacts no longer match the installed definitions.

    Each stale model is logged by name with the reason; with ``rebuild`` (the server owns
    the repository) it is re-exported with its manifest's parameters and formats instead.
    Returns the names still stale afterwards.
    """
    from ..exporters import export_metric
    from ..exporters.formats import FORMATS
    from ..exporters.repository import list_models, read_manifest, staleness
    from ..metrics import registry

    stale = []
    for name in list_models(repo):
        if models and name not in models:
            continue
        manifest = read_manifest(repo / name)
        reason = staleness(repo / name, manifest)
        if reason is None:
            continue
        if rebuild and manifest is not None:
            try:
                spec = registry.get(str(manifest.get("metric")))
                files = manifest.get("files") or {}
                formats = [f for f, filename in FORMATS.items() if filename in files]
                export_metric(
                    spec, repo, manifest.get("params"), formats or tuple(FORMATS), name=name
                )
                log.info("re-exported %s: %s", name, reason)
                continue
            except Exception as exc:
                reason = f"{reason}; re-export failed: {exc}"
        log.warning(
            "model %s is stale: %s; it is served as built. Re-export it with `cvscore export`",
            name,
            reason,
        )
        stale.append(name)
    return stale
