"""COCO AP: faster-coco-eval through ``coco_eval`` against the reference pycocotools, and input checks."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from isseg.data.masks import mask_to_rle, rle_to_mask
from isseg.engine.coco_eval import STAT_NAMES, coco_eval, detections_to_coco, format_coco_table

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def perturbed_results(gt: COCO, seed: int = 0) -> list[dict]:
    """Predictions derived from the ground truth and spoiled in the ways real ones are: jittered boxes,
    eroded / dilated / shifted masks, random scores, wrong classes, duplicates, misses, false positives."""
    rng = np.random.default_rng(seed)
    cat_ids = sorted(gt.getCatIds())
    kernel = np.ones((3, 3), np.uint8)
    results = []
    for ann in gt.loadAnns(gt.getAnnIds()):
        if ann["iscrowd"] or rng.random() < 0.15:  # crowd regions are not predicted; some objects missed
            continue
        img = gt.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        mask = gt.annToMask(ann)
        op = rng.integers(0, 4)
        if op == 1:
            mask = cv2.erode(mask, kernel, iterations=int(rng.integers(1, 4)))
        elif op == 2:
            mask = cv2.dilate(mask, kernel, iterations=int(rng.integers(1, 4)))
        elif op == 3:
            mask = np.roll(mask, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
        copies = 2 if rng.random() < 0.1 else 1
        for _ in range(copies):
            jitter = rng.normal(0, 0.08, size=4) * [w, h, w, h]
            box = [x + jitter[0], y + jitter[1], max(0.0, w + jitter[2]), max(0.0, h + jitter[3])]
            cat = ann["category_id"] if rng.random() > 0.05 else int(rng.choice(cat_ids))
            results.append({
                "image_id": img["id"], "category_id": cat, "bbox": box, "score": float(rng.random()),
                "segmentation": mask_to_rle(mask),
            })  # fmt: skip
    for img_id in gt.getImgIds():  # false positives: random rectangles, random classes
        img = gt.imgs[img_id]
        for _ in range(int(rng.integers(0, 4))):
            bw, bh = rng.uniform(4, img["width"] / 2), rng.uniform(4, img["height"] / 2)
            bx, by = rng.uniform(0, img["width"] - bw), rng.uniform(0, img["height"] - bh)
            mask = np.zeros((img["height"], img["width"]), np.uint8)
            mask[int(by) : int(by + bh), int(bx) : int(bx + bw)] = 1
            results.append({
                "image_id": img_id, "category_id": int(rng.choice(cat_ids)), "bbox": [bx, by, bw, bh],
                "score": float(rng.random() * 0.7), "segmentation": mask_to_rle(mask),
            })  # fmt: skip
    return results


def pycocotools_stats(ann_file: Path, results: list[dict], iou_type: str) -> np.ndarray:
    """The reference: pycocotools' own loadRes + COCOeval. For mask AP the records carry no box, as in
    the COCO segmentation format (and detectron2's evaluator), so the area split uses the mask area."""
    records = copy.deepcopy(results)
    for r in records:
        r.pop("segmentation" if iou_type == "bbox" else "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        evaluator = COCOeval(gt, gt.loadRes(records), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_faster_coco_eval_matches_pycocotools_on_coco_mini(coco_mini: Path) -> None:
    ann_file = coco_mini / "annotations" / "instances_val2017.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
    results = perturbed_results(gt)
    assert len(results) > 500
    stats = coco_eval(ann_file, results)  # faster-coco-eval
    fallback = coco_eval(ann_file, results, backend="pycocotools")
    for iou_type in ("bbox", "segm"):
        ref = pycocotools_stats(ann_file, results, iou_type)
        ours = np.array([stats[iou_type][k] for k in STAT_NAMES])
        assert 0.2 < ours[0] < 0.9, ours  # a non-trivial operating point, not all 0 or all 1
        np.testing.assert_allclose(ours, ref[:12], atol=1e-6, rtol=0)
        np.testing.assert_allclose([fallback[iou_type][k] for k in STAT_NAMES], ref[:12], atol=1e-6, rtol=0)
    assert stats["bbox"]["AP"] != stats["segm"]["AP"]


def _tiny_gt() -> dict:
    """Two large objects on one 200x200 image (no small / medium ground truth)."""
    mask = np.zeros((200, 200), np.uint8)
    mask[10:130, 20:140] = 1
    return {
        "images": [{"id": 5, "file_name": "x.jpg", "width": 200, "height": 200}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "bbox": [20, 10, 120, 120], "area": 14400,
             "segmentation": mask_to_rle(mask), "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 2, "bbox": [0, 0, 200, 200], "area": 40000,
             "segmentation": [[0, 0, 200, 0, 200, 200, 0, 200]], "iscrowd": 0},
        ],
    }  # fmt: skip


def test_perfect_empty_and_minus_one(tmp_path: Path) -> None:
    gt = _tiny_gt()
    perfect = [
        {"image_id": 5, "category_id": 1, "bbox": [20, 10, 120, 120], "score": 0.9,
         "segmentation": gt["annotations"][0]["segmentation"]},
        {"image_id": 5, "category_id": 2, "bbox": [0, 0, 200, 200], "score": 0.8,
         "segmentation": mask_to_rle(np.ones((200, 200), np.uint8))},
    ]  # fmt: skip
    stats = coco_eval(gt, perfect)
    for t in ("bbox", "segm"):
        assert stats[t]["AP"] == pytest.approx(1.0) and stats[t]["APl"] == pytest.approx(1.0)
        assert stats[t]["APs"] == -1 and stats[t]["APm"] == -1  # no ground truth of that size
    assert gt["annotations"][0]["segmentation"]["counts"]  # the caller's dict is not modified
    assert "ignore" not in gt["annotations"][0]

    empty = coco_eval(gt, [])
    assert empty["bbox"]["AP"] == 0 and empty["segm"]["AR100"] == 0 and empty["bbox"]["APs"] == -1

    path = tmp_path / "results.json"
    path.write_text(json.dumps(perfect))
    assert coco_eval(gt, path, iou_types=("bbox",)) == {"bbox": stats["bbox"]}
    # only the requested images count: image 5 is the only one here, so a subset of it is the same
    assert coco_eval(gt, perfect, image_ids=[5])["segm"] == stats["segm"]
    with pytest.raises(ValueError, match=r"image_ids not in the ground truth: \[6\]"):
        coco_eval(gt, perfect, image_ids=[5, 6])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"score": None}, r"results\[1\] \(image_id=5\): field 'score': expected a finite number"),
        ({"category_id": 3}, r"results\[1\] \(image_id=5\): field 'category_id'.*\[1, 2\], got 3"),
        ({"image_id": 4}, r"results\[1\]: field 'image_id': expected the id of an image"),
        ({"bbox": [1, 2, 3]}, r"results\[1\] \(image_id=5\): field 'bbox': expected 4 numbers"),
        ({"bbox": KeyError}, r"results\[1\] \(image_id=5\): missing field 'bbox'"),
        ({"segmentation": KeyError}, r"results\[1\] \(image_id=5\): missing field 'segmentation'"),
        ({"segmentation": {"size": [10, 10], "counts": "abc"}}, r"'segmentation.size'.*\[200, 200\]"),
    ],
)
def test_bad_result_records(change: dict, expected: str) -> None:
    good = {"image_id": 5, "category_id": 1, "bbox": [20, 10, 120, 120], "score": 0.5,
            "segmentation": mask_to_rle(np.ones((200, 200), np.uint8))}  # fmt: skip
    bad = dict(good)
    for k, v in change.items():
        if v is KeyError:
            del bad[k]
        else:
            bad[k] = v
    with pytest.raises(ValueError, match=expected):
        coco_eval(_tiny_gt(), [good, bad])


