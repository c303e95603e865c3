"""``InstanceMasks``: what a result's masks are. Each is held as a crop and acts as the bool [N, H, W] array it
stands for; the RLE of each is computed from its crop and equals pycocotools' encoding of the dense mask."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from isseg.data.masks import masks_to_rles
from isseg.model.masks import InstanceMasks


def _random_dense(seed: int, n: int = 12, h: int = 37, w: int = 53) -> np.ndarray:
    """Masks with runs that cross columns, touch every border, fill the frame, or are empty."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, h, w), bool)
    for k in range(n - 3):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h + 1), rng.integers(x0, w + 1)
        out[k, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.choice([0.3, 0.9, 1.0])
    out[n - 3] = True                 # the whole frame: one run over every column
    out[n - 2, :, 0] = True           # a run that ends at the bottom and one at the next column's top
    out[n - 2, 0, 1] = True
    return out                         # the last one stays empty


@pytest.mark.parametrize("seed", range(5))
def test_acts_as_the_dense_array(seed):
    dense = _random_dense(seed)
    masks = InstanceMasks.from_dense(dense)
    assert masks.shape == dense.shape and len(masks) == len(dense) and masks.dtype == np.bool_
    np.testing.assert_array_equal(np.asarray(masks), dense)
    for i in range(len(dense)):
        np.testing.assert_array_equal(masks[i], dense[i])
        np.testing.assert_array_equal(masks[i, 5:30, 7:40], dense[i, 5:30, 7:40])
        np.testing.assert_array_equal(masks[i, :, -3:], dense[i, :, -3:])   # (falls back to the dense mask)
    assert [m.sum() for m in masks] == masks.areas().tolist() == dense.sum((1, 2)).tolist()
    keep = dense.any((1, 2))
    np.testing.assert_array_equal(np.asarray(masks[keep]), dense[keep])
    np.testing.assert_array_equal(np.asarray(masks[[3, 1]]), dense[[3, 1]])
    np.testing.assert_array_equal(np.asarray(masks[2:5]), dense[2:5])


@pytest.mark.parametrize("seed", range(5))
def test_rle_from_the_crops_equals_pycocotools_on_the_dense_masks(seed):
    dense = _random_dense(seed)
    got = masks_to_rles(InstanceMasks.from_dense(dense))
    assert got == masks_to_rles(dense)
    np.testing.assert_array_equal(mask_utils.decode([{**r, "counts": r["counts"].encode()} for r in got])
                                  .transpose(2, 0, 1).astype(bool), dense)


def test_pickles_and_copies_as_a_result_sent_to_another_process():
    import copy
    import pickle

    dense = _random_dense(1)
    masks = InstanceMasks.from_dense(dense)
    for other in (pickle.loads(pickle.dumps(masks)), copy.deepcopy(masks)):
        assert other.shape == masks.shape
        np.testing.assert_array_equal(np.asarray(other), dense)


def test_rows_can_be_swapped_in_place_as_a_tracker_does():
    dense = _random_dense(0)
    masks = InstanceMasks.from_dense(dense)
    masks[[0, 4]] = masks[[4, 0]]
    dense[[0, 4]] = dense[[4, 0]]
    np.testing.assert_array_equal(np.asarray(masks), dense)


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="does not lie in the 10x10 image"):
        InstanceMasks([np.ones((4, 4), bool)], [(8, 0)], (10, 10))
    with pytest.raises(ValueError, match="2 crops but 1 origins"):
        InstanceMasks([np.ones((1, 1), bool)] * 2, [(0, 0)], (10, 10))
    with pytest.raises(ValueError, match=r"shape \[N, H, W\]"):
        InstanceMasks.from_dense(np.zeros((4, 4), bool))
    masks = InstanceMasks.from_dense(np.zeros((2, 4, 4), bool))
    with pytest.raises(TypeError, match=r"compare np.asarray\(masks\)"):
        masks != masks  # noqa: B015 - what a user might write: an error, not a silent True
    with pytest.raises(IndexError, match="index 2 is out of range for 2 masks"):
        masks[2]
    with pytest.raises(TypeError, match="only masks of an InstanceMasks"):
        masks[[0]] = np.zeros((1, 4, 4), bool)


def test_a_record_encodes_compact_masks_and_a_users_0_255_array_alike():
    from isseg.engine.records import detections_record
    from isseg.model.detections import Detections

    dense = _random_dense(2)
    n = len(dense)
    boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1))

    def record(masks):
        det = Detections(boxes, np.linspace(0.9, 0.1, n).astype(np.float32), np.zeros(n, np.int64), masks,
                         ("thing",), dense.shape[1:])
        return [d["mask"] for d in detections_record(det, "x.jpg")["detections"]]

    expected = masks_to_rles(dense)
    assert record(InstanceMasks.from_dense(dense)) == record(dense.astype(np.uint8) * 255) == expected
