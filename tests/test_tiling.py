"""Tiled inference without a network: tile planning, NMS / NMM, the seam join, the memory bound, stream order,
option errors. The "network" here is a bright-blob segmenter behind the runtime interface, so the whole
Predictor path (tiles, asynchronous stream, raw detections, merge, paste) runs in milliseconds.
(Exported models, rt_info and OpenVINO Model API's tiler: ``tests/test_tiling_export.py``.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from isseg.config import get_config
from isseg.deploy.contract import ModelMeta
from isseg.deploy.runtime import stream_sequentially
from isseg.tiling.merge import best_view, nmm, nms, overlap
from isseg.tiling.options import TilingOptions
from isseg.tiling.plan import Tile, axis_starts, plan_tiles

CANVAS = (128, 160)


# ------------------------------------------------------------------------------------------------ planning
@pytest.mark.parametrize("frame", [(2160, 3840), (1080, 1920), (769, 1025), (120, 160), (100, 90), (50, 4000)])
@pytest.mark.parametrize("overlap_", [0.0, 0.2, 0.5])
def test_tiles_cover_the_frame_exactly(frame, overlap_):
    tile = (768, 1024) if frame[0] > 200 else CANVAS
    tiles = plan_tiles(frame, tile, overlap_, full_frame=False)
    covered = np.zeros(frame, np.int32)
    for t in tiles:
        assert 0 <= t.x0 < t.x1 <= frame[1] and 0 <= t.y0 < t.y1 <= frame[0]
        assert t.size == (min(tile[0], frame[0]), min(tile[1], frame[1]))  # full tiles, clipped only by the frame
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert covered.min() >= 1  # every pixel, nothing outside
    for length, size in zip(frame, tile):
        starts = axis_starts(length, size, overlap_)
        assert starts[0] == 0 and starts[-1] + min(size, length) == length
        gaps = np.diff(starts)
        assert np.all(gaps > 0) and np.all(size - gaps >= overlap_ * size - 1)  # overlap kept (rounding: 1 px)
        if len(starts) > 2:  # the fewest tiles: one less would not keep the overlap
            assert (length - size) / (len(starts) - 2) > size * (1 - overlap_)


def test_full_frame_tile_first_unless_one_tile_covers_it():
    tiles = plan_tiles((2160, 3840), (768, 1024), 0.2, full_frame=True)
    assert tiles[0] == Tile(0, 0, 3840, 2160) and len(tiles) == 1 + 4 * 5  # rows: 0 459 918 1392
    assert plan_tiles((500, 600), (768, 1024), 0.2, full_frame=True) == [Tile(0, 0, 600, 500)]
    with pytest.raises(ValueError, match="empty frame"):
        plan_tiles((0, 10), (32, 32), 0.2, True)


# ------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("fields, message", [
    ({"tile_size": 16}, "tile_size must be an int or"), ({"tile_size": (64, "a")}, "tile_size"),
    ({"overlap": 1.0}, r"overlap must be a fraction in \[0, 1\)"), ({"overlap": -0.1}, "overlap"),
    ({"merge": "wbf"}, "merge must be 'nms' or 'nmm'"), ({"match_metric": "giou"}, "match_metric must be"),
    ({"match_threshold": 1.5}, r"match_threshold must be in \[0, 1\]"), ({"max_detections": 0}, "max_detections"),
    ({"full_frame": "yes"}, "full_frame must be True or False"),
])  # fmt: skip
def test_bad_options_are_one_clear_line(fields, message):
    with pytest.raises(ValueError, match=message) as info:
        TilingOptions(**fields)
    assert "\n" not in str(info.value) and str(info.value).startswith("tiling: ")


def test_options_round_trip_and_predictor_option_checked():
    from isseg.deploy.predictor import PredictorOptions

    opts = TilingOptions(tile_size=(512, 640), overlap=0.25, full_frame=False, merge="nms", match_metric="iou",
                         match_threshold=0.45, max_detections=50)
    assert TilingOptions.from_json(opts.to_json()) == opts and opts.tile_hw((768, 1024)) == (512, 640)
    assert TilingOptions().tile_hw((768, 1024)) == (768, 1024)
    assert TilingOptions(tile_size=400).tile_hw((1, 1)) == (400, 400)
    with pytest.raises(ValueError, match="not valid tiling options"):
        TilingOptions.from_json('{"overlap": 3}')
    with pytest.raises(ValueError, match="tiling must be TilingOptions, True, False or None, got str"):
        PredictorOptions(tiling="yes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ merging
def test_overlap_metrics():
    a = np.array([0, 0, 10, 10], np.float32)
    b = np.array([[5, 0, 15, 10], [2, 2, 4, 4], [20, 20, 30, 30], [3, 3, 3, 8]], np.float32)
    np.testing.assert_allclose(overlap(a, b, "iou"), [50 / 150, 4 / 100, 0, 0])
    np.testing.assert_allclose(overlap(a, b, "ios"), [0.5, 1.0, 0, 0])  # a degenerate box overlaps nothing


def test_nms_is_class_wise_and_matches_model_api():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [30, 30, 40, 40]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    labels = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, labels, "iou", 0.45) == [0, 2, 3]  # 1 suppressed by 0; 2 is another class
    utils = pytest.importorskip("model_api.models.utils")
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 200, (60, 2))
        wh = rng.uniform(5, 60, (60, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = rng.permutation(60).astype(np.float32) / 60 + 0.01  # distinct: the same order in both
        labels = rng.integers(0, 3, 60)
        theirs = utils.multiclass_nms(boxes, scores, labels, iou_threshold=0.45, max_predictions=1000)
        assert nms(boxes, scores, labels, "iou", 0.45) == list(theirs)


def _groups(groups: list[list[int]]) -> list[tuple[int, set[int]]]:
    return [(g[0], set(g[1:])) for g in groups]  # the best first; the others in no particular order


def test_nmm_joins_fragments_across_tiles_never_within_one():
    # an object cut in three by tiles 0 | 1 | 2, seen whole by the full-frame tile 3 (fragment 2 overlaps
    # fragment 1 too little: it joins through the whole view, touching the group); a small object inside
    # its box in tile 1, found by the full-frame tile too
    boxes = np.array([[30, 0, 160, 50], [70, 0, 230, 50], [200, 0, 400, 50], [30, 0, 400, 50],
                      [100, 20, 110, 30], [100, 20, 111, 31]], np.float32)
    scores = np.array([0.7, 0.9, 0.6, 0.5, 0.8, 0.4], np.float32)
    labels = np.zeros(6, np.int64)
    tiles = np.array([0, 1, 2, 3, 1, 3])
    windows = np.array([[0, 0, 160, 100], [70, 0, 230, 100], [140, 0, 400, 100], [0, 0, 400, 100]])[tiles]
    assert _groups(nmm(boxes, scores, labels, tiles, windows, "ios", 0.5)) == [(1, {0, 2, 3}), (4, {5})]
    assert nmm(boxes[:3], scores[:3], labels[:3], tiles[:3], windows[:3], "ios", 0.5) == [[1, 0], [2]]  # no whole
    # IoU does not join side-by-side fragments: the overlap is only the tiles' overlap band
    assert nmm(boxes[:3], scores[:3], labels[:3], tiles[:3], windows[:3], "iou", 0.5) == [[1], [0], [2]]
    # another class never joins
    assert nmm(boxes[:2], scores[:2], np.array([0, 1]), tiles[:2], windows[:2], "ios", 0.5) == [[1], [0]]
    # two objects the coarse whole view saw as one blob stay two: the second does not touch the first
    boxes = np.array([[0, 0, 40, 40], [0, 0, 200, 40], [150, 0, 190, 40]], np.float32)
    windows = np.array([[0, 0, 160, 100], [0, 0, 400, 100], [140, 0, 400, 100]])
    assert nmm(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3), np.array([0, 1, 2]), windows, "ios", 0.5) == [[0, 1], [2]]


def test_nmm_takes_from_each_tile_the_detection_most_like_the_object():
    """Tile 1 sees the object and a small one inside its box: both are inside the group's box (IOS 1), the
    object itself joins (IoU), the small one stays itself."""
    boxes = np.array([[10, 30, 100, 110], [20, 40, 30, 50], [11, 31, 100, 109]], np.float32)
    windows = np.array([[0, 0, 200, 120], [0, 20, 200, 200], [0, 20, 200, 200]])  # tiles 0 and 1 overlap
    groups = nmm(boxes, np.array([1.0, 0.9, 0.8]), np.zeros(3), np.array([0, 1, 1]), windows, "ios", 0.5)
    assert groups == [[0, 2], [1]]


def test_a_merged_object_takes_the_view_that_saw_it_whole():
    """Tiles 0 = x 0..160 and 1 = x 140..300 of a 100x300 frame, 2 = the whole frame (coarse)."""
    windows = np.array([[0, 0, 160, 100], [140, 0, 300, 100], [0, 0, 300, 100]])
    scores = np.array([0.6, 0.9, 0.95])
    inside_0 = np.array([[100, 10, 150, 50], [140, 10, 150, 50], [99, 9, 151, 52]], np.float32)  # cut by tile 1
    assert best_view([1, 0, 2], inside_0, scores, windows, (100, 300)) == 0  # a tile's whole view, not the coarse
    across = np.array([[100, 10, 160, 50], [140, 10, 200, 50], [99, 9, 201, 52]], np.float32)  # cut by both
    assert best_view([1, 0, 2], across, scores, windows, (100, 300)) == 2  # the whole frame saw it whole
    assert best_view([1, 0], across, scores, windows, (100, 300)) is None  # stitch the fragments
    at_frame_edge = np.array([[0, 10, 60, 50]], np.float32)  # touching the frame's edge is not a cut
    assert best_view([0], at_frame_edge, scores, windows, (100, 300)) == 0


# ---------------------------------------------------------------------------- the Predictor with blob runtime
class BlobRuntime:
    """Finds bright blobs (all channels > 200) in the network input: one detection each, its score growing
    with its area, its 28x28 mask the blob inside its box. The seed's contract outputs."""

    name, device, num_requests = "blob", "cpu", 1

    def __init__(self) -> None:
        cfg = get_config("security-0002", class_names=("blob",))
        self.meta = ModelMeta(replace(cfg, input=cfg.input.with_size(CANVAS)), "fp32")
        self.calls = 0

    def infer(self, x: np.ndarray):
        self.calls += 1
        bright = (x[0].min(axis=0) > 200).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
        labels, boxes = np.zeros(100, np.int64), np.zeros((100, 5), np.float32)
        masks = np.zeros((100, 28, 28), np.float32)
        order = sorted(range(1, n), key=lambda k: -stats[k, 4])[:100]
        for row, k in enumerate(order):
            x0, y0, w, h, area = stats[k]
            crop = (lab[y0 : y0 + h, x0 : x0 + w] == k).astype(np.float32)
            masks[row] = cv2.resize(crop, (28, 28), interpolation=cv2.INTER_LINEAR)
            boxes[row] = (x0, y0, x0 + w, y0 + h, min(0.99, 0.3 + area / 20000))
        return labels, boxes, masks

    def stream(self, items, prepare):
        return stream_sequentially(self, items, prepare)


