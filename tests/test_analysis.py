"""Per-class numbers, PR curves, confusion matrix and report of ``isseg evaluate``; streamed records and
``--results`` scoring. The predictor is a stand-in that answers with a perturbed ground truth, so AP is
neither 0 nor 1 and every class has misses, confusions and false alarms."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import isseg.cli.evaluate as cli_evaluate
from isseg.cli.main import main
from isseg.data import CocoDataset
from isseg.data.synth import CLASS_NAMES, make_synthetic_dataset
from isseg.engine.analysis import confusion_matrix
from isseg.engine.coco_eval import coco_eval
from isseg.engine.evaluate import analysis_dir_for, evaluate, evaluate_records, records_path_for
from isseg.engine.records import read_records, write_records
from isseg.model.detections import Detections

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class NoisyPredictor:
    """Ground truth with some objects dropped, some relabelled, masks shifted, random scores and one
    spurious detection per image; recognizes the image by its pixels."""

    def __init__(self, dataset: CocoDataset, seed: int = 0, fail_after: int | None = None) -> None:
        self.class_names = list(dataset.class_names)
        self.answers: dict[str, Detections] = {}
        self.calls = 0
        self.fail_after = fail_after
        rng = np.random.default_rng(seed)
        for i in range(len(dataset)):
            image, target = dataset.load_image(i), dataset.load_target(i)
            keep = (target["iscrowd"] == 0).numpy() & (rng.random(len(target["labels"])) > 0.2)
            boxes = target["boxes"].numpy()[keep]
            labels = target["labels"].numpy()[keep].copy()
            flip = rng.random(len(labels)) < 0.25
            labels[flip] = rng.integers(0, len(self.class_names), int(flip.sum()))
            masks = target["masks"].numpy()[keep].astype(bool)
            masks = np.stack([np.roll(m, int(rng.integers(-2, 3)), axis=1) for m in masks]) if len(masks) else masks
            h, w = image.shape[:2]
            spurious = np.zeros((1, h, w), bool)
            spurious[0, 2:12, 2:12] = True
            self.answers[self._key(image)] = Detections(
                boxes=np.concatenate([boxes, [[2, 2, 12, 12]]]).astype(np.float32),
                scores=rng.uniform(0.3, 1.0, len(labels) + 1).astype(np.float32),
                labels=np.concatenate([labels, [int(rng.integers(0, len(self.class_names)))]]).astype(np.int64),
                masks=np.concatenate([masks.reshape(-1, h, w), spurious]),
                class_names=tuple(self.class_names), image_size=(h, w),
            )

    @staticmethod
    def _key(image: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()

    def predict(self, image: np.ndarray) -> Detections:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.answers[self._key(image)]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), num_images=10, seed=3, image_size=96,
                                  val_fraction=0.0)


@pytest.fixture(scope="module")
def run(shapes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    ds = CocoDataset(shapes["train_json"], shapes["train_images"])
    out = tmp_path_factory.mktemp("eval") / "report.json"
    report = evaluate(NoisyPredictor(ds), shapes["train_json"], shapes["train_images"], output=out, progress=False)
    return {"report": report, "path": out}


def test_per_class_numbers_are_the_coco_evaluators(run: dict[str, object], shapes: dict[str, Path]) -> None:
    report, path = run["report"], run["path"]
    assert 0.2 < report["segm"]["AP"] < 0.95
    rows = report["per_class"]
    assert [r["class"] for r in rows] == list(CLASS_NAMES)
    for kind, iou_type in (("mask", "segm"), ("box", "bbox")):
        valid = [r[f"{kind}_AP"] for r in rows if r[f"{kind}_AP"] >= 0]
        assert np.mean(valid) == pytest.approx(report[iou_type]["AP"], abs=1e-12)
        assert np.mean([r[f"{kind}_AP50"] for r in rows if r[f"{kind}_AP50"] >= 0]) == pytest.approx(
            report[iou_type]["AP50"], abs=1e-12)
        assert np.mean([r[f"{kind}_AR"] for r in rows if r[f"{kind}_AR"] >= 0]) == pytest.approx(
            report[iou_type]["AR100"], abs=1e-12)

    # each class alone, evaluated by a separate COCO run on that class only, gives the same AP
    gt = json.loads(shapes["train_json"].read_text())
    results = json.loads(Path(report["results_file"]).read_text())
    for row in rows[:3]:
        cid = row["category_id"]
        one = {**gt, "categories": [c for c in gt["categories"] if c["id"] == cid],
               "annotations": [a for a in gt["annotations"] if a["category_id"] == cid]}
        alone = coco_eval(one, [r for r in results if r["category_id"] == cid])
        assert row["mask_AP"] == pytest.approx(alone["segm"]["AP"], abs=1e-12)
        assert row["box_AP75"] == pytest.approx(alone["bbox"]["AP75"], abs=1e-12)
        assert row["instances"] == sum(1 for a in one["annotations"] if not a.get("iscrowd", 0))

    files = report["analysis"]
    folder = analysis_dir_for(path)
    for key in ("per_class", "pr_box", "pr_mask", "confusion_png", "confusion_csv", "html", "markdown"):
        assert Path(files[key]).is_file() and Path(files[key]).parent == folder
    for png in ("pr_box.png", "pr_mask.png", "confusion_mask.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (folder / png).stat().st_size < 200_000
    page = (folder / "report.html").read_text()
    for name in ("pr_mask.png", "confusion_mask.png", "per_class.csv", "confusion_mask.csv", "star"):
        assert name in page
    assert "pr_box.png" in (folder / "report.md").read_text()
    csv_rows = (folder / "per_class.csv").read_text().splitlines()
    assert csv_rows[0].startswith("class,category_id,instances,detections,box_AP") and len(csv_rows) == 6

    # the confusion matrix: each true object is either found once or missed (its row sums to its count)
    lines = [line.split(",") for line in (folder / "confusion_mask.csv").read_text().splitlines()]
    matrix = np.array([[int(v) for v in line[1:]] for line in lines[1:]])
    assert lines[0][-1] == "background" and matrix.shape == (6, 6) and matrix[5, 5] == 0
    assert [int(v) for v in matrix[:5].sum(axis=1)] == [r["instances"] for r in rows]
    assert np.trace(matrix[:5, :5]) > 0 and matrix[:5, :5].sum() > np.trace(matrix[:5, :5])  # confusions


def test_confusion_matrix_hand_counted() -> None:
    def box(x: float, y: float) -> list[float]:
        return [x, y, 10.0, 10.0]

    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 100}],
          "categories": [{"id": 4, "name": "a"}, {"id": 9, "name": "b"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 4, "bbox": box(0, 0), "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 4, "bbox": box(20, 0), "iscrowd": 0},
              {"id": 3, "image_id": 1, "category_id": 9, "bbox": box(40, 0), "iscrowd": 0},  # missed
              {"id": 4, "image_id": 1, "category_id": 9, "bbox": [60.0, 60.0, 40.0, 40.0], "iscrowd": 1}]}
    dets = [{"image_id": 1, "category_id": 4, "bbox": box(0, 0), "score": 0.9},     # a as a
            {"image_id": 1, "category_id": 4, "bbox": box(0, 1), "score": 0.8},     # duplicate: background
            {"image_id": 1, "category_id": 9, "bbox": box(21, 0), "score": 0.7},    # a as b
            {"image_id": 1, "category_id": 9, "bbox": box(40, 0), "score": 0.1},    # below the threshold
            {"image_id": 1, "category_id": 4, "bbox": box(70, 70), "score": 0.9},   # on the crowd: ignored
            {"image_id": 1, "category_id": 9, "bbox": box(0, 80), "score": 0.6}]    # nothing there
    m = confusion_matrix(gt, dets, [1], [4, 9], iou_type="bbox", score_threshold=0.5)
    assert m.tolist() == [[1, 1, 0], [0, 0, 1], [1, 1, 0]]


def test_records_stream_and_rescore(run: dict[str, object], shapes: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    report, path = run["report"], run["path"]
    records_file = records_path_for(path)
    assert report["records_file"] == str(records_file) and not Path(str(records_file) + ".partial").exists()
    records = read_records(records_file)
    assert len(records) == 10 and all(r["error"] is None for r in records)

    again = evaluate_records([records_file], shapes["train_json"], output=tmp_path / "again.json")
    for t in ("bbox", "segm"):
        assert again[t] == report[t]
    assert again["per_class"] == report["per_class"]

    # shards without image ids (as a cluster run over a folder writes them), matched by file name
    shards = tmp_path / "shards"
    anon = [{**r, "image_id": None, "file": str(shapes["train_images"] / r["file"])} for r in records]
    write_records(shards / "part-0.jsonl", anon[:4])
    write_records(shards / "part-1.jsonl", anon[4:])
    code = main(["evaluate", "--data", str(shapes["train_json"]), "--results", str(shards),
                 "--output", str(tmp_path / "shards.json"), "--no-analysis"])
    assert code == 0 and "records: 10 from 2 file(s)" in capsys.readouterr().out
    saved = json.loads((tmp_path / "shards.json").read_text())
    assert saved["segm"] == report["segm"] and "analysis" not in saved

    write_records(tmp_path / "bad" / "x.jsonl", [{**anon[0], "file": "elsewhere/nope.png"}])
    code = main(["evaluate", "--data", str(shapes["train_json"]), "--results", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 1 and "x.jsonl: record 1: file 'elsewhere/nope.png' matches no 'file_name'" in err


def test_interrupted_evaluation_keeps_its_records(shapes: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ds = CocoDataset(shapes["train_json"], shapes["train_images"])
    out = tmp_path / "cut.json"
    with pytest.raises(KeyboardInterrupt):
        evaluate(NoisyPredictor(ds, fail_after=3), shapes["train_json"], shapes["train_images"], output=out,
                 progress=False)
    partial = Path(str(records_path_for(out)) + ".partial")
    assert partial.is_file() and not records_path_for(out).exists() and not out.exists()
    done = evaluate_records([partial], shapes["train_json"])
    assert done["images"] == 3 and done["segm"]["AP"] > 0

    # the command says where the work went and how to score it
    monkeypatch.setattr(cli_evaluate, "build_predictor", lambda *a: NoisyPredictor(ds, fail_after=2))
    code = main(["evaluate", "--data", str(shapes["train_json"]), "--images", str(shapes["train_images"]),
                 "--weights", "m.pth", "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130 and f"--results {partial}" in err and len(read_records(partial)) == 2


def test_cli_evaluates_a_cvat_dataset(shapes: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("datumaro")
    from isseg.data.formats import export_dataset, load_dataset

    cvat = export_dataset(load_dataset(shapes["train_json"], images=shapes["train_images"]), tmp_path / "cvat",
                          "cvat")
    monkeypatch.setattr(cli_evaluate, "build_predictor",
                        lambda *a: NoisyPredictor(CocoDataset(shapes["train_json"], shapes["train_images"])))
    report = tmp_path / "r.json"
    assert main(["evaluate", "--data", str(cvat), "--weights", "m.pth", "--output", str(report),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(cvat, 10 images) as COCO" in out and "mask_AP" in out and "report.html" in out
    saved = json.loads(report.read_text())
    assert 0.2 < saved["segm"]["AP"] < 0.95 and (tmp_path / "r_gt.json").is_file()


def test_per_class_from_pycocotools_too(run: dict[str, object], shapes: dict[str, Path]) -> None:
    """The fallback backend lays out its arrays the same way: its per-class AP averages to its AP."""
    from isseg.engine.analysis import per_class_metrics

    results = json.loads(Path(run["report"]["results_file"]).read_text())
    gt = json.loads(shapes["train_json"].read_text())
    evaluators: dict[str, object] = {}
    stats = coco_eval(gt, results, ("segm",), backend="pycocotools", evaluators=evaluators)
    rows = per_class_metrics(evaluators["segm"], gt["categories"])
    assert np.mean([r["AP"] for r in rows if r["AP"] >= 0]) == pytest.approx(stats["segm"]["AP"], abs=1e-12)
    assert stats["segm"]["AP"] == pytest.approx(run["report"]["segm"]["AP"], abs=1e-9)
