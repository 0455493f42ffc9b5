"""Every spec names its paper and its oracle for real: no placeholders ("-", "n/a", "TODO")."""

from __future__ import annotations

import re

import pytest

from cvscore.metrics import registry

PLACEHOLDERS = {"", "-", "–", "—", "n/a", "na", "none", "tbd", "todo", "?", "unknown"}


def meaningful(text: str) -> bool:
    cleaned = text.strip().lower()
    return cleaned not in PLACEHOLDERS and len(re.findall(r"[a-z]", cleaned)) >= 4


@pytest.mark.parametrize("spec", registry.specs(), ids=lambda s: s.name)
def test_paper_and_oracle_are_not_placeholders(spec: registry.MetricSpec) -> None:
    assert meaningful(spec.paper), (spec.name, spec.paper)
    assert meaningful(spec.oracle), (spec.name, spec.oracle)
    assert meaningful(spec.summary), (spec.name, spec.summary)
    # a paper reference carries its year (or an arXiv / DOI / URL)
    assert re.search(r"(19|20)\d\d|arxiv|doi|https?://", spec.paper, re.I), spec.paper


@pytest.mark.parametrize("bad", ["-", "–", "n/a", "TODO", "  ", "x"])
def test_placeholders_are_refused(bad: str) -> None:
    assert not meaningful(bad)
