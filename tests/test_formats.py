"""Datasets in other formats: each written by the test (by hand or by Datumaro's exporters from a COCO dict the
test builds), read back through ``isseg.data.formats`` and compared with the COCO original: same class order,
same polygons (as polygons), same masks (pixel for pixel), same crowd flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from isseg.cli.main import main
from isseg.data import CocoDataset
from isseg.data.formats import dataset_stats, detect_format, export_dataset, load_dataset
from isseg.data.masks import mask_to_rle, segmentation_to_mask

pytest.importorskip("datumaro")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

# category ids out of name order: the class order must follow the ids (zebra, apple, mango), not the names
CATEGORIES = [{"id": 1, "name": "zebra"}, {"id": 2, "name": "apple"}, {"id": 3, "name": "mango"}]
NAMES = ["zebra", "apple", "mango"]


def _ring_mask(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (44, 30), 9, 1, -1)
    cv2.circle(m, (44, 30), 3, 0, -1)  # a hole: only a mask can hold it
    return m


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three images; polygons (one object of two parts), an RLE mask with a hole, a crowd region. The regions
    of an image do not overlap (VOC's index masks cannot hold overlaps)."""
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate([(48, 64), (40, 56), (48, 64)], 1):
        name = f"img{i}.png"
        cv2.imwrite(str(root / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        images.append({"id": i, "file_name": name, "height": h, "width": w})
    anns = [
        (1, 2, [[2.5, 3.0, 20.0, 3.0, 20.0, 15.25, 2.5, 15.25]], 0),
        (1, 1, [[25.0, 2.0, 33.0, 2.0, 29.0, 12.0], [25.0, 14.0, 33.0, 14.0, 29.0, 20.0]], 0),  # two parts
        (1, 3, mask_to_rle(_ring_mask(48, 64)), 0),
        (2, 1, [[4.0, 4.0, 30.0, 6.0, 26.0, 30.0, 6.0, 28.0]], 0),
        (2, 2, mask_to_rle(np.pad(np.ones((6, 8), np.uint8), ((30, 4), (40, 8)))), 1),  # crowd
        (3, 3, [[10.0, 10.0, 40.0, 12.0, 38.0, 40.0]], 0),
    ]
    annotations = []
    for k, (iid, cid, segm, crowd) in enumerate(anns, 1):
        h, w = images[iid - 1]["height"], images[iid - 1]["width"]
        m = segmentation_to_mask(segm, h, w)
        ys, xs = np.nonzero(m)
        annotations.append({"id": k, "image_id": iid, "category_id": cid, "segmentation": segm, "iscrowd": crowd,
                            "area": float(m.sum()), "bbox": [float(xs.min()), float(ys.min()),
                                                             float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]})
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "ann.json").write_text(json.dumps(data))
    return {"json": root / "ann.json", "images": root, "data": data}


def _objects(coco: dict[str, Any]) -> dict[str, list[tuple[str, bytes, int, Any]]]:
    """Per image basename: (class, mask bytes, crowd, segmentation) sorted; a canonical form to compare."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {img["id"]: img for img in coco["images"]}
    out: dict[str, list[tuple[str, bytes, int, Any]]] = {}
    for a in coco["annotations"]:
        img = images[a["image_id"]]
        m = segmentation_to_mask(a["segmentation"], img["height"], img["width"])
        key = Path(img["file_name"]).stem
        out.setdefault(key, []).append((names[a["category_id"]], m.tobytes(), int(a.get("iscrowd", 0)),
                                        a["segmentation"]))
    return {k: sorted(v, key=lambda t: (t[0], t[1])) for k, v in out.items()}


def _assert_same(loaded_coco: dict[str, Any], original: dict[str, Any], polygons: bool, crowd: bool = True,
                 atol: float = 1e-6) -> None:
    got, want = _objects(loaded_coco), _objects(original)
    assert sorted(got) == sorted(want)
    for key in want:
        assert len(got[key]) == len(want[key]), key
        for g, w in zip(got[key], want[key]):
            assert g[0] == w[0] and g[1] == w[1], f"{key}: {g[0]} vs {w[0]}: masks differ"
            if crowd:
                assert g[2] == w[2]
            if polygons and isinstance(w[3], list):
                assert isinstance(g[3], list) and len(g[3]) == len(w[3])
                for pg, pw in zip(sorted(g[3]), sorted(w[3])):
                    np.testing.assert_allclose(pg, pw, atol=atol)


@pytest.mark.parametrize(
    ("fmt", "detected", "polygons", "crowd"),
    [("datumaro", "datumaro", True, True), ("cvat", "cvat", True, False), ("labelme", "labelme", True, False),
     ("voc", "voc", False, False)],
)
def test_datumaro_formats_round_trip(coco: dict[str, Any], tmp_path: Path, fmt: str, detected: str,
                                     polygons: bool, crowd: bool) -> None:
    original = load_dataset(coco["json"], images=coco["images"])
    if not crowd:  # formats without crowd regions: compare the rest
        original.coco = {**original.coco, "annotations": [a for a in original.coco["annotations"]
                                                          if not a["iscrowd"]]}
    out = export_dataset(original, tmp_path / fmt, fmt, subset="train")
    assert detect_format(out) == detected
    back = load_dataset(out, classes=NAMES if fmt == "labelme" else None)  # LabelMe keeps no label list
    assert back.class_names == NAMES
    _assert_same(back.coco, original.coco, polygons=polygons, crowd=crowd)
    # the converted dict is what CocoDataset trains on: same targets as the original's
    back.write(tmp_path / "back.json")
    ds = CocoDataset(tmp_path / "back.json", back.image_dir)
    assert ds.class_names == NAMES and len(ds) == 3
    image, target = ds[0]
    assert image.shape == (48, 64, 3) and target["masks"].shape[1:] == (48, 64)


def test_voc_keeps_background_out_and_polygons_become_masks(coco: dict[str, Any], tmp_path: Path) -> None:
    original = load_dataset(coco["json"], images=coco["images"])
    back = load_dataset(export_dataset(original, tmp_path / "voc", "voc"), "voc")
    assert "background" not in back.class_names
    assert all(isinstance(a["segmentation"], dict) for a in back.coco["annotations"])


def _write_yolo(root: Path, data: dict[str, Any], src: Path) -> None:
    """An Ultralytics export written by hand: data.yaml (names as a dict), images/ and labels/ per split."""
    names = {c["id"]: c["name"] for c in data["categories"]}
    order = [c["id"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    for img in data["images"]:
        split = "val" if img["id"] == 3 else "train"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        (root / "images" / split / img["file_name"]).write_bytes((src / img["file_name"]).read_bytes())
        lines = []
        for a in data["annotations"]:
            if a["image_id"] == img["id"] and isinstance(a["segmentation"], list):
                for poly in a["segmentation"][:1]:
                    xy = [v / (img["width"] if j % 2 == 0 else img["height"]) for j, v in enumerate(poly)]
                    lines.append(" ".join([str(order.index(a["category_id"]))] + [repr(v) for v in xy]))
        lines.append("1 0.5 0.5 0.2 0.2")  # a box-only line: counted, not trained on
        (root / "labels" / split / (Path(img["file_name"]).stem + ".txt")).write_text("\n".join(lines) + "\n")
    yaml = "path: .\ntrain: images/train\nval: images/val\nnames:\n" + "".join(
        f"  {i}: {names[cid]}\n" for i, cid in enumerate(order))
    (root / "data.yaml").write_text(yaml)


def test_yolo_seg_reads_polygons_in_pixels(coco: dict[str, Any], tmp_path: Path) -> None:
    _write_yolo(tmp_path / "yolo", coco["data"], coco["images"])
    assert detect_format(tmp_path / "yolo") == "yolo-seg"
    back = load_dataset(tmp_path / "yolo")
    assert back.class_names == NAMES and back.skipped["box only"] == 3
    want = {**coco["data"], "annotations": [
        {**a, "segmentation": a["segmentation"][:1]} for a in coco["data"]["annotations"]
        if isinstance(a["segmentation"], list)]}  # fmt: skip
    _assert_same(back.coco, want, polygons=True, atol=1e-9)
    val = load_dataset(tmp_path / "yolo" / "data.yaml", "ultralytics", subset="val")
    assert [Path(i["file_name"]).name for i in val.coco["images"]] == ["img3.png"]

    # isseg's own YOLO-seg writer reads back to the same polygons
    written = export_dataset(load_dataset(tmp_path / "yolo"), tmp_path / "yolo2", "yolo-seg")
    _assert_same(load_dataset(written).coco, back.coco, polygons=True, atol=1e-9)


def test_bad_datasets_fail_with_one_line(coco: dict[str, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _write_yolo(tmp_path / "y", coco["data"], coco["images"])
    label = tmp_path / "y" / "labels" / "train" / "img2.txt"
    label.write_text("0 0.1 0.1 0.5 0.1 0.5\n")
    with pytest.raises(ValueError, match=r"img2\.txt: line 1: expected a polygon of >= 3"):
        load_dataset(tmp_path / "y")
    label.write_text("7 0.1 0.1 0.5 0.1 0.5 0.5\n")
    with pytest.raises(ValueError, match=r"img2\.txt: line 1: class 7 is outside the 3 names"):
        load_dataset(tmp_path / "y")

    original = load_dataset(coco["json"], images=coco["images"])
    out = export_dataset(original, tmp_path / "cvat", "cvat")
    xml = next(out.glob("*.xml"))
    xml.write_text(xml.read_text().replace('label="apple"', 'label="pear"', 1))
    code = main(["data", "stats", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert str(out) in err and "item 'img1'" in err and "not one of the declared labels" in err

    (out / "images" / "img2.png").unlink()
    xml.write_text(xml.read_text().replace('label="pear"', 'label="apple"'))
    with pytest.raises(ValueError, match=r"cvat: .*img2\.png"):
        load_dataset(out)
    with pytest.raises(ValueError, match="cannot tell the dataset format"):
        load_dataset(tmp_path / "y" / "labels")


def test_cli_stats_and_convert(coco: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "convert", str(coco["json"]), "--images", str(coco["images"]), "--to", "cvat",
                 "--output", str(tmp_path / "cvat")]) == 0
    assert main(["data", "convert", str(tmp_path / "cvat"), "--output", str(tmp_path / "back.json")]) == 0
    out = capsys.readouterr().out
    assert "-> " in out and "pass it as --images" in out
    back = json.loads((tmp_path / "back.json").read_text())
    assert [c["name"] for c in sorted(back["categories"], key=lambda c: c["id"])] == NAMES
    assert main(["data", "stats", str(tmp_path / "cvat"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["format"] == "cvat" and stats["images"] == 3 and stats["annotations"] == 6
    assert [c["instances"] for c in stats["classes"]] == [2, 2, 2] and stats["rle"] == 2
    assert stats == dataset_stats(load_dataset(tmp_path / "cvat")) | {"source": str(tmp_path / "cvat")}
    assert main(["data", "stats", str(coco["json"])]) == 0
    text = capsys.readouterr().out
    assert "3 images" in text and "1 crowd" in text and "zebra" in text


@pytest.mark.parametrize("fmt", ["cvat", "labelme", "datumaro"])
def test_real_coco_polygons_round_trip_exactly(coco_mini: Path, tmp_path: Path, fmt: str) -> None:
    """Real COCO polygons (2-decimal coordinates) through formats whose reader (Datumaro) holds float32: every
    mask comes back pixel for pixel, crowd RLE included; classes keep the COCO order (80, ids 1..90)."""
    full = load_dataset(coco_mini / "annotations" / "instances_val2017.json", images=coco_mini / "val2017")
    keep = {img["id"] for img in full.coco["images"][:20]}
    full.coco = {**full.coco, "images": [i for i in full.coco["images"] if i["id"] in keep],
                 "annotations": [a for a in full.coco["annotations"] if a["image_id"] in keep]}
    out = export_dataset(full, tmp_path / fmt, fmt)
    back = load_dataset(out, classes=full.class_names if fmt == "labelme" else None)
    assert back.class_names == full.class_names and len(back.class_names) == 80
    _assert_same(back.coco, full.coco, polygons=True, crowd=fmt == "datumaro", atol=1e-9)


def test_hand_written_cvat_xml(tmp_path: Path) -> None:
    """A file as CVAT's "CVAT for images 1.1" export writes it: label order from <meta>, polygon points kept,
    a <mask> (RLE of its box, row by row, starting with background) placed in the image, a lone box counted."""
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "frame_000.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "annotations.xml").write_text("""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>t</name><labels>
    <label><name>tram</name><type>any</type><attributes></attributes></label>
    <label><name>bike</name><type>any</type><attributes></attributes></label>
  </labels></task></meta>
  <image id="0" name="frame_000.png" width="64" height="48">
    <polygon label="bike" source="manual" occluded="0" points="2.50,3.00;20.00,3.00;20.00,15.25;2.50,15.25" z_order="0">
    </polygon>
    <mask label="tram" source="manual" occluded="0" rle="1, 3, 2, 2" left="40" top="30" width="4" height="2">
    </mask>
    <box label="tram" source="manual" occluded="0" xtl="1.00" ytl="1.00" xbr="5.00" ybr="5.00" z_order="0"></box>
  </image>
</annotations>
""")
    assert detect_format(tmp_path) == "cvat"
    back = load_dataset(tmp_path)
    assert back.class_names == ["tram", "bike"] and back.skipped == {"bbox without a region": 1}
    by_class = {a["category_id"]: a for a in back.coco["annotations"]}
    assert by_class[2]["segmentation"] == [[2.5, 3.0, 20.0, 3.0, 20.0, 15.25, 2.5, 15.25]]
    mask = segmentation_to_mask(by_class[1]["segmentation"], 48, 64)
    expected = np.zeros((48, 64), np.uint8)
    expected[30, 41:44] = 1  # runs 1 background, 3 object, 2 background, 2 object over the 4x2 box
    expected[31, 42:44] = 1
    assert (mask == expected).all() and by_class[1]["bbox"] == [41.0, 30.0, 3.0, 2.0]
