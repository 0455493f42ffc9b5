"""coco_map against pycocotools' COCOeval on seeded synthetic COCO-format data."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import pytest
import torch

from cvscore.metrics import aggregators, coco

COCO = pytest.importorskip("pycocotools.coco").COCO
COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval


def synthetic_coco(
    seed: int,
    images: int = 30,
    categories: int = 4,
    gts: int = 5,
    dets: int = 12,
    crowd_rate: float = 0.1,
    quantize: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GT dict + detection list with crowd, empty images, one-sided categories, varied areas."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c + 1, "name": f"c{c + 1}"} for c in range(categories)]
    # category `categories` only in dt; category `categories-1` only in gt
    only_dt, only_gt = categories, categories - 1
    imgs = [
        {"id": int(i), "width": 640, "height": 480}
        for i in rng.permutation(np.arange(1, images + 1) * 3)
    ]
    anns, res = [], []
    aid = 1
    for k, im in enumerate(imgs):
        ng = 0 if k % 7 == 3 else int(rng.integers(0, gts * 2))
        nd = 0 if k % 5 == 2 else int(rng.integers(0, dets * 2))
        boxes = []
        for _ in range(ng):
            scale = rng.choice([12.0, 50.0, 150.0])
            w, h = rng.uniform(0.3, 1.5, 2) * scale
            x, y = rng.uniform(0, 400, 2)
            cat = int(rng.choice([c for c in range(1, categories + 1) if c != only_dt]))
            crowd = int(rng.random() < crowd_rate)
            box = [float(x), float(y), float(w), float(h)]
            if quantize:
                box = [round(v, 2) for v in box]
            area = float(box[2] * box[3] * rng.uniform(0.6, 1.0))
            anns.append(
                {
                    "id": aid,
                    "image_id": im["id"],
                    "category_id": cat,
                    "bbox": box,
                    "area": area,
                    "iscrowd": crowd,
                }
            )
            aid += 1
            boxes.append((box, cat))
        for _ in range(nd):
            if boxes and rng.random() < 0.7:
                (x, y, w, h), cat = boxes[int(rng.integers(len(boxes)))]
                j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                box = [x + j[0], y + j[1], max(w + j[2], 0.5), max(h + j[3], 0.5)]
                if rng.random() < 0.2:
                    cat = int(rng.integers(1, categories + 1))
            else:
                scale = rng.choice([12.0, 50.0, 150.0])
                box = [*rng.uniform(0, 400, 2), *(rng.uniform(0.3, 1.5, 2) * scale)]
                cat = int(rng.integers(1, categories + 1))
            if cat == only_gt:
                cat = only_dt
            if quantize:
                box = [round(float(v), 2) for v in box]
            score = (
                float(rng.choice([0.5, 0.25]))
                if rng.random() < 0.2
                else float(round(rng.random(), 3))
            )
            res.append(
                {
                    "image_id": im["id"],
                    "category_id": cat,
                    "bbox": [float(v) for v in box],
                    "score": score,
                }
            )
    cats.append({"id": only_dt + 1, "name": "unused"})  # a category with nothing at all
    return {"images": imgs, "annotations": anns, "categories": cats}, res


def pycocotools_stats(gt: dict[str, Any], dt: list[dict[str, Any]]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = copy.deepcopy(gt)
        ground.createIndex()
        evaluator = COCOeval(ground, ground.loadRes(copy.deepcopy(dt)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


def cvscore_stats(gt: dict[str, Any], dt: list[dict[str, Any]], max_pairs: int = 1 << 17):
    agg = coco.evaluate(coco.parse_coco(gt, dt), max_pairs=max_pairs)
    return np.array([agg.compute()[name] for name in coco.STAT_NAMES]), agg


def test_fixture_covers_the_corner_cases() -> None:
    gt, dt = synthetic_coco(0)
    gt_images = {a["image_id"] for a in gt["annotations"]}
    dt_images = {d["image_id"] for d in dt}
    all_images = {im["id"] for im in gt["images"]}
    assert all_images - gt_images and all_images - dt_images  # images with no gt / no dets
    assert any(a["iscrowd"] for a in gt["annotations"])
    gt_cats = {a["category_id"] for a in gt["annotations"]}
    dt_cats = {d["category_id"] for d in dt}
    assert dt_cats - gt_cats and gt_cats - dt_cats  # a category on one side only
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (
        (areas < 32**2).any()
        and ((areas > 32**2) & (areas < 96**2)).any()
        and (areas > 96**2).any()
    )
    scores = [d["score"] for d in dt]
    assert len(scores) > len(set(scores))  # tied scores exercise the mergesort order


@pytest.mark.parametrize("seed", range(12))
def test_matches_pycocotools(seed: int) -> None:
    gt, dt = synthetic_coco(
        seed,
        crowd_rate=(0.1, 0.4)[seed % 2],
        quantize=seed % 3 > 0,
        dets=(12, 60)[seed % 2],  # 60: more than maxDets=100 in some (image, category)
    )
    expected = pycocotools_stats(gt, dt)
    actual, _ = cvscore_stats(gt, dt, max_pairs=[1, 500, 1 << 17][seed % 3])
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)
    assert (expected > 0).sum() >= 6  # the fixture is not degenerate


def test_more_than_max_dets_per_image_category() -> None:
    gt, dt = synthetic_coco(3, images=4, categories=3, gts=20, dets=300)
    pairs = [(d["image_id"], d["category_id"]) for d in dt if d["category_id"] == 1]
    assert max(np.unique(pairs, axis=0, return_counts=True)[1]) > 100
    np.testing.assert_allclose(cvscore_stats(gt, dt)[0], pycocotools_stats(gt, dt), atol=1e-6)


def test_hand_worked_crowd_and_perfect() -> None:
    # One image, one gt box and a crowd region. The first detection equals the gt (IoU 1);
    # two lie inside the crowd region: IoU = I / area(det) = 1, matched, hence ignored.
    # So one TP, no FP: AP = AR@100 = 1 at every threshold (precision is 1 / (1 + eps), as
    # pycocotools' np.spacing(1)); the gt is 10x10 = small. With maxDets=1 only the
    # top-scored detection counts, the ignored crowd match, so AR@1 = 0.
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 100, 100], "area": 1e4, "iscrowd": 1},
        ],
    }  # fmt: skip
    dt = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 5, 5], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [70, 70, 5, 5], "score": 0.95},
    ]
    stats, _ = cvscore_stats(gt, dt)
    np.testing.assert_allclose(stats, pycocotools_stats(gt, dt), atol=1e-6)
    by_name = dict(zip(coco.STAT_NAMES, stats, strict=True))
    assert by_name["AP"] == pytest.approx(1.0) and by_name["AP_small"] == pytest.approx(1.0)
    assert by_name["AR100"] == 1.0 and by_name["AR1"] == 0.0
    assert by_name["AP_medium"] == -1.0 and by_name["AP_large"] == -1.0  # no gt there


def test_no_detections_at_all() -> None:
    gt, _ = synthetic_coco(1)
    stats, _ = cvscore_stats(gt, [])  # pycocotools' loadRes fails on an empty list
    assert (stats[:3] == 0).all() and (stats[6:9] == 0).all()


def test_graph_equals_pycocotools_iou() -> None:
    mask = pytest.importorskip("pycocotools.mask")
    gen = torch.Generator().manual_seed(7)
    inputs = coco._sample(gen, {"N": 9, "G": 6}, torch.float64)
    inputs["pred_group"].zero_()
    inputs["target_group"].zero_()
    out = coco.CocoBoxIoU()(**inputs).numpy()
    crowd = inputs["target_crowd"].numpy().astype(np.uint8).tolist()
    expected = mask.iou(inputs["preds"].numpy(), inputs["target"].numpy(), crowd)
    np.testing.assert_array_equal(out, expected)  # bit-exact: same float64 operations


def test_graph_marks_other_groups() -> None:
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    out = coco.coco_box_iou(
        boxes, torch.tensor([0]), boxes.repeat(2, 1), torch.tensor([0, 1]), torch.tensor([0, 0])
    )
    assert out.tolist() == [[1.0, -1.0]]  # same box in its group, -1 in another group


def _split_states(seed: int, parts: int) -> list[coco.CocoAggregator]:
    gt, dt = synthetic_coco(seed)
    data = coco.parse_coco(gt, dt)
    batches = list(coco.coco_batches(data, max_pairs=200))
    assert len(batches) >= parts
    chunks = np.array_split(np.arange(len(batches)), parts)
    states = []
    for chunk in chunks:
        agg = coco.CocoAggregator()
        for i in chunk:
            batch = batches[i]
            agg.update(
                {
                    "iou": coco.CocoBoxIoU()(
                        **{k: torch.from_numpy(batch[k]) for k in coco.GRAPH_INPUTS}
                    ).numpy()
                },
                batch,
            )
        states.append(agg)
    return states


def test_merge_is_associative_and_exact() -> None:
    one = _split_states(4, 1)[0]
    a, b, c = _split_states(4, 3)
    left = a.merge(b.merge(c))
    right = a.merge(b).merge(c)
    assert left.to_bytes() == right.to_bytes()
    figures = one.compute()
    assert left.compute() == figures == right.compute()  # byte-identical figures
    halves = _split_states(4, 2)
    assert halves[1].merge(halves[0]).compute() == figures  # order does not matter either
    many = _split_states(4, 8)
    total = many[0]
    for state in many[1:]:
        total = total.merge(coco.CocoAggregator.from_bytes(state.to_bytes()))
    assert total.compute() == figures


def test_state_round_trips_and_is_the_registered_aggregator() -> None:
    (state,) = _split_states(5, 1)
    again = coco.CocoAggregator.from_bytes(state.to_bytes())
    assert again.to_bytes() == state.to_bytes()
    assert isinstance(aggregators.create("coco_map"), coco.CocoAggregator)
    with pytest.raises(ValueError, match="mean_iou"):
        coco.CocoAggregator.from_bytes(aggregators.create("mean_iou").to_bytes())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda gt, dt: gt["annotations"][0].pop("bbox"), r"annotations\[0\]: missing key 'bbox'"),
        (lambda gt, dt: dt[1].update(bbox=[1, 2, -3, 4]), r"\[1\]: bad box"),
        (lambda gt, dt: dt[2].update(image_id=10**9), "unknown image id 1000000000"),
        (lambda gt, dt: gt.pop("images"), "missing key 'images'"),
        (lambda gt, dt: dt[0].pop("score"), r"\[0\]: missing key 'score'"),
    ],
)
def test_malformed_files_are_named(mutate: Any, message: str) -> None:
    gt, dt = synthetic_coco(2)
    mutate(gt, dt)
    with pytest.raises(ValueError, match=message):
        coco.parse_coco(gt, dt, "instances.json", "dets.json")
