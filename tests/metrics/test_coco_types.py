"""COCO segm and keypoints against pycocotools' COCOeval; the OKS graph against computeOks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from cvscore.metrics import aggregators, coco, coco_files, coco_masks

from .coco_fixtures import keypoints_fixture, pycocotools_eval, segm_fixture, uncompressed


def _stats(gt: Any, dt: Any, iou_type: str, max_pairs: int = 1 << 16, **kw: Any) -> np.ndarray:
    agg = coco.evaluate(coco.parse_coco(gt, dt, iou_type=iou_type, **kw), max_pairs=max_pairs)
    return np.array(list(agg.compute().values()))


@pytest.mark.parametrize("seed", range(6))
def test_segm_matches_pycocotools(seed: int) -> None:
    gt, dt = segm_fixture(seed, categories=3 + seed % 2)
    kinds = {type(a["segmentation"]).__name__ for a in gt["annotations"]}
    assert kinds == {"list", "dict"} and any(a["iscrowd"] for a in gt["annotations"])
    expected = pycocotools_eval(gt, dt, "segm").stats
    actual = _stats(gt, dt, "segm", max_pairs=[1, 300, 1 << 16][seed % 3])
    assert actual.shape == (12,)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)
    assert (expected > 0).sum() >= 6  # the fixture is not degenerate


@pytest.mark.parametrize("seed", range(6))
def test_keypoints_match_pycocotools(seed: int) -> None:
    gt, dt = keypoints_fixture(seed, categories=3 + seed % 2)
    anns = gt["annotations"]
    assert any(a["num_keypoints"] == 0 for a in anns) and any(a["iscrowd"] for a in anns)
    expected = pycocotools_eval(gt, dt, "keypoints").stats
    actual = _stats(gt, dt, "keypoints", max_pairs=[1, 300, 1 << 16][seed % 3])
    assert actual.shape == (10,)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)
    assert (expected > 0).sum() >= 6


def test_keypoints_custom_sigmas_flag_and_categories() -> None:
    gt, dt = keypoints_fixture(7, k=5)
    sigmas = [0.05, 0.1, 0.2, 0.4, 0.8]
    expected = pycocotools_eval(gt, dt, "keypoints", sigmas=sigmas).stats
    np.testing.assert_allclose(_stats(gt, dt, "keypoints", sigmas=sigmas), expected, atol=1e-12)
    for cat in gt["categories"]:
        cat["sigmas"] = sigmas
    np.testing.assert_allclose(_stats(gt, dt, "keypoints"), expected, atol=1e-12)
    # COCO's 17 sigmas do not fit 5 keypoints
    with pytest.raises(ValueError, match=r"bad keypoints, expected 18 numbers .* got 15"):
        coco.parse_coco(gt, dt, iou_type="keypoints", sigmas=[0.1] * 5 + [0.2])


def test_oks_graph_equals_compute_oks() -> None:
    # pycocotools' own computeOks on one (image, category) group is the reference
    gt, dt = keypoints_fixture(3, images=4, categories=2)
    gt["images"] = gt["images"][:1]
    gt["annotations"] = [
        dict(a, image_id=gt["images"][0]["id"], category_id=1) for a in gt["annotations"]
    ][:6]
    dt = [dict(d, image_id=gt["images"][0]["id"], category_id=1) for d in dt][:9]
    assert len(gt["annotations"]) >= 2 and len(dt) >= 5
    e = pycocotools_eval(gt, dt, "keypoints")
    image = gt["images"][0]["id"]
    expected = np.asarray(e.computeOks(image, 1))
    data = coco.parse_coco(gt, dt, iou_type="keypoints")
    order = np.argsort(-data.dt_score, kind="mergesort")
    d, g = np.meshgrid(order, np.arange(len(data.gt_area)), indexing="ij")
    d, g = d.ravel(), g.ravel()
    t = torch.from_numpy
    out = coco.coco_oks(
        t(data.dt_keypoints[d]), t(data.gt_keypoints[g]), t(data.gt_box[g]),
        t(data.gt_area[g]), t(coco.COCO_SIGMAS),
    ).numpy()  # fmt: skip
    assert expected.shape == (len(order), len(data.gt_area))
    np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=1e-13, atol=1e-15)


def test_oks_hand_worked() -> None:
    # One keypoint, sigma 0.5 -> var = (2 * 0.5)^2 = 1; area 2; a detection 2 px away:
    # e = 4 / 1 / 2 / 2 = 1, OKS = exp(-1). With the keypoint unlabelled the distance is to
    # the box grown by its size: box [0, 0, 1, 1] -> [-1, 2], detection at x = 4: dx = 2.
    f64 = torch.float64
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=f64)
    area, sigma = torch.tensor([2.0], dtype=f64), torch.tensor([0.5], dtype=f64)
    pred = torch.tensor([[[2.0, 0.0, 1.0]]], dtype=f64)
    seen = coco.coco_oks(pred, torch.tensor([[[0.0, 0.0, 2.0]]], dtype=f64), box, area, sigma)
    assert seen.item() == pytest.approx(np.exp(-1.0), rel=1e-12)
    far = torch.tensor([[[4.0, 0.0, 1.0]]], dtype=f64)
    unseen = coco.coco_oks(far, torch.tensor([[[0.0, 0.0, 0.0]]], dtype=f64), box, area, sigma)
    assert unseen.item() == pytest.approx(np.exp(-1.0), rel=1e-12)


def test_mask_iou_hand_worked_crowd_and_rle_forms() -> None:
    # 10x10 image; gt: the left half (50 px); det: the top half (50 px); overlap 25 px:
    # IoU = 25 / 75; against the same region as a crowd, I / area(det) = 25 / 50.
    from pycocotools import mask as mask_utils

    left = np.zeros((10, 10), dtype=np.uint8, order="F")
    left[:, :5] = 1
    top = np.zeros((10, 10), dtype=np.uint8, order="F")
    top[:5, :] = 1
    gt_rle, dt_rle = mask_utils.encode(left), mask_utils.encode(top)
    gt = {
        "images": [{"id": 1, "height": 10, "width": 10}],
        "categories": [{"id": 1, "name": "half"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "area": 50.0, "iscrowd": 0,
             "segmentation": [[0, 0, 5, 0, 5, 10, 0, 10]]},
            {"id": 2, "image_id": 1, "category_id": 1, "area": 50.0, "iscrowd": 1,
             "segmentation": uncompressed(gt_rle)},
        ],
    }  # fmt: skip
    dt = [{"image_id": 1, "category_id": 1, "score": 0.9,
           "segmentation": {"size": [10, 10], "counts": dt_rle["counts"].decode()}}]  # fmt: skip
    data = coco.parse_coco(gt, dt, iou_type="segm")
    assert data.dt_area is not None and data.dt_area.tolist() == [50.0]
    batch = next(iter(coco.coco_batches(data)))
    iou = coco_masks.mask_iou(data, batch)
    np.testing.assert_allclose(iou, [[25 / 75, 25 / 50]], rtol=1e-12)


def test_keypoint_state_merges_and_round_trips() -> None:
    gt, dt = keypoints_fixture(2)
    data = coco.parse_coco(gt, dt, iou_type="keypoints")
    whole = coco.evaluate(data, max_pairs=1 << 16)
    batches = list(coco.coco_batches(data, max_pairs=300))
    run = coco_files._eager("coco_oks")
    parts = [aggregators.create("coco_oks") for _ in range(3)]
    for i, batch in enumerate(batches):
        parts[i % 3].update(run(coco_files.graph_inputs(batch, "keypoints")), batch)
    a, b, c = parts
    merged = a.merge(b.merge(c))
    again = aggregators.load_state(merged.to_bytes())
    assert again.compute() == merged.compute() == whole.compute()
    assert again.config["iou_type"] == "keypoints" and list(again.compute())[5] == "AR"
    with pytest.raises(ValueError, match="different parameters"):
        merged.merge(coco.CocoAggregator("bbox"))


@pytest.mark.parametrize(
    ("iou_type", "mutate", "message"),
    [
        ("segm", lambda gt, dt: dt[0].pop("segmentation"), r"\[0\]: missing key 'segmentation'"),
        ("segm", lambda gt, dt: [im.pop("height") for im in gt["images"]], "height and width"),
        ("keypoints", lambda gt, dt: dt[1].update(keypoints=[1.0, 2.0]), r"\[1\]: bad keypoints"),
        ("keypoints", lambda gt, dt: gt["annotations"][0].pop("num_keypoints"), "num_keypoints"),
    ],
)
def test_malformed_files_are_named(iou_type: str, mutate: Any, message: str) -> None:
    gt, dt = (segm_fixture if iou_type == "segm" else keypoints_fixture)(1)
    mutate(gt, dt)
    with pytest.raises(ValueError, match=message):
        coco.parse_coco(gt, dt, "instances.json", "dets.json", iou_type=iou_type)
