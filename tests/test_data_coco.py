"""CocoDataset, mask encodings and training transforms, on coco-mini and on small files made here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from isseg.config import COCO_CATEGORY_IDS, COCO_CLASSES
from isseg.data import (
    CocoDataset,
    RandomHorizontalFlip,
    collate,
    hflip,
    mask_to_rle,
    masks_to_rles,
    polygons_to_mask,
    rle_to_mask,
    to_tensor_image,
)
from isseg.data.coco import read_image_bgr

# pycocotools built for NumPy 1 warns on each decode under NumPy 2 (the reference masks below)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------


def tiny_coco() -> dict:
    """A valid 2-image, 2-category file: a polygon, a crowd RLE and a sub-pixel-wide box."""
    square = [2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]
    crowd = mask_utils.encode(np.asfortranarray(np.pad(np.ones((4, 4), np.uint8), ((20, 6), (20, 10)))))
    crowd["counts"] = crowd["counts"].decode("ascii")
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 34, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 34, "height": 30},
        ],
        "categories": [{"id": 9, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 8], "segmentation": [square],
             "area": 80.0, "iscrowd": 0},
            {"id": 8, "image_id": 1, "category_id": 9, "bbox": [20, 20, 4, 4], "segmentation": crowd,
             "area": 16.0, "iscrowd": 1},
            {"id": 9, "image_id": 1, "category_id": 9, "bbox": [30, 5, 0.5, 6],
             "segmentation": [[30, 5, 30.5, 5, 30.5, 11, 30, 11]], "area": 3.0, "iscrowd": 0},
        ],
    }  # fmt: skip


def write_dataset(tmp_path: Path, data: dict, images: bool = True) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    if images:
        for img in data["images"]:
            arr = np.full((img["height"], img["width"], 3), 100, np.uint8)
            cv2.imwrite(str(tmp_path / img["file_name"]), arr)
    return path


# --------------------------------------------------------------------------------------------------------
# coco-mini
# --------------------------------------------------------------------------------------------------------


def test_coco_mini_images_and_targets_match_pycocotools(coco_mini: Path) -> None:
    ann = coco_mini / "annotations" / "instances_val2017.json"
    ds = CocoDataset(ann, coco_mini / "val2017")
    ref = COCO(str(ann))
    assert len(ds) == len(ref.imgs) == 79
    assert ds.category_ids == list(COCO_CATEGORY_IDS)
    assert ds.class_names == list(COCO_CLASSES)

    crowd_images = {a["image_id"] for a in ref.anns.values() if a["iscrowd"]}
    indices = [0, 1] + [ds.image_ids.index(i) for i in sorted(crowd_images)[:2]]
    for i in indices:
        image, target = ds[i]
        info = ref.imgs[ds.image_ids[i]]
        assert image.dtype == np.uint8 and image.shape == (info["height"], info["width"], 3)
        # BGR like OpenCV (decoders differ by rounding only; the swapped order would be far off)
        cv_image = cv2.imread(str(coco_mini / "val2017" / info["file_name"])).astype(np.int16)
        assert np.abs(image - cv_image).mean() < 2.0
        assert np.abs(image[:, :, ::-1] - cv_image).mean() > 5.0

        anns = ref.loadAnns(ref.getAnnIds(imgIds=[info["id"]]))
        assert target["image_id"] == info["id"] and target["orig_size"] == (info["height"], info["width"])
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (len(anns), 4)
        assert target["labels"].dtype == torch.int64 and target["masks"].dtype == torch.uint8
        for k, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            assert torch.allclose(
                target["boxes"][k], torch.tensor([x, y, x + w, y + h], dtype=torch.float32), atol=1e-3
            )
            assert ds.category_ids[int(target["labels"][k])] == a["category_id"]
            assert int(target["iscrowd"][k]) == a["iscrowd"]
            assert np.array_equal(target["masks"][k].numpy(), ref.annToMask(a))  # polygons and crowd RLE
    assert any(int(ds.load_target(i)["iscrowd"].sum()) for i in indices)


def test_coco_mini_train_mode_drops_crowd(coco_mini: Path) -> None:
    ann = coco_mini / "annotations" / "instances_val2017.json"
    evaluation = CocoDataset(ann, coco_mini / "val2017")
    train = CocoDataset(ann, coco_mini / "val2017", train=True)
    crowd_index = next(i for i in range(len(evaluation)) if evaluation.load_target(i)["iscrowd"].any())
    full, kept = evaluation.load_target(crowd_index), train.load_target(crowd_index)
    assert int(kept["iscrowd"].sum()) == 0
    assert len(kept["labels"]) == int((full["iscrowd"] == 0).sum())
    assert kept["masks"].shape[1:] == full["masks"].shape[1:]


def test_class_names_mapping(coco_mini: Path) -> None:
    ann = coco_mini / "annotations" / "instances_val2017.json"
    ds = CocoDataset(ann, coco_mini / "val2017")
    for label, cid in enumerate(ds.category_ids):  # round trip
        assert ds.category_id_to_label(cid) == label and ds.label_to_category_id(label) == cid

    sub = CocoDataset(ann, coco_mini / "val2017", class_names=["dog", "person"])
    assert sub.category_ids == [18, 1] and sub.category_id_to_label(1) == 1
    assert 3 in sub.unmapped_category_ids  # car: its annotations are left out
    for i in range(5):
        labels = sub.load_target(i)["labels"]
        assert set(labels.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match=r"\['unicorn'\] are not among the categories"):
        CocoDataset(ann, coco_mini / "val2017", class_names=["person", "unicorn"])
    generic = CocoDataset(ann, coco_mini / "val2017", class_names=[f"class_{i}" for i in range(80)])
    assert generic.category_ids == list(COCO_CATEGORY_IDS)


# --------------------------------------------------------------------------------------------------------
# small files
# --------------------------------------------------------------------------------------------------------


def test_tiny_dataset_train_and_eval_targets(tmp_path: Path) -> None:
    path = write_dataset(tmp_path, tiny_coco())
    ds = CocoDataset(path, tmp_path)
    assert ds.category_ids == [3, 9] and ds.class_names == ["cat", "dog"]  # sorted by category id
    t = ds.load_target(0)
    assert t["labels"].tolist() == [0, 1, 1] and t["iscrowd"].tolist() == [0, 1, 0]
    assert int(t["masks"][1].sum()) == 16  # the crowd RLE
    train = CocoDataset(path, tmp_path, train=True)
    tt = train.load_target(0)  # crowd and the 0.5 px wide box are gone
    assert tt["labels"].tolist() == [0] and tt["boxes"].tolist() == [[2.0, 2.0, 12.0, 10.0]]
    empty = train.load_target(1)
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 30, 34)
    assert len(CocoDataset(path, tmp_path, train=True, skip_empty=True)) == 1


def _mutate(data: dict, path: str, value: object) -> dict:
    data = copy.deepcopy(data)
    *parents, last = path.split("/")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is KeyError:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("annotations/0/bbox", [1, 2, 3], r"annotations\[0\] \(id=7\): field 'bbox': expected 4 numbers"),
        ("annotations/0/bbox", [1, 2, -3, 4], r"annotations\[0\] \(id=7\): field 'bbox': expected width and"),
        ("annotations/0/bbox", KeyError, r"annotations\[0\] \(id=7\): missing field 'bbox'"),
        ("annotations/0/segmentation", [[1, 2, 3, 4, 5, 6, 7]], r"field 'segmentation\[0\]'.*even number"),
        ("annotations/0/segmentation", [[1, "a", 3, 4, 5, 6]], r"field 'segmentation\[0\]'.*flat list"),
        ("annotations/0/segmentation", "oops", r"segmentation'.*list of polygons or an RLE dict"),
        ("annotations/1/segmentation/counts", KeyError, r"annotations\[1\] \(id=8\): missing field 'segm"),
        ("annotations/1/segmentation/size", [10, 10], r"'segmentation.size'.*\[30, 34\]"),
        ("annotations/1/segmentation/counts", [5, 5], r"'segmentation.counts'.*summing to height\*width"),
        ("annotations/0/category_id", 4, r"annotations\[0\] \(id=7\): field 'category_id'.*\[3, 9\], got 4"),
        ("annotations/0/image_id", 99, r"field 'image_id': expected the id of an entry of 'images', got 99"),
        ("annotations/1/id", 7, r"annotations\[1\] \(id=7\): field 'id'.*duplicate"),
        ("annotations/0/iscrowd", 2, r"field 'iscrowd': expected 0 or 1"),
        ("images/1/id", 1, r"images\[1\] \(id=1\): field 'id'.*duplicate"),
        ("images/0/width", 0, r"images\[0\] \(id=1\): field 'width': expected a positive integer"),
        ("images/0/file_name", KeyError, r"images\[0\] \(id=1\): missing field 'file_name'"),
        ("categories/0/name", 5, r"categories\[0\] \(id=9\): field 'name'"),
        ("categories", {"id": 1}, r"top-level field 'categories': expected a list"),
    ],
)
def test_malformed_annotation_errors(tmp_path: Path, path: str, value: object, expected: str) -> None:
    ann = write_dataset(tmp_path, _mutate(tiny_coco(), path, value), images=False)
    with pytest.raises(ValueError, match=expected) as info:
        CocoDataset(ann, tmp_path)
    assert str(info.value).startswith(str(ann))  # the file is named first


def test_invalid_json_names_file_and_position(tmp_path: Path) -> None:
    ann = tmp_path / "broken.json"
    ann.write_text('{"images": [],\n  "categories": [,]}')
    with pytest.raises(ValueError, match=r"broken\.json: invalid JSON at line 2 column 18"):
        CocoDataset(ann, tmp_path)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        CocoDataset(tmp_path / "nothere.json", tmp_path)


def test_degenerate_polygons_are_tolerated_and_left_out(tmp_path: Path) -> None:
    data = tiny_coco()
    data["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]  # 2 points: real COCO has a few of these
    ann = write_dataset(tmp_path, data)
    with pytest.warns(UserWarning, match="1 annotation"):
        ds = CocoDataset(ann, tmp_path)
    assert ds.num_without_mask == 1 and ds.load_target(0)["labels"].tolist() == [1, 1]


# --------------------------------------------------------------------------------------------------------
# image decoding
# --------------------------------------------------------------------------------------------------------


def _marked_rgb(h: int, w: int) -> np.ndarray:
    """Gray RGB image with a red block in the stored top-left corner."""
    arr = np.full((h, w, 3), 128, np.uint8)
    arr[:8, :8] = (255, 0, 0)
    return arr


def test_exif_orientation_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    Image.fromarray(_marked_rgb(40, 64)).save(path, quality=95, exif=exif.tobytes())

    upright, ignored = read_image_bgr(path, expected_hw=(64, 40))
    assert upright.shape == (64, 40, 3) and not ignored
    assert np.abs(upright[2, 37].astype(int) - (0, 0, 255)).max() < 40  # red (BGR) moved to top-right
    assert np.abs(upright[2, 2].astype(int) - 128).max() < 20

    # the annotation file describes the stored pixels: keep them (and say so) rather than misplace boxes
    stored, ignored = read_image_bgr(path, expected_hw=(40, 64))
    assert stored.shape == (40, 64, 3) and ignored
    assert np.abs(stored[2, 2].astype(int) - (0, 0, 255)).max() < 40
    with pytest.raises(ValueError, match=r"rot\.jpg.*annotation file says 50x50"):
        read_image_bgr(path, expected_hw=(50, 50))

    data = {"images": [{"id": 1, "file_name": "rot.jpg", "width": 64, "height": 40}], "categories": []}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = CocoDataset(tmp_path / "a.json", tmp_path)
    with pytest.warns(UserWarning, match="EXIF orientation"):
        assert ds.load_image(0).shape == (40, 64, 3)
    assert ds.exif_ignored == {"rot.jpg"}


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_loader_and_preflight_decode_through_the_one_decoder(tmp_path: Path, suffix: str, orientation: int) -> None:
    """Each EXIF orientation: the loader's pixels are the decoder's (upright, or as stored when only the stored
    size is the annotated one), and the pre-flight accepts exactly the sizes the loader accepts."""
    from isseg.data.coco import check_image_file
    from isseg.sources.decode import decode_image

    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}{suffix}"
    options = {"quality": 95} if suffix == ".jpg" else {}
    Image.fromarray(_marked_rgb(24, 40)).save(path, exif=exif.tobytes(), **options)
    data = path.read_bytes()
    upright_hw = (40, 24) if orientation >= 5 else (24, 40)
    upright, ignored = read_image_bgr(path, expected_hw=upright_hw)
    assert not ignored and np.array_equal(upright, decode_image(data, path))
    assert upright.shape[:2] == upright_hw
    check_image_file(path, upright_hw)
    if orientation >= 5:  # only a 90-degree turn makes the stored size differ from the upright one
        stored, ignored = read_image_bgr(path, expected_hw=(24, 40))
        assert ignored and np.array_equal(stored, decode_image(data, path, orientation=False))
        check_image_file(path, (24, 40))
    with pytest.raises(ValueError, match=rf"o{orientation}\{suffix}: image is .* annotation file says 30x30"):
        read_image_bgr(path, expected_hw=(30, 30))
    with pytest.raises(ValueError, match=rf"o{orientation}\{suffix}: image is .* annotation file says 30x30"):
        check_image_file(path, (30, 30))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_non_rgb_images_become_bgr(tmp_path: Path, mode: str) -> None:
    rgb = _marked_rgb(16, 20)
    if mode == "L":
        image = Image.fromarray(rgb[:, :, 0])
        expected = np.repeat(rgb[:, :, :1], 3, axis=2)
    elif mode == "I;16":
        image = Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)
        expected = np.repeat(rgb[:, :, :1], 3, axis=2)
    else:
        image = Image.fromarray(rgb).convert(mode, palette=Image.Palette.ADAPTIVE, colors=4)
        expected = rgb[:, :, ::-1]  # exact: 2 colors only
    path = tmp_path / "img.png"
    image.save(path)
    bgr, _ = read_image_bgr(path, expected_hw=(16, 20))
    assert bgr.dtype == np.uint8 and bgr.shape == (16, 20, 3)
    assert np.array_equal(bgr, expected)


def test_missing_and_corrupt_images_are_reported(tmp_path: Path) -> None:
    ann = write_dataset(tmp_path, tiny_coco())
    (tmp_path / "a.png").unlink()
    (tmp_path / "b.png").write_bytes(b"not an image")
    ds = CocoDataset(ann, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"a\.png"):
        ds[0]
    image, reason = ds.try_load_image(0)
    assert image is None and "image file not found" in reason and "a.png" in reason
    image, reason = ds.try_load_image(1)
    assert image is None and "not an image" in reason and reason.startswith(str(tmp_path / "b.png"))


# --------------------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------------------


def test_mask_encodings_round_trip() -> None:
    poly = [[2.0, 3.0, 15.0, 3.0, 9.0, 14.0]]
    mask = polygons_to_mask(poly, 20, 18)
    ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, 20, 18)))
    assert mask.dtype == np.uint8 and mask.shape == (20, 18) and np.array_equal(mask, ref) and mask.sum() > 50

    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [20, 18]
    assert np.array_equal(rle_to_mask(rle), mask)
    # uncompressed RLE (column-major run lengths, starting with background), as COCO stores crowds
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    assert sum(counts) == 20 * 18
    assert np.array_equal(rle_to_mask({"size": [20, 18], "counts": counts}), mask)

    stack = np.stack([mask, 1 - mask, np.zeros_like(mask)]).astype(bool)
    rles = masks_to_rles(stack)
    assert [int(rle_to_mask(r).sum()) for r in rles] == [int(mask.sum()), 360 - int(mask.sum()), 0]
    assert masks_to_rles(np.zeros((0, 4, 5), bool)) == []


# --------------------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------------------


def _flip_sample() -> tuple[np.ndarray, dict]:
    image = np.zeros((10, 16, 3), np.uint8)
    image[2:5, 1:4] = (1, 2, 3)
    masks = torch.zeros((1, 10, 16), dtype=torch.uint8)
    masks[0, 2:5, 1:4] = 1
    target = {"boxes": torch.tensor([[1.0, 2.0, 4.0, 5.0]]), "labels": torch.tensor([0]), "masks": masks}
    return image, target


def test_hflip_moves_image_boxes_and_masks_together() -> None:
    image, target = _flip_sample()
    flipped, ft = hflip(image, target)
    assert ft["boxes"].tolist() == [[12.0, 2.0, 15.0, 5.0]]
    ys, xs = np.nonzero(ft["masks"][0].numpy())
    assert (xs.min(), xs.max() + 1) == (12, 15)  # the mask's pixel extent is the flipped box
    assert (flipped[3, 12:15] == (1, 2, 3)).all() and flipped.flags.c_contiguous
    assert target["boxes"].tolist() == [[1.0, 2.0, 4.0, 5.0]]  # input untouched
    back, bt = hflip(*hflip(to_tensor_image(image), target))
    assert torch.equal(back, to_tensor_image(image)) and torch.equal(bt["masks"], target["masks"])

    assert RandomHorizontalFlip(0.0)(image, target)[1]["boxes"].tolist() == [[1.0, 2.0, 4.0, 5.0]]
    assert RandomHorizontalFlip(1.0)(image, target)[1]["boxes"].tolist() == [[12.0, 2.0, 15.0, 5.0]]
    flips = [RandomHorizontalFlip(0.5)(image, target)[1]["boxes"][0, 0].item() for _ in range(200)]
    assert 60 < sum(f == 12.0 for f in flips) < 140


def test_collate_and_to_tensor_image() -> None:
    image, target = _flip_sample()
    tensor = to_tensor_image(image)
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 10, 16)
    assert tensor[:, 3, 2].tolist() == [1, 2, 3]  # channel order kept (BGR in, BGR out)
    assert to_tensor_image(np.zeros((4, 5), np.uint8)).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="uint8"):
        to_tensor_image(np.zeros((4, 5, 3), np.float32))
    images, targets = collate(
        [(image, target), (np.zeros((7, 9, 3), np.uint8), {"labels": torch.tensor([])})]
    )
    assert [tuple(i.shape) for i in images] == [(3, 10, 16), (3, 7, 9)] and targets[0] is target


def test_dataloader_with_flip_and_collate(tmp_path: Path) -> None:
    ann = write_dataset(tmp_path, tiny_coco())
    ds = CocoDataset(ann, tmp_path, train=True, transform=RandomHorizontalFlip(1.0))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert [tuple(i.shape) for i in images] == [(3, 30, 34), (3, 30, 34)]
    assert targets[0]["boxes"].tolist() == [[22.0, 2.0, 32.0, 10.0]]  # 34 - x
    assert targets[0]["masks"][0, 5, 22:32].all() and not targets[0]["masks"][0, 5, 2:12].any()