@pytest.fixture
def blob_predictor(monkeypatch):
    import isseg.deploy.predictor as predictor_module

    runtime = BlobRuntime()
    monkeypatch.setattr(predictor_module, "open_runtime", lambda *a: (runtime, None))

    def make(**tiling):
        return predictor_module.Predictor("blob.xml", tiling=TilingOptions(**tiling) if tiling else False)

    return make


def _frame(h: int, w: int, blobs: list[tuple[str, tuple]]) -> tuple[np.ndarray, list[np.ndarray]]:
    image = np.full((h, w, 3), 40, np.uint8)
    truth = []
    for kind, args in blobs:
        mask = np.zeros((h, w), np.uint8)
        if kind == "ellipse":
            cv2.ellipse(mask, *args, 0, 0, 360, 1, -1)
        else:
            cv2.rectangle(mask, *args, 1, -1)
        image[mask > 0] = 255
        truth.append(mask > 0)
    return image, truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_object_cut_by_tile_borders_comes_out_as_one_instance(blob_predictor, monkeypatch):
    """An ellipse 240 px wide in a 128x300 frame of 128x160 tiles: every tile sees a fragment of it. NMM joins
    the fragments (their masks pasted into one), NMS keeps the best fragment alone."""
    import isseg.tiling.infer as infer

    frame, (truth,) = _frame(128, 300, [("ellipse", ((150, 64), (120, 40)))])
    pasted = []
    original = infer.paste_masks

    def counting_paste(probs, boxes, size, method, threshold, windows=None, groups=None):
        pasted.append((len(probs), len(groups)))
        return original(probs, boxes, size, method, threshold, windows, groups)

    monkeypatch.setattr(infer, "paste_masks", counting_paste)
    merged = blob_predictor(tile_size=CANVAS, overlap=0.2, full_frame=False).predict(frame)
    assert len(merged) == 1, merged
    assert _iou(merged.masks[0], truth) > 0.97  # one mask across both seams
    ys, xs = np.nonzero(truth)
    np.testing.assert_allclose(merged.boxes[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.5)
    # memory: 3 raw detections (one per tile), one full-frame mask allocated, for the one survivor
    assert pasted == [(3, 1)]
    fragments = blob_predictor(tile_size=CANVAS, overlap=0.2, full_frame=False, merge="nms", match_metric="iou",
                               match_threshold=0.45).predict(frame)
    assert len(fragments) >= 2 and max(_iou(m, truth) for m in fragments.masks) < 0.8


def test_paste_only_for_survivors_with_many_detections(blob_predictor, monkeypatch):
    """A frame with 40 blobs in 12 tiles: every blob is found in up to 4 tiles and by the whole-frame tile, yet
    full-frame masks are allocated once, for the survivors; untiled pasting is never used."""
    import isseg.tiling.infer as infer

    rng = np.random.default_rng(1)
    corners = [(10 + 72 * i + int(rng.integers(0, 30)), 8 + 46 * j + int(rng.integers(0, 20)))
               for i in range(8) for j in range(5)]
    blobs = [("rect", ((x, y), (x + 14, y + 10))) for x, y in corners]
    frame, truth = _frame(240, 600, blobs)
    calls = []
    monkeypatch.setattr(infer, "paste_detections", lambda *a, **k: pytest.fail("untiled paste used"))
    original = infer.paste_masks
    monkeypatch.setattr(infer, "paste_masks", lambda *a: calls.append((len(a[0]), len(a[6]))) or original(*a))
    det = blob_predictor(tile_size=CANVAS, overlap=0.3).predict(frame)
    raw, allocated = calls[0]
    assert len(calls) == 1 and allocated == len(det) == det.masks.shape[0] and raw > 2 * len(det)
    assert len(det) == len(truth)  # one per blob: duplicates across tiles merged
    assert all(max(_iou(m, t) for m in det.masks) > 0.85 for t in truth)


def test_one_tile_is_the_untiled_result(blob_predictor):
    frame, _ = _frame(100, 150, [("ellipse", ((70, 50), (30, 20))), ("rect", ((5, 5), (30, 20)))])
    untiled = blob_predictor().predict(frame)
    tiled = blob_predictor(tile_size=CANVAS).predict(frame)
    assert len(untiled) == 2
    for a, b in ((untiled.boxes, tiled.boxes), (untiled.scores, tiled.scores), (untiled.masks, tiled.masks)):
        np.testing.assert_array_equal(a, b)


def test_predict_stream_keeps_order_and_errors_in_place(blob_predictor, tmp_path: Path):
    frames = [_frame(130 + 20 * k, 300 + 40 * k, [("rect", ((10 + 60 * j, 20), (40 + 60 * j, 50)))
                                                   for j in range(k + 1)])[0] for k in range(4)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    p = blob_predictor(tile_size=CANVAS, overlap=0.2)
    items = [frames[0], frames[1], ValueError("camera 2 lost"), str(bad), frames[2], frames[3]]
    out = list(p.predict_stream(items, errors="return"))
    assert [type(o).__name__ for o in out] == ["Detections"] * 2 + ["ValueError"] * 2 + ["Detections"] * 2
    assert str(out[2]) == "camera 2 lost" and "bad.jpg" in str(out[3])
    for det, k in zip([out[0], out[1], out[4], out[5]], range(4)):
        assert len(det) == k + 1 and det.image_size == frames[k].shape[:2]
    with pytest.raises(ValueError, match="camera 2 lost"):
        list(p.predict_stream(items))
    assert set(p.predict(frames[1]).__dict__) and set(p.timings) == {"infer", "merge", "paste"}
