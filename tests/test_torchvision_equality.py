"""isseg reproduces torchvision's Mask R-CNN (v1 and v2) detection for detection from the same checkpoint.

The checkpoints are torchvision models with seeded random weights, non-trivial BN statistics and a
classifier bias that lets detections through the score threshold, saved with ``torch.save`` exactly as a
user's torchvision checkpoint would be (91 COCO class slots, mapped onto isseg's 80 classes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import isseg

sys.path.insert(0, str(Path(__file__).parent))
from tv_reference import seeded_torchvision, torchvision_predict, tv_label_to_isseg  # noqa: E402

IMAGES = ["000000000139.jpg", "000000000802.jpg"]  # a landscape and a portrait photo


def _tie_order(det: isseg.Detections, ref: dict, ref_labels: np.ndarray) -> np.ndarray:
    """Our row for each of torchvision's, in its order. Rows keep their place except where two detections of
    one label have scores within 1e-6 (seen: 0.16816665 / 0.16816664), whose order float rounding decides;
    there the row with the nearest box is taken. Anything else must match in place."""
    order = np.arange(len(det))
    for i in range(len(det)):
        tied = [j for j in range(len(det)) if det.labels[j] == ref_labels[i]
                and abs(float(det.scores[j]) - float(ref["scores"][i])) <= 1e-6]
        if len(tied) > 1:
            order[i] = min(tied, key=lambda j: float(np.abs(det.boxes[j] - ref["boxes"][i]).max()))
    assert len(set(order.tolist())) == len(order), "two torchvision detections matched one of ours"
    assert (order != np.arange(len(det))).sum() <= 2, "more than one pair of tied detections swapped"
    return order


@pytest.mark.parametrize("version", [1, 2])
def test_same_detections_as_torchvision(version: int, coco_mini: Path, tmp_path: Path) -> None:
    from isseg.testing.equality import same_detections

    tv_model = seeded_torchvision(version)
    ckpt = tmp_path / "tv.pth"
    torch.save(tv_model.state_dict(), ckpt)
    model = isseg.build_model(f"torchvision-v{version}").eval()
    report = isseg.load_weights(model, ckpt)
    assert report.layout == "torchvision" and not report.missing and not report.unused
    for name in IMAGES:
        image = cv2.imread(str(coco_mini / "val2017" / name))
        ref = torchvision_predict(tv_model, image)
        det = model.predict(image)
        assert len(ref["scores"]) >= 20, "the seeded model should give realistic detections"
        assert len(det) == len(ref["scores"])
        order = _tie_order(det, ref, tv_label_to_isseg(ref["labels"], 91))
        boxes, scores, labels, masks = det.boxes[order], det.scores[order], det.labels[order], det.masks[order]
        np.testing.assert_array_equal(labels, tv_label_to_isseg(ref["labels"], 91))
        np.testing.assert_allclose(boxes, ref["boxes"], atol=0.05, rtol=0)
        np.testing.assert_allclose(scores, ref["scores"], atol=1e-4, rtol=0)
        assert masks.shape == ref["masks"].shape == (len(det), *image.shape[:2])
        ours = type("Ours", (), {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks})
        theirs = type("Ref", (), {**ref, "labels": tv_label_to_isseg(ref["labels"], 91)})
        eq = same_detections(theirs, ours, mask_paste="torchvision")  # masks: IoU >= 0.98 but at a paste's cut
        print(f"isseg vs torchvision v{version} {name}: {eq}")
        assert eq.ok and eq.matched == len(det), eq


def test_from_scratch_and_fine_tuned_layouts(coco_mini: Path, tmp_path: Path) -> None:
    """A v1 model trained from scratch (BatchNorm2d: running stats and ``num_batches_tracked``) with another
    number of classes (5 + background) loads with ``isseg.load_model`` and gives torchvision's detections."""
    from isseg.testing.equality import same_detections

    tv_model = seeded_torchvision(1, seed=4, num_classes=6, frozen_bn=False)
    assert any(k.endswith("num_batches_tracked") for k in tv_model.state_dict())
    ckpt = tmp_path / "scratch.pth"
    torch.save(tv_model.state_dict(), ckpt)
    model = isseg.load_model(ckpt, preset="torchvision-v1")
    assert model.config.num_classes == 5
    image = cv2.imread(str(coco_mini / "val2017" / IMAGES[1]))
    ref = torchvision_predict(tv_model, image)
    ref["labels"] = tv_label_to_isseg(ref["labels"], 6)
    assert len(ref["scores"]) >= 20
    eq = same_detections(type("Ref", (), ref), model.predict(image), mask_paste="torchvision")
    assert eq.ok and eq.matched == len(ref["scores"]), eq


@pytest.mark.parametrize("dy, accepted", [(0.0, True), (0.3, False)])
def test_a_paste_one_row_apart_is_accepted_only_at_an_integer_boundary(dy: float, accepted: bool) -> None:
    """torchvision truncates the grown box it pastes a mask into. This box (seen in test_cli_paths on an AVX2-only
    AMD EPYC) grows to a y1 of exactly 192.0, so an implementation whose box is 3e-4 px off may paste one row fewer:
    a mask resized one row apart, many pixels different (not only on its border), is then the same detection.
    The same pair 0.3 px lower, far from an integer, is a real difference."""
    from isseg.testing.equality import same_detections

    box = np.array([[22.6476993560791, 174.96986389160156 + dy, 32.8840217590332, 191.41275024414062 + dy]],
                   np.float32)
    yy, xx = np.mgrid[:240, :60]
    stripes = ((yy // 2 + xx) % 2 == 0) & (yy >= 175) & (yy < 192) & (xx >= 22) & (xx < 34)
    fewer = np.zeros_like(stripes)
    fewer[175:191] = stripes[176:192]  # the same content resized into one row fewer: shifted by about a row
    a = type("A", (), {"boxes": box, "scores": np.array([0.5]), "labels": np.array([3]), "masks": stripes[None]})
    b = type("B", (), {"boxes": box + np.float32(3e-4), "scores": np.array([0.5]), "labels": np.array([3]),
                       "masks": fewer[None]})
    eq = same_detections(a, b, mask_paste="torchvision")
    assert eq.ok is accepted and eq.at_boundary == int(accepted), eq
