"""The gate file's schema, declared once, and the checker that reports against it.

A gate file is parsed with :mod:`tomllib`; its tables are checked against the fields
declared here (type, required, choices, range, pattern), and every problem is kept with
the line it comes from. tomllib reports no positions, so :class:`Lines` finds them with
tomllib too: the line of a key is the first line whose prefix of the file, parsed, holds
that key. That is exact for every TOML form (dotted keys, inline tables, arrays of tables)
and needs no grammar of its own.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class Field:
    """One key of a table: its type and what values it may take."""

    type: str  # "str" | "int" | "number" | "bool" | "path" | "table" | "tables" | "list[str]"
    doc: str = ""
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None

    def problem(self, value: Any) -> str | None:
        """None when ``value`` fits, else what was expected (and what was got)."""
        t = self.type
        ok = {
            "str": isinstance(value, str),
            "path": isinstance(value, str),
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": _is_number(value) and math.isfinite(value),
            "table": isinstance(value, dict),
            "tables": isinstance(value, list) and all(isinstance(v, dict) for v in value),
            "list[str]": isinstance(value, str | list)
            and all(isinstance(v, str) for v in ([value] if isinstance(value, str) else value)),
        }[t]
        if not ok:
            return f"expected {_NOUNS[t]}, got {value!r}"
        if self.choices and t != "list[str]" and value not in self.choices:
            return f"expected one of {', '.join(self.choices)}, got {value!r}"
        if self.choices and t == "list[str]":
            items = [value] if isinstance(value, str) else value
            if not items or any(v not in self.choices for v in items):
                return f"expected a list from {list(self.choices)}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"expected {self._range()}, got {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"expected {self._range()}, got {value!r}"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"expected {self.doc or self.pattern}, got {value!r}"
        return None

    def _range(self) -> str:
        noun = "an integer" if self.type == "int" else "a number"
        if self.minimum is not None and self.maximum is not None:
            return f"{noun} in [{self.minimum:g}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"{noun} >= {self.minimum:g}"
        return f"{noun} <= {self.maximum:g}"


_NOUNS = {
    "str": "a string",
    "path": "a path string",
    "bool": "true or false",
    "int": "an integer",
    "number": "a finite number",
    "table": "a table",
    "tables": "an array of tables ([[...]])",
    "list[str]": "a list of strings",
}

GATE_RUNTIMES = ("eager", "torchscript", "onnx")
REDUCTIONS = ("mean", "median", "min", "max", "std")
INCONCLUSIVE = ("fail", "warn", "pass")

# -- the schema -----------------------------------------------------------------------------
TOP: dict[str, Field] = {
    "gate": Field("table", "the gate's options"),
    "datasets": Field("table", "one [datasets.NAME] table per dataset", required=True),
    "checks": Field("tables", "one [[checks]] table per checked figure", required=True),
}
GATE: dict[str, Field] = {
    "name": Field("str", "letters, digits, '_', '-', '.'", pattern=r"[A-Za-z0-9_.-]+"),
    "runtime": Field("str", "where the metrics run", choices=GATE_RUNTIMES),
    "digits": Field("int", "significant digits of every figure", minimum=2, maximum=15),
    "baseline": Field("path", "a previous report.json, for max_drop checks"),
    "batch_size": Field("int", "rows per batch", minimum=1),
    "seed": Field("int", "the bootstrap's seed", minimum=0),
    "resamples": Field(
        "int",
        "bootstrap resamples for every figure's interval (0: none)",
        minimum=0,
        maximum=100000,
    ),
    "confidence": Field(
        "number", "the level of every figure's interval", minimum=0.5, maximum=0.999
    ),
}
# kind -> its keys besides `kind` and `metrics`; a path's doc says what it must name.
DATASETS: dict[str, dict[str, Field]] = {
    "coco": {
        "gt": Field("path", "file", required=True),
        "dt": Field("path", "file", required=True),
        "iou_type": Field("str", "pycocotools' iouType", choices=("bbox", "segm", "keypoints")),
    },
    "segmentation": {
        "gt": Field("path", "dir", required=True),
        "pred": Field("path", "dir", required=True),
    },
    "images": {
        "target": Field("path", "path", required=True),
        "pred": Field("path", "path", required=True),
    },
    "embeddings": {
        "embeddings": Field("path", "file", required=True),
        "labels": Field("path", "file", required=True),
        "gallery": Field("path", "file"),
        "gallery_labels": Field("path", "file"),
    },
}
DATASET_COMMON: dict[str, Field] = {
    "kind": Field("str", "the dataset's format", required=True, choices=tuple(DATASETS)),
    "metrics": Field("table", "one [datasets.NAME.metrics.METRIC] table per metric", required=True),
}
# The dataset metric each kind takes; `images` takes per-sample metrics of (preds, target).
DATASET_METRICS = {"coco": "coco_map", "segmentation": "mean_iou", "embeddings": "recall_at_k"}
# A coco dataset with iou_type = "keypoints" takes the OKS graph instead.
KEYPOINT_METRIC = "coco_oks"
# Per-sample metrics take `reduce` besides their own parameters.
REDUCE = Field("list[str]", "how per-sample scores are reduced", choices=REDUCTIONS)
CHECK: dict[str, Field] = {
    "figure": Field("str", "dataset/metric/figure", required=True),
    "name": Field("str", "the check's name in the reports"),
    "min": Field("number", "the figure must be at least this"),
    "max": Field("number", "the figure must be at most this"),
    "max_drop": Field("number", "the largest drop from the baseline", minimum=0),
    "drop": Field("str", "how max_drop is measured", choices=("absolute", "relative")),
    "higher_is_better": Field("bool", "the direction of a drop (default: the metric's)"),
    "confidence": Field(
        "number", "decide on a bootstrap interval at this level", minimum=0.5, maximum=0.999
    ),
    "resamples": Field("int", "bootstrap resamples for `confidence`", minimum=100, maximum=100000),
    "inconclusive": Field(
        "str", "what an interval straddling the threshold means", choices=INCONCLUSIVE
    ),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- problems and their lines -------------------------------------------------------------------
class Lines:
    """The line each key path of a TOML text first appears on (see the module docstring)."""

    def __init__(self, text: str) -> None:
        self.where: dict[Path_, int] = {}
        lines = text.splitlines()
        for n in range(1, len(lines) + 1):
            try:
                prefix = tomllib.loads("\n".join(lines[:n]))
            except tomllib.TOMLDecodeError:
                continue  # inside a multi-line value: its keys appear once it is complete
            self._record(prefix, (), n)

    def _record(self, node: Any, path: Path_, n: int) -> None:
        if path:
            self.where.setdefault(path, n)
        if isinstance(node, dict):
            for key, value in node.items():
                self._record(value, (*path, key), n)
        elif isinstance(node, list) and all(isinstance(v, dict) for v in node) and node:
            for i, value in enumerate(node):
                self._record(value, (*path, i), n)

    def line(self, path: Sequence[Any]) -> int | None:
        """The line of ``path``, or of its nearest enclosing key that has one."""
        key = tuple(path)
        while key:
            if key in self.where:
                return self.where[key]
            key = key[:-1]
        return None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a gate file: where (line, key path) and what."""

    source: str
    line: int | None
    key: str  # "datasets.boxes.dt", "checks[2].min", or "" for the file as a whole
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.key + ': ' if self.key else ''}{self.message}"


