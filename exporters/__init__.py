"""Exporters: freeze a metric spec and its parameters into artifacts in a model repository."""

from .formats import FORMATS
from .parallel import export_many
from .repository import ExportResult, export_metric, list_models, read_manifest

__all__ = [
    "FORMATS",
    "ExportResult",
    "export_many",
    "export_metric",
    "list_models",
    "read_manifest",
]
