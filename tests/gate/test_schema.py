"""The gate file's schema: types and ranges checked, and the line of every key found."""

from __future__ import annotations

import pytest

from cvscore.gate.schema import CHECK, GATE, Field, Lines, Problems

TEXT = """\
# a comment
[gate]
name = "g"
runtime = "onnx"

[datasets.boxes]
kind = "coco"
metrics.coco_map = {}
options = { depth = 2, width = [
  1,
  2,
] }

[[checks]]
figure = "a/b/c"

[[checks]]
"figure" = 'x/y/z'
min = 0.5
"""


def test_lines_of_tables_dotted_keys_inline_tables_and_arrays_of_tables() -> None:
    lines = Lines(TEXT)
    assert lines.line(("gate",)) == 2
    assert lines.line(("gate", "runtime")) == 4
    assert lines.line(("datasets", "boxes")) == 6
    assert lines.line(("datasets", "boxes", "metrics", "coco_map")) == 8
    # a multi-line value is found on the line that completes it
    assert lines.line(("datasets", "boxes", "options", "width")) == 12
    assert lines.line(("checks", 0)) == 14
    assert lines.line(("checks", 0, "figure")) == 15
    assert lines.line(("checks", 1, "figure")) == 18
    assert lines.line(("checks", 1, "min")) == 19
    # a key that is not there: the nearest enclosing one
    assert lines.line(("checks", 1, "max")) == 17
    assert lines.line(("nowhere",)) is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (GATE["digits"], 1, "expected an integer in [2, 15], got 1"),
        (GATE["digits"], True, "expected an integer, got True"),
        (GATE["runtime"], "tensorrt", "expected one of eager, torchscript, onnx"),
        (GATE["name"], "a b", "expected letters, digits"),
        (CHECK["min"], "high", "expected a finite number, got 'high'"),
        (CHECK["min"], float("inf"), "expected a finite number"),
        (CHECK["max_drop"], -0.1, "expected a number >= 0, got -0.1"),
        (CHECK["higher_is_better"], 1, "expected true or false, got 1"),
        (Field("list[str]", choices=("mean", "min")), ["mean", "mode"], "expected a list from"),
    ],
)
def test_fields_refuse_what_they_do_not_declare(field: Field, value: object, message: str) -> None:
    problem = field.problem(value)
    assert problem is not None and message in problem


def test_fields_accept_what_they_declare() -> None:
    assert GATE["digits"].problem(5) is None
    assert CHECK["min"].problem(0) is None and CHECK["min"].problem(0.5) is None
    assert Field("list[str]", choices=("mean", "min")).problem("min") is None


def test_a_table_reports_unknown_missing_and_bad_keys_with_lines() -> None:
    text = "[[checks]]\nfigure = 3\nmn = 0.3\n"
    problems = Problems("g.toml", Lines(text))
    good = problems.table(("checks", 0), {"figure": 3, "mn": 0.3}, CHECK)
    assert good == {}
    shown = sorted(str(p) for p in problems.items)
    assert shown == [
        "g.toml:2: checks[0].figure: expected a string, got 3",
        "g.toml:3: checks[0].mn: unknown key (expected one of confidence, drop, figure, "
        "higher_is_better, inconclusive, max, max_drop, min, name, resamples)",
    ]
    problems = Problems("g.toml", Lines("[[checks]]\nmin = 1\n"))
    problems.table(("checks", 0), {"min": 1}, CHECK)
    assert [str(p) for p in problems.items] == [
        "g.toml:1: checks[0]: missing key `figure` (dataset/metric/figure)"
    ]
