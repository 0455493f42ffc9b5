"""COCO AP per bootstrap resample against pycocotools run on each resampled image set.

A resample is a multiset of images; pycocotools sees it as a COCO file in which every copy
of an image is a distinct image (new ids, copies of one image consecutive, in the original
order) with copies of its annotations and detections.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cvscore.gate.bootstrap import draws, multiplicities
from cvscore.metrics import coco
from cvscore.metrics.coco_resample import coco_evidence, resampled_stats
from tests.metrics.test_coco import pycocotools_stats, synthetic_coco


def untie_within_images(dt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nudge equal scores of one (image, category) apart: the one documented case where
    the weighted accumulation and pycocotools order a duplicated image's detections
    differently. Equal scores across images are kept (those are exact)."""
    seen: dict[tuple[int, int, float], int] = {}
    out = []
    for d in dt:
        key = (d["image_id"], d["category_id"], d["score"])
        seen[key] = seen.get(key, 0) + 1
        out.append({**d, "score": d["score"] + 1e-7 * (seen[key] - 1)})
    return out


def resampled_coco(
    gt: dict[str, Any], dt: list[dict[str, Any]], ids: np.ndarray, drawn: np.ndarray
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    images, anns, dets = [], [], []
    for new, pos in enumerate(np.sort(drawn).tolist(), start=1):
        old = int(ids[pos])
        images.append({"id": new, "width": 640, "height": 480})
        for a in gt["annotations"]:
            if a["image_id"] == old:  # ids from 1: pycocotools takes a match to id 0 as none
                anns.append({**a, "id": len(anns) + 1, "image_id": new})
        dets += [{**d, "image_id": new} for d in dt if d["image_id"] == old]
    return {"images": images, "annotations": anns, "categories": gt["categories"]}, dets


def evidence(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], Any]:
    gt, dt = synthetic_coco(seed)
    dt = untie_within_images(dt)
    data = coco.parse_coco(gt, dt)
    agg = coco.evaluate(data)
    return gt, dt, coco_evidence(data, agg), agg


def test_unit_weights_give_the_aggregators_figures() -> None:
    _, _, ev, agg = evidence(11)
    stats = resampled_stats(ev, np.ones((1, len(ev["ids"])), dtype=np.int64))
    expected = agg.compute()
    for name in coco.STAT_NAMES:
        assert stats[name][0] == pytest.approx(expected[name], abs=1e-12), name


@pytest.mark.parametrize("seed", [3, 8])
def test_each_resample_equals_pycocotools_on_the_resampled_set(seed: int) -> None:
    gt, dt, ev, _ = evidence(seed)
    n = len(ev["ids"])
    idx = draws(n, 3, seed)
    assert (multiplicities(idx, n) >= 2).any(axis=1).all()  # every resample duplicates
    stats = resampled_stats(ev, multiplicities(idx, n))
    for b in range(len(idx)):
        expected = pycocotools_stats(*resampled_coco(gt, dt, ev["ids"], idx[b]))
        got = np.array([stats[name][b] for name in coco.STAT_NAMES])
        # the same counts and divisions; only the order of the final means' sums differs
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert got[0] != stats["AP"][(b + 1) % len(idx)]  # resamples do differ


def test_a_category_absent_from_a_resample_is_left_out_as_pycocotools_does() -> None:
    gt, dt, ev, _ = evidence(5)
    cats = ev["categories"].tolist()
    # a draw of the images lacking one category's ground truth entirely
    k = int(np.argmin(ev["gt"][:, :, 0].sum(0) + (ev["gt"][:, :, 0].sum(0) == 0) * 10**9))
    without = np.nonzero(ev["gt"][:, k, 0] == 0)[0]
    assert 3 < len(without) < len(ev["ids"])
    drawn = np.concatenate([without, without[:3]])
    w = np.bincount(drawn, minlength=len(ev["ids"]))[None]
    stats = resampled_stats(ev, w)
    expected = pycocotools_stats(*resampled_coco(gt, dt, ev["ids"], drawn))
    got = np.array([stats[name][0] for name in coco.STAT_NAMES])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert cats[k] in {a["category_id"] for a in gt["annotations"]}