def test_bad_results_file(tmp_path: Path) -> None:
    path = tmp_path / "res.json"
    path.write_text('[{"image_id": 5,')
    with pytest.raises(ValueError, match=r"res\.json: invalid JSON"):
        coco_eval(_tiny_gt(), path)
    path.write_text('{"image_id": 5}')
    with pytest.raises(ValueError, match=r"res\.json: expected a list of result records"):
        coco_eval(_tiny_gt(), path)
    with pytest.raises(ValueError, match="iou_types"):
        coco_eval(_tiny_gt(), [], iou_types=("keypoints",))


def test_detections_to_coco() -> None:
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:6, 3:9] = True
    masks[1, 10:20, 0:30] = True
    det = SimpleNamespace(
        boxes=torch.tensor([[3.0, 2.0, 9.0, 6.0], [0.0, 10.0, 30.0, 20.0]]),
        scores=torch.tensor([0.9, 0.25]),
        labels=torch.tensor([1, 0]),
        masks=torch.from_numpy(masks),
    )
    records = detections_to_coco(det, image_id=42, category_ids=[7, 11])
    assert [r["category_id"] for r in records] == [11, 7] and [r["image_id"] for r in records] == [42, 42]
    assert records[0]["bbox"] == [3.0, 2.0, 6.0, 4.0] and records[1]["score"] == pytest.approx(0.25)
    assert isinstance(records[0]["segmentation"]["counts"], str)
    assert np.array_equal(rle_to_mask(records[1]["segmentation"]), masks[1])
    json.dumps(records)  # JSON-ready

    boxes_only = SimpleNamespace(boxes=np.zeros((1, 4)), scores=np.ones(1), labels=np.zeros(1), masks=None)
    assert "segmentation" not in detections_to_coco(boxes_only, 1, [3])[0]
    empty = SimpleNamespace(boxes=np.zeros((0, 4)), scores=np.zeros(0), labels=np.zeros(0), masks=None)
    assert detections_to_coco(empty, 1, [3]) == []
    with pytest.raises(ValueError, match="label 2 is outside the 2 mapped classes"):
        detections_to_coco(
            SimpleNamespace(boxes=np.zeros((1, 4)), scores=[1.0], labels=[2], masks=None), 1, [3, 4]
        )


def test_format_coco_table() -> None:
    stats = {
        "bbox": dict.fromkeys(STAT_NAMES, 0.5) | {"APs": -1.0},
        "segm": dict.fromkeys(STAT_NAMES, 0.25),
    }
    table = format_coco_table(stats)
    lines = table.splitlines()
    assert len(lines) == 13 and lines[0].split() == ["box", "mask"]
    assert lines[1].startswith("AP ") and lines[1].split()[-2:] == ["0.500", "0.250"]
    assert lines[4].split()[-2:] == ["n/a", "0.250"]
    assert "maxDets=  1" in lines[7]
    assert format_coco_table({"bbox": stats["bbox"]}).splitlines()[0].split() == ["box"]


def test_falls_back_to_pycocotools_without_faster_coco_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from isseg.engine import coco_eval as module

    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import now raises ImportError
    assert module.pick_backend("auto") == "pycocotools"
    gt = _tiny_gt()
    record = {"image_id": 5, "category_id": 2, "bbox": [0, 0, 200, 200], "score": 0.5,
              "segmentation": mask_to_rle(np.ones((200, 200), np.uint8))}  # fmt: skip
    assert coco_eval(gt, [record])["segm"]["AP"] == pytest.approx(0.5)  # 1 of 2 classes found
    with pytest.raises(ValueError, match="backend must be"):
        coco_eval(gt, [record], backend="fast")
