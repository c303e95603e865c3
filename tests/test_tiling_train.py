"""Tile-aware training and the automatic tile size: the tile sampler cuts images and annotations correctly and
draws background tiles at the configured rate, ``isseg train --tile`` stores the tiling in its checkpoints, and
``isseg export`` / the Predictor tile with it untold; ``isseg data stats`` suggests the tile from object sizes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import TINY_TRAIN, TRAIN_SIZE
from isseg.cli.main import main
from isseg.data.coco import CocoDataset
from isseg.data.masks import mask_to_rle, polygons_to_mask, rle_to_mask
from isseg.data.synth import make_synthetic_dataset
from isseg.data.tiles import TileDataset, crop_target
from isseg.engine.sampler import SeededDataset
from isseg.tiling.options import TilingOptions
from isseg.tiling.plan import Tile
from isseg.tiling.suggest import object_sizes, suggest_tiling

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")]

SQUARE = [120.0, 60.0, 150.0, 60.0, 150.0, 80.0, 120.0, 80.0]  # a 30x20 polygon at x 120..150, y 60..80


def _frame_dataset(tmp_path: Path, frames: int = 1, hw: tuple[int, int] = (200, 300)) -> tuple[Path, Path]:
    """Images of ``hw`` with two objects each: the polygon ``SQUARE`` (painted red) and an RLE disc (painted
    green) at (60, 140) of radius 15; a COCO json over them."""
    folder = tmp_path / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    h, w = hw
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (60, 140), 15, 1, -1)
    images, anns = [], []
    for i in range(frames):
        rng = np.random.default_rng(i)
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        image[polygons_to_mask([SQUARE], h, w) > 0] = (0, 0, 255)
        image[disc > 0] = (0, 255, 0)
        cv2.imwrite(str(folder / f"{i}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
        anns.append({"id": 2 * i + 1, "image_id": i + 1, "category_id": 1, "bbox": [120.0, 60.0, 30.0, 20.0],
                     "area": 600.0, "segmentation": [SQUARE], "iscrowd": 0})
        ys, xs = np.nonzero(disc)
        anns.append({"id": 2 * i + 2, "image_id": i + 1, "category_id": 2, "area": float(disc.sum()),
                     "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                              float(ys.max() + 1 - ys.min())], "segmentation": mask_to_rle(disc), "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}]}
    path = tmp_path / "frames.json"
    path.write_text(json.dumps(coco))
    return path, folder


# ------------------------------------------------------------------------------------------------ the sampler
def test_tiles_are_crops_with_their_objects_in_tile_coordinates(tmp_path: Path) -> None:
    path, folder = _frame_dataset(tmp_path)
    base = CocoDataset(path, folder, train=True, skip_empty=True)
    frame = cv2.imread(str(folder / "0.png"))
    full = {0: polygons_to_mask([SQUARE], 200, 300), 1: rle_to_mask(json.loads(path.read_text())["annotations"][1]
                                                                    ["segmentation"])}
    tiles = SeededDataset(TileDataset(base, 64, empty_fraction=0.0), seed=3)
    seen_labels = set()
    for epoch in range(12):
        image, target = tiles[(epoch, 0)]
        x0, y0, x1, y1 = target["tile"]
        assert image.shape == (64, 64, 3) and (x1 - x0, y1 - y0) == (64, 64)
        np.testing.assert_array_equal(image, frame[y0:y1, x0:x1])  # the pixels of the frame at the tile
        assert target["masks"].shape[1:] == (64, 64) and len(target["boxes"]) >= 1
        for box, label, mask in zip(target["boxes"], target["labels"], target["masks"]):
            seen_labels.add(int(label))
            np.testing.assert_array_equal(mask.numpy(), full[int(label)][y0:y1, x0:x1])
            if int(label) == 0:  # the whole square is inside: its box, shifted by the tile's corner
                assert box.tolist() == [120 - x0, 60 - y0, 150 - x0, 80 - y0]
            colour = (0, 0, 255) if int(label) == 0 else (0, 255, 0)
            assert (image[mask.numpy() > 0] == colour).all()  # the mask lies on the object's own pixels
    assert seen_labels == {0, 1}  # tiles are drawn around either object


def test_crop_clips_boxes_and_drops_objects_mostly_outside(tmp_path: Path) -> None:
    path, folder = _frame_dataset(tmp_path)
    base = CocoDataset(path, folder, train=True)
    img, anns = base.image_info(0), base.train_annotations(0)
    label_of = {1: 0, 2: 1}
    # the square's left 20 of its 30 columns: 2/3 visible -> kept, clipped; the disc is outside
    target = crop_target(img, anns, label_of, Tile(100, 40, 140, 104), min_visible=0.5)
    assert target["labels"].tolist() == [0] and target["boxes"].tolist() == [[20.0, 20.0, 40.0, 40.0]]
    assert int(target["masks"].sum()) == 20 * 20 and target["orig_size"] == (64, 40)
    # its left 10 columns: 1/3 visible -> dropped at min_visible 0.5, kept at 0.3
    assert len(crop_target(img, anns, label_of, Tile(90, 40, 130, 104), 0.5)["boxes"]) == 0
    assert crop_target(img, anns, label_of, Tile(90, 40, 130, 104), 0.3)["boxes"].tolist() == [[30, 20, 40, 40]]
    # a tile inside an object larger than it: 16x10 of the square's 30x20 (27 %) but all of the tile -> kept
    inner = crop_target(img, anns, label_of, Tile(125, 65, 141, 75), 0.5)
    assert inner["labels"].tolist() == [0] and inner["boxes"].tolist() == [[0, 0, 16, 10]]
    assert int(inner["masks"].sum()) == 16 * 10


def test_background_tiles_appear_at_the_configured_rate(tmp_path: Path) -> None:
    path, folder = _frame_dataset(tmp_path, frames=4, hw=(300, 400))
    base = CocoDataset(path, folder, train=True, skip_empty=True)
    for rate in (0.0, 0.25):
        tiles = TileDataset(base, 48, empty_fraction=rate)
        torch.manual_seed(0)
        kinds = [tiles.choose_tile(i % 4)[1] for i in range(800)]
        empty = kinds.count("empty") / len(kinds)
        assert set(kinds) <= {"object", "empty"}  # two small objects in a large frame: an empty spot is found
        assert abs(empty - rate) < 0.05, (rate, empty)
    torch.manual_seed(1)
    targets = [TileDataset(base, 48, empty_fraction=0.25)[i % 4][1] for i in range(120)]
    without = sum(len(t["boxes"]) == 0 for t in targets) / len(targets)
    assert 0.12 < without < 0.4  # the background tiles come out without objects


# -------------------------------------------------------------------------------------------- train -> deploy
def test_train_on_tiles_stores_tiling_for_predict_and_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from isseg.deploy.predictor import Predictor
    from isseg.weights.checkpoint import checkpoint_tiling

    synth = make_synthetic_dataset(tmp_path / "synth", 4, seed=1, image_size=TRAIN_SIZE,
                                   val_fraction=0.25, max_objects=3)
    out = tmp_path / "run"
    args = ["train", "--data", str(synth["train_json"]), "--images", str(synth["train_images"]),
            "--val-data", str(synth["val_json"]), "--val-images", str(synth["val_images"]), "--output", str(out),
            "--iterations", "2", "--batch-size", "1", "--workers", "0", "--lr", "0.01", "--warmup-iters", "1",
            "--log-every", "1", "--no-progress", "--tile", "64", "--tile-overlap", "0.25", "--tile-empty", "0.2",
            ] + [a for o in TINY_TRAIN for a in ("--set", o)]  # fmt: skip
    assert main(args) == 0
    assert "training on 64x64 tiles around the annotations (20% background)" in capsys.readouterr().out
    stored = TilingOptions(tile_size=64, overlap=0.25)
    for name in ("last.pth", "best.pth"):
        assert checkpoint_tiling(out / name) == stored, name
    state = torch.load(out / "last.pth", weights_only=False)
    assert state["train"]["config"]["tile"] == 64 and state["train"]["config"]["tile_empty"] == 0.2
    with Predictor(out / "last.pth", backend="torch") as predictor:
        assert predictor.tiling == stored  # "as the model says": the checkpoint's tiling
    with Predictor(out / "last.pth", backend="torch", tiling=False) as predictor:
        assert predictor.tiling is None
    capsys.readouterr()

    assert main(["export", str(out / "best.pth"), "-o", str(tmp_path / "ir"), "--name", "tiled"]) == 0
    assert "tiling: 64x64 tiles" in capsys.readouterr().out
    with Predictor(tmp_path / "ir" / "tiled.xml") as predictor:
        assert predictor.tiling == stored  # the IR carries the checkpoint's tiling
        frame = cv2.imread(str(next(synth["val_images"].iterdir())))
        assert predictor.predict(frame).image_size == frame.shape[:2]  # tiled: 96x96 frame, 64 px tiles


# ------------------------------------------------------------------------------------------- the suggestion
def _coco(sides: list[float], hw: tuple[int, int]) -> dict:
    """One image of ``hw`` per 50 objects, square boxes of the given sides."""
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "height": hw[0], "width": hw[1]}
              for i in range(len(sides) // 50 + 1)]
    anns = [{"id": k + 1, "image_id": k // 50 + 1, "category_id": 1, "bbox": [0.0, 0.0, s, s], "iscrowd": 0,
             "area": s * s, "segmentation": [[0, 0, s, 0, s, s]]} for k, s in enumerate(sides)]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def test_suggestion_from_a_known_size_distribution(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # 4K frames: 196 objects of 40 px, 3 of 150 px, one stray 2000 px annotation. The typical object (40 px)
    # should span 0.08 of the tile: 40 / 0.08 = 500 -> 512 (multiple of 32); the 99th percentile of the longer
    # side (150 px, the stray one does not count) needs 150 / 512 = 0.29 of overlap -> 0.3 (steps of 0.05)
    coco = _coco([40.0] * 196 + [150.0] * 3 + [2000.0], (2160, 3840))
    got = suggest_tiling(object_sizes(coco), (768, 1024))
    assert got.tiling == TilingOptions(tile_size=512, overlap=0.3, full_frame=False)
    assert got.typical_px == 40 and got.robust_max_px == 150
    assert got.untiled_px == pytest.approx(40 * 1024 / 3840)  # the 4K frame fitted into 1024 wide
    assert got.tiled_px == pytest.approx(40 * 768 / 512)
    # the same objects in VGA frames are 64 px at the input already: no tiling
    vga = suggest_tiling(object_sizes(_coco([40.0] * 10, (480, 640))), (768, 1024))
    assert vga.tiling is None and vga.reason.startswith("no tiling needed") and vga.untiled_px == 64
    # 4 px objects: the tile stops at a 4x zoom (768 / 4 = 192) and says so
    tiny = suggest_tiling(object_sizes(_coco([4.0] * 10, (2160, 3840))), (768, 1024))
    assert tiny.tiling is not None and tiny.tiling.tile_size == 192 and "4x zoom" in tiny.reason
    # big objects: more than half a tile -> overlap capped at 0.5, the whole frame added
    big = suggest_tiling(object_sizes(_coco([40.0] * 90 + [400.0] * 10, (2160, 3840))), (768, 1024))
    assert big.tiling == TilingOptions(tile_size=512, overlap=0.5, full_frame=True)

    path = tmp_path / "k.json"
    path.write_text(json.dumps(coco))
    assert main(["data", "stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["tiling_suggestion"]["tiling"]["tile_size"] == 512
    assert stats["object_sizes"]["objects"] == 200 and stats["object_sizes"]["sqrt_area"]["p50"] == 40
    assert main(["data", "stats", str(path)]) == 0
    text = capsys.readouterr().out
    assert "suggested tiling for a 768x1024 input: --tile 512 --tile-overlap 0.3 --tile-full-image no" in text
    assert "object sizes (200 boxes)" in text


def test_bad_values_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps(_coco([40.0] * 5, (480, 640))))
    synth = make_synthetic_dataset(tmp_path / "synth", 2, seed=1, image_size=TRAIN_SIZE,
                                   val_fraction=0.0, max_objects=2)
    train = ["train", "--data", str(synth["train_json"]), "--images", str(synth["train_images"]), "--output",
             str(tmp_path / "run"), "--iterations", "1", "--workers", "0", "--no-progress"]
    for args, message in (
            (train + ["--tile", "16"], "tile: expected a tile size >= 32 pixels, got 16"),
            (train + ["--tile-overlap", "0.2"], "tile-overlap: needs --tile SIZE"),
            (train + ["--tile", "64", "--tile-overlap", "1"], "tile-overlap: expected a fraction in [0, 1), got 1"),
            (train + ["--tile", "64", "--tile-empty", "1.5"], "tile-empty: expected a fraction in [0, 1], got 1.5"),
            (["data", "stats", str(path), "--object-fraction", "0"], "--object-fraction: expected a fraction"),
            (["data", "stats", str(path), "--input-size", "16", "16"], "--input-size: expected a value >= 32")):
        assert main(args) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
    assert not (tmp_path / "run" / "last.pth").exists()
    with pytest.raises(ValueError, match="tile size must be an int >= 32"):
        TileDataset(None, 8)
    with pytest.raises(ValueError, match="object_fraction must be in"):
        suggest_tiling(object_sizes(_coco([4.0], (100, 100))), (768, 1024), object_fraction=1.5)