def key_label(path: Sequence[Any]) -> str:
    label = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path)
    return label.replace(".[", "[")


class ConfigError(Exception):
    """A gate file that cannot be used; ``problems`` holds every problem found, in order."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: p.line or 0)
        noun = "problem" if len(self.problems) == 1 else "problems"
        body = "\n  ".join(str(p) for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} configuration {noun}:\n  {body}")


class Problems:
    """Collects problems with their lines; :meth:`raise_if_any` raises them together."""

    def __init__(self, source: str, lines: Lines | None) -> None:
        self.source, self.lines = source, lines
        self.items: list[Problem] = []

    def add(self, path: Sequence[Any], message: str) -> None:
        line = self.lines.line(path) if self.lines else None
        self.items.append(Problem(self.source, line, key_label(path), message))

    def table(
        self, path: Path_, value: Any, fields: Mapping[str, Field], what: str = ""
    ) -> dict[str, Any]:
        """Check a table against ``fields``: the keys whose values fit, as they are."""
        if not isinstance(value, dict):
            self.add(path, f"expected a table, got {value!r}")
            return {}
        for key in sorted(set(value) - set(fields)):
            expected = ", ".join(sorted(fields))
            self.add((*path, key), f"unknown key{what} (expected one of {expected})")
        good: dict[str, Any] = {}
        for key, field in fields.items():
            if key not in value:
                if field.required:
                    self.add(path, f"missing key `{key}` ({field.doc})")
                continue
            problem = field.problem(value[key])
            if problem is None:
                good[key] = value[key]
            else:
                self.add((*path, key), problem)
        return good

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.source, self.items)
