"""Paired bootstrap intervals and the checks decided on them.

References are brute-force loops over resamples with the documented draw
(``np.random.default_rng(seed).integers(0, N, size=(B, N))``), never the vectorised code.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvscore.gate.bootstrap import Bootstrap, PairingError, percentile_interval
from cvscore.gate.checks import Check, evaluate_checks
from cvscore.gate.evidence import evidence_bytes, load_evidence
from cvscore.gate.report import round_sig, summary_markdown, write_junit

SEED, B = 7, 1000
REDUCTIONS = ["mean", "median", "min", "max", "std"]


def samples(scores: np.ndarray) -> dict[str, Any]:
    ids = np.arange(len(scores))
    return {"kind": "samples", "ids": ids, "scores": scores, "params": {}, "figures": REDUCTIONS}


def brute_force(scores: np.ndarray, how: str, seed: int = SEED, b: int = B) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scores), size=(b, len(scores)))
    reduce = {
        "mean": lambda x: math.fsum(x.tolist()) / len(x),
        "median": np.median,
        "min": np.min,
        "max": np.max,
        "std": np.std,
    }[how]
    return np.array([reduce(scores[row]) for row in idx])


def check(kind: str, threshold: float, **kw: Any) -> Check:
    figure = kw.pop("figure", "pairs/psnr/mean")
    hib = kw.pop("higher_is_better", True)
    relative = kw.pop("relative", False)
    return Check(f"{figure} {kind}", figure, kind, threshold, relative, hib, **kw)


@pytest.mark.parametrize("how", REDUCTIONS)
def test_per_sample_interval_equals_a_brute_force_bootstrap_exactly(how: str) -> None:
    scores = np.random.default_rng(1).normal(30.0, 2.0, 57)
    boot = Bootstrap({"pairs/psnr": samples(scores)}, None, SEED)
    values = boot.values(f"pairs/psnr/{how}", B)
    assert values is not None
    expected = brute_force(scores, how)
    assert np.array_equal(values, expected)
    lo, hi = np.percentile(expected, [2.5, 97.5])
    assert percentile_interval(values, 0.95) == (lo, hi)
    # and the check reports that interval, rounded to its digits
    [result] = evaluate_checks(
        [check("min", 20.0, figure=f"pairs/psnr/{how}", confidence=0.95)],
        {f"pairs/psnr/{how}": 30.0}, None, 5, boot,
    )  # fmt: skip
    assert result.interval is not None
    assert (result.interval.low, result.interval.high) == (round_sig(lo, 5), round_sig(hi, 5))


def test_the_paired_difference_uses_the_same_resamples() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(30.0, 3.0, 40)
    cand = base - 0.3 + rng.normal(0, 0.05, 40)  # a small drop, far smaller than the spread
    boot = Bootstrap({"pairs/psnr": samples(cand)}, {"pairs/psnr": samples(base)}, SEED)
    drop = brute_force(base, "mean") - brute_force(cand, "mean")
    [result] = evaluate_checks(
        [check("max_drop", 0.1, confidence=0.95)],
        {"pairs/psnr/mean": float(cand.mean())}, {"pairs/psnr/mean": float(base.mean())}, 5, boot,
    )  # fmt: skip
    lo, hi = np.percentile(drop, [2.5, 97.5])
    assert result.interval is not None
    assert (result.interval.low, result.interval.high) == (round_sig(lo, 5), round_sig(hi, 5))
    # paired, the drop is known to within ~0.02; unpaired intervals would be ~1 dB wide
    assert 0.25 < lo < hi < 0.35
    assert result.verdict == "fail" and not result.passed


def identical_evidence() -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(3)
    n = 30
    confusion = rng.integers(0, 50, size=(n, 3, 3))
    hits = rng.integers(0, 4, size=(n, 2))
    return {
        "pairs/psnr": samples(rng.normal(30, 2, n)),
        "masks/mean_iou": {
            "kind": "confusion", "ids": np.arange(n), "confusion": confusion, "params": {},
            "figures": [],
        },
        "emb/recall_at_k": {
            "kind": "retrieval", "ids": np.arange(n), "hits": np.sort(hits, 1),
            "relevant": np.full(n, 4), "params": {"ks": [1.0, 5.0]}, "figures": [],
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    "figure",
    ["pairs/psnr/mean", "pairs/psnr/std", "masks/mean_iou/mean_iou", "masks/mean_iou/iou_2",
     "emb/recall_at_k/recall@5", "emb/recall_at_k/hit_rate@1"],
)  # fmt: skip
def test_a_candidate_identical_to_the_baseline_never_fails(figure: str) -> None:
    ev = identical_evidence()
    boot = Bootstrap(ev, ev, SEED)
    base = boot.baseline_values(figure, B)
    cand = boot.values(figure, B)
    assert cand is not None and base is not None
    assert np.array_equal(cand, base)
    assert percentile_interval(cand, 0.95)[1] > percentile_interval(cand, 0.95)[0]  # noisy
    point = {figure: 0.5}
    for relative in (False, True):
        [result] = evaluate_checks(
            [check("max_drop", 0.0, figure=figure, relative=relative, confidence=0.95)],
            point, point, 5, boot,
        )  # fmt: skip
        assert result.interval is not None and result.interval.change == (0.0, 0.0)
        assert result.verdict == "pass" and result.passed


def test_an_interval_straddling_the_threshold_is_inconclusive(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(30.0, 3.0, 12)
    cand = base - 0.5 + rng.normal(0, 1.0, 12)  # a drop of ~0.5 dB, noisy, 12 images
    boot = Bootstrap({"pairs/psnr": samples(cand)}, {"pairs/psnr": samples(base)}, SEED)
    figures = {"pairs/psnr/mean": float(cand.mean())}
    baseline = {"pairs/psnr/mean": float(base.mean())}
    results = evaluate_checks(
        [check("max_drop", 0.5, confidence=0.95, inconclusive=policy)
         for policy in ("warn", "fail", "pass")],
        figures, baseline, 5, boot,
    )  # fmt: skip
    for r in results:
        assert r.interval is not None
        assert r.interval.low < 0.5 < r.interval.high
        assert r.verdict == "inconclusive"
    warn, fail, passes = results
    assert warn.passed and not fail.passed and passes.passed
    assert "inconclusive (warn)" in warn.basis
    # without `confidence` the same figures are decided on the point value, as before
    [point] = evaluate_checks([check("max_drop", 0.5)], figures, baseline, 5)
    assert point.interval is None and point.basis == "point value"
    write_junit(tmp_path / "junit.xml", "g", results, 1.0, {})
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == "1" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert cases[0].find("skipped") is not None and cases[2].find("skipped") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("type") == "max_drop inconclusive"
    props = {p.get("name"): p.get("value") for p in cases[2].iter("property")}
    assert props["verdict"] == "inconclusive"
    summary = summary_markdown("g", results, "onnx", 5, {}, [], "b.json")
    assert "1 inconclusive" not in summary and "3 inconclusive" in summary
    assert summary.count("| ⚠️ |") == 2 and summary.count("| ❌ |") == 1


def test_min_with_confidence_fails_passes_or_is_inconclusive() -> None:
    scores = np.random.default_rng(5).normal(30.0, 2.0, 50)
    boot = Bootstrap({"pairs/psnr": samples(scores)}, None, SEED)
    lo, hi = percentile_interval(brute_force(scores, "mean"), 0.9)
    cases = {lo - 0.1: "pass", hi + 0.1: "fail", (lo + hi) / 2: "inconclusive"}
    results = evaluate_checks(
        [check("min", t, confidence=0.9) for t in cases], {"pairs/psnr/mean": 30.0}, None, 5, boot
    )
    assert [r.verdict for r in results] == list(cases.values())
    # the point value alone (30 >= threshold) would have passed the middle one
    assert [r.passed for r in results] == [True, False, True]


def test_evidence_round_trips_and_pairs_only_the_same_units(tmp_path: Path) -> None:
    ev = identical_evidence()
    data = evidence_bytes(ev)
    assert evidence_bytes(ev) == data  # deterministic bytes
    (tmp_path / "e.npz").write_bytes(data)
    back = load_evidence(tmp_path / "e.npz")
    for key, value in ev.items():
        for name, array in value.items():
            if isinstance(array, np.ndarray):
                assert np.array_equal(back[key][name], array), (key, name)
    with np.load(tmp_path / "e.npz", allow_pickle=False) as npz:  # no object arrays
        assert all(npz[k].dtype != object for k in npz.files)
    other = {"pairs/psnr": samples(np.zeros(31))}
    with pytest.raises(PairingError, match="other samples"):
        Bootstrap(ev, other, SEED).baseline_values("pairs/psnr/mean", 100)


def coco_evidence_of(gt: dict[str, Any], dt: list[dict[str, Any]]) -> dict[str, Any]:
    from cvscore.metrics import coco
    from cvscore.metrics.coco_resample import coco_evidence

    data = coco.parse_coco(gt, dt)
    return {"kind": "coco", "params": {}, "figures": [], **coco_evidence(data, coco.evaluate(data))}


def detector(seed: int, images: int, jitter: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ground truth and a detector's output: jittered copies of most boxes, some clutter."""
    rng = np.random.default_rng(seed)
    anns: list[dict[str, Any]] = []
    for image in range(1, images + 1):
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.uniform(12, 70, 2)
            box = [float(rng.uniform(0, 100)), float(rng.uniform(0, 60)), float(w), float(h)]
            anns.append({"id": len(anns) + 1, "image_id": image, "bbox": box, "area": w * h,
                         "category_id": int(rng.integers(1, 4)), "iscrowd": 0})  # fmt: skip
    gt = {
        "images": [{"id": i} for i in range(1, images + 1)],
        "annotations": anns,
        "categories": [{"id": c} for c in (1, 2, 3)],
    }
    rng = np.random.default_rng(seed + 1)  # the detector's own noise
    dt = []
    for a in anns:
        x, y, w, h = a["bbox"]
        dx, dy, dw, dh = rng.normal(0, jitter, 4) * [w, h, w, h]
        box = [x + dx, y + dy, max(w + dw, 1.0), max(h + dh, 1.0)]
        dt.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": box,
                   "score": float(rng.uniform(0.5, 1.0))})  # fmt: skip
    for _ in range(images // 3):
        box = [*rng.uniform(0, 100, 2).tolist(), *rng.uniform(10, 50, 2).tolist()]
        dt.append({"image_id": int(rng.integers(1, images + 1)), "bbox": box,
                   "category_id": int(rng.integers(1, 4)), "score": float(rng.uniform(0, 0.7))})  # fmt: skip
    return gt, dt


def test_a_planted_coco_regression_is_detected_and_an_identical_one_is_not() -> None:
    gt, good = detector(9, 60, jitter=0.05)
    _, worse = detector(9, 60, jitter=0.08)  # a real, modest localisation regression
    base = {"boxes/coco_map": coco_evidence_of(gt, good)}
    cand = {"boxes/coco_map": coco_evidence_of(gt, worse)}
    ap = "boxes/coco_map/AP"
    checks = [check("max_drop", 0.02, figure=ap, confidence=0.95)]
    regressed = Bootstrap(cand, base, SEED)
    point = {ap: 0.5}  # the point values play no part in a confidence check's verdict
    [result] = evaluate_checks(checks, point, point, 5, regressed)
    assert result.interval is not None and result.interval.low > 0.02, result.interval
    assert result.verdict == "fail" and not result.passed
    [same] = evaluate_checks(checks, point, point, 5, Bootstrap(base, base, SEED))
    assert same.interval is not None and same.interval.change == (0.0, 0.0)
    assert same.verdict == "pass"
