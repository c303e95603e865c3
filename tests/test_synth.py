"""The procedural shapes dataset: valid COCO, visible-part masks, determinism, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from isseg.cli.main import main
from isseg.data import CocoDataset
from isseg.data.masks import rle_to_bbox, rle_to_mask
from isseg.data.synth import CLASS_NAMES, make_synthetic_dataset, render_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_dataset_files_and_annotations(tmp_path: Path) -> None:
    paths = make_synthetic_dataset(tmp_path / "ds", num_images=10, seed=1, image_size=96, val_fraction=0.2)
    assert set(paths) == {"train_json", "train_images", "val_json", "val_images"}
    train, val = (json.loads(paths[f"{s}_json"].read_text()) for s in ("train", "val"))
    assert (
        [c["name"] for c in train["categories"]]
        == list(CLASS_NAMES)
        == [c["name"] for c in val["categories"]]
    )
    assert len(train["images"]) == 8 and len(val["images"]) == 2
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}  # held out
    ann_ids = [a["id"] for a in train["annotations"] + val["annotations"]]
    assert len(ann_ids) == len(set(ann_ids)) and len(ann_ids) >= 10
    assert {a["category_id"] for a in train["annotations"]} <= {1, 2, 3, 4, 5}

    for split in ("train", "val"):
        ds = CocoDataset(paths[f"{split}_json"], paths[f"{split}_images"], train=True)  # validates the file
        data = train if split == "train" else val
        for i in range(len(ds)):
            image, target = ds[i]
            assert image.shape == (96, 96, 3)
            masks = target["masks"].numpy()
            # visible parts: no pixel belongs to two objects, and every kept object is big enough
            assert masks.sum(axis=0).max(initial=0) <= 1
            assert all(m.sum() >= 16 for m in masks)
        for a in data["annotations"]:
            mask = rle_to_mask(a["segmentation"])
            assert a["area"] == int(mask.sum()) and a["bbox"] == rle_to_bbox(a["segmentation"])


def test_deterministic_per_seed_and_extensible(tmp_path: Path) -> None:
    a = make_synthetic_dataset(tmp_path / "a", num_images=4, seed=7, image_size=64, val_fraction=0.25)
    b = make_synthetic_dataset(tmp_path / "b", num_images=4, seed=7, image_size=64, val_fraction=0.25)
    c = make_synthetic_dataset(tmp_path / "c", num_images=4, seed=8, image_size=64, val_fraction=0.25)
    d = make_synthetic_dataset(tmp_path / "d", num_images=6, seed=7, image_size=64, val_fraction=0.0)
    assert a["train_json"].read_text() == b["train_json"].read_text()
    assert a["val_json"].read_text() == b["val_json"].read_text()
    same = (a["train_images"] / "000000.jpg").read_bytes()
    assert same == (b["train_images"] / "000000.jpg").read_bytes()
    assert same != (c["train_images"] / "000000.jpg").read_bytes()
    assert same == (d["train_images"] / "000000.jpg").read_bytes()  # image i depends on (seed, i) only
    assert len(json.loads(d["val_json"].read_text())["images"]) == 0


def test_occlusion_removes_hidden_pixels() -> None:
    # many objects in a small image: occlusion is certain; masks must stay disjoint and non-trivial
    total_dropped = 0
    for i in range(5):
        image, objects = render_image(np.random.default_rng(i), 64, max_objects=12)
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        stack = np.stack([m for _, m in objects]) if objects else np.zeros((0, 64, 64))
        assert stack.sum(axis=0).max(initial=0) <= 1
        total_dropped += 12 - len(objects)
    assert total_dropped > 0


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_images"):
        make_synthetic_dataset(tmp_path, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        make_synthetic_dataset(tmp_path, 4, val_fraction=1.0)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_dataset(tmp_path, 4, image_size=8)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = main(["synth", "--output", str(out), "--num-images", "3", "--seed", "2", "--size", "48",
                 "--format", "png"])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000.png", "000001.png"]
    assert [p.name for p in (out / "val").iterdir()] == ["000002.png"]
    printed = capsys.readouterr().out
    assert "train: 2 images" in printed and "val: 1 images" in printed
