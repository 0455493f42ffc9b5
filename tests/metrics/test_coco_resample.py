"""COCO AP per bootstrap resample against pycocotools run on each resampled image set.

A resample is a multiset of images; pycocotools sees it as a COCO file in which every copy
of an image is a distinct image (new ids, copies of one image consecutive, in the original
order) with copies of its annotations and detections. The fixture's scores tie often, also
within one image and category, where pycocotools' order of a duplicated image's copies
matters (``coco_resample``'s docstring).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cvscore.gate.bootstrap import draws, multiplicities
from cvscore.metrics import coco
from cvscore.metrics.coco_resample import coco_evidence, resampled_stats
from tests.metrics.test_coco import pycocotools_stats, synthetic_coco


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
    gt, dt = synthetic_coco(seed)  # a fifth of the scores are 0.5 or 0.25: many ties
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


def test_same_image_ties_order_a_duplicated_image_as_pycocotools_does() -> None:
    # Image 1: a true positive and a false positive with the same score 0.9 (the true
    # positive first); image 2: one true positive at 0.5; every box 40 x 40 (medium).
    # Image 1 drawn twice: pycocotools takes copy 1's pair, then copy 2's: TP FP TP FP TP,
    # precision 1, 2/3, 3/5 at recall 1/3, 2/3, 1, so AP = (34 * 1 + 33 * 2/3 + 34 * 3/5)
    # / 101 at every IoU threshold. Each detection's copies together (TP TP FP FP TP) would
    # give (67 * 1 + 34 * 3/5) / 101 instead.
    box, away = [10.0, 10.0, 40.0, 40.0], [200.0, 200.0, 40.0, 40.0]
    gt = {
        "images": [{"id": i, "width": 640, "height": 480} for i in (1, 2)],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "bbox": box, "area": 1600.0, "iscrowd": 0}
            for i in (1, 2)
        ],
        "categories": [{"id": 1, "name": "c1"}],
    }
    dt = [
        {"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": away, "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": box, "score": 0.5},
    ]
    data = coco.parse_coco(gt, dt)
    ev = coco_evidence(data, coco.evaluate(data))
    drawn = np.array([0, 0, 1])
    stats = resampled_stats(ev, np.bincount(drawn, minlength=2)[None])
    got = np.array([stats[name][0] for name in coco.STAT_NAMES])
    expected = pycocotools_stats(*resampled_coco(gt, dt, ev["ids"], drawn))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert stats["AP"][0] == pytest.approx((34 + 33 * 2 / 3 + 34 * 3 / 5) / 101, abs=1e-12)
    assert stats["AP_medium"][0] == stats["AP"][0]
    assert stats["AR100"][0] == 1.0


def test_ties_across_images_and_within_one_resample_set() -> None:
    # the fixture's ties (same image and across images) on resamples that take its tied
    # images two and three times
    gt, dt, ev, _ = evidence(4)
    cat, image, score = ev["category"], ev["image"], ev["score"]
    same = (cat[1:] == cat[:-1]) & (image[1:] == image[:-1]) & (score[1:] == score[:-1])
    tied = np.unique(image[1:][same])
    assert len(tied) >= 3
    n = len(ev["ids"])
    drawn = np.concatenate([np.arange(n), tied, tied[::2]])
    stats = resampled_stats(ev, np.bincount(drawn, minlength=n)[None])
    got = np.array([stats[name][0] for name in coco.STAT_NAMES])
    expected = pycocotools_stats(*resampled_coco(gt, dt, ev["ids"], drawn))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
