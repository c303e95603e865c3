"""``evaluate`` and ``isseg evaluate`` with stand-in predictors that answer with the ground truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import isseg.cli.evaluate as cli_evaluate
from isseg.cli.main import main
from isseg.config import COCO_CLASSES
from isseg.data import CocoDataset
from isseg.data.synth import CLASS_NAMES, make_synthetic_dataset
from isseg.engine.evaluate import evaluate, results_path_for
from isseg.model.detections import Detections

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


class OraclePredictor:
    """Recognizes each image by its pixels and answers with its non-crowd ground truth (score 1)."""

    def __init__(
        self, dataset: CocoDataset, class_names: list[str], with_masks: bool = True, limit: int | None = None
    ) -> None:
        self.class_names = class_names
        self.with_masks = with_masks
        self.answers: dict[str, Detections] = {}
        for i in range(len(dataset) if limit is None else limit):
            image, target = dataset.try_load_image(i)[0], dataset.load_target(i)
            if image is None:
                continue
            keep = (target["iscrowd"] == 0).numpy()
            n = int(keep.sum())
            self.answers[self._key(image)] = Detections(
                boxes=target["boxes"].numpy()[keep],
                scores=np.linspace(1.0, 0.5, n, dtype=np.float32),
                labels=target["labels"].numpy()[keep],
                masks=target["masks"].numpy()[keep].astype(bool) if with_masks else None,
                class_names=tuple(class_names),
                image_size=image.shape[:2],
            )
        self.calls = 0

    @staticmethod
    def _key(image: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()

    def predict(self, image: np.ndarray) -> Detections:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.calls += 1
        return self.answers[self._key(image)]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return make_synthetic_dataset(root, num_images=6, seed=5, image_size=80, val_fraction=0.0)


def test_oracle_scores_one_and_writes_report(shapes: dict[str, Path], tmp_path: Path) -> None:
    ds = CocoDataset(shapes["train_json"], shapes["train_images"])
    report_path = tmp_path / "out" / "report.json"
    report = evaluate(OraclePredictor(ds, list(CLASS_NAMES)), shapes["train_json"], shapes["train_images"],
                      output=report_path, progress=False)  # fmt: skip
    for t in ("bbox", "segm"):
        assert report[t]["AP"] == pytest.approx(1.0) and report[t]["AR100"] == pytest.approx(1.0)
    assert report["images"] == 6 and report["missing_images"] == [] and report["seconds_per_image"] >= 0
    saved = json.loads(report_path.read_text())
    assert saved["segm"] == report["segm"] and saved["results_file"] == str(results_path_for(report_path))
    results = json.loads(results_path_for(report_path).read_text())
    assert len(results) == report["detections"] == sum(len(ds.load_target(i)["labels"]) for i in range(6))

    # generic class names (a model built with only a class count) map by index
    generic = OraclePredictor(ds, [f"class_{i}" for i in range(5)])
    assert (
        evaluate(generic, shapes["train_json"], shapes["train_images"], progress=False)["segm"]["AP"] == 1.0
    )


def test_missing_image_is_reported_not_fatal(shapes: dict[str, Path], tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for p in shapes["train_images"].iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    (images / "000003.jpg").unlink()
    ds = CocoDataset(shapes["train_json"], images)
    report = evaluate(OraclePredictor(ds, list(CLASS_NAMES)), shapes["train_json"], images, progress=False)
    assert report["images"] == 5
    [missing] = report["missing_images"]
    assert missing["image_id"] == 4 and missing["file_name"] == "000003.jpg"
    assert "000003.jpg" in missing["reason"]
    assert report["segm"]["AP"] == pytest.approx(1.0)  # the unread image is left out, not counted as missed

    for p in images.iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="none of the 6 images"):
        evaluate(OraclePredictor(ds, list(CLASS_NAMES)), shapes["train_json"], images, progress=False)


def test_max_images_boxes_only_and_class_mismatch(shapes: dict[str, Path]) -> None:
    ds = CocoDataset(shapes["train_json"], shapes["train_images"])
    oracle = OraclePredictor(ds, list(CLASS_NAMES), with_masks=False)
    report = evaluate(oracle, shapes["train_json"], shapes["train_images"], max_images=2, progress=False)
    assert oracle.calls == 2 and report["images"] == 2
    assert "segm" not in report and report["bbox"]["AP"] == pytest.approx(1.0)  # only those 2 images count

    wrong = OraclePredictor(ds, ["circle", "hexagon", "rectangle"])
    with pytest.raises(ValueError, match=r"\['hexagon'\] are not among the categories"):
        evaluate(wrong, shapes["train_json"], shapes["train_images"], progress=False)


def test_coco_mini_oracle(coco_mini: Path) -> None:
    ann = coco_mini / "annotations" / "instances_val2017.json"
    ds = CocoDataset(ann, coco_mini / "val2017")
    oracle = OraclePredictor(ds, list(COCO_CLASSES), limit=8)
    report = evaluate(oracle, ann, coco_mini / "val2017", max_images=8, progress=False)
    assert report["images"] == 8
    for t in ("bbox", "segm"):  # crowd regions are ignored by COCO, not counted as misses
        assert report[t]["AP"] == pytest.approx(1.0, abs=1e-9)


def test_cli_evaluate(shapes: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    ds = CocoDataset(shapes["train_json"], shapes["train_images"])
    built = {}

    def fake_build(weights: str, backend: str | None, preset: str | None, device: str | None,
                   tiling: object = None) -> OraclePredictor:
        built.update(weights=weights, backend=backend, preset=preset, device=device, tiling=tiling)
        return OraclePredictor(ds, list(CLASS_NAMES))

    monkeypatch.setattr(cli_evaluate, "build_predictor", fake_build)
    report = tmp_path / "r.json"
    code = main(["evaluate", "--data", str(shapes["train_json"]), "--images", str(shapes["train_images"]),
                 "--weights", "model.pth", "--preset", "torchvision-v1", "--output", str(report),
                 "--max-images", "3", "--no-progress"])  # fmt: skip
    assert code == 0 and built == {"weights": "model.pth", "backend": None, "preset": "torchvision-v1",
                                   "device": None, "tiling": None}  # fmt: skip
    out = capsys.readouterr().out
    assert "AP50" in out and "box" in out and "mask" in out and "images: 3" in out
    assert json.loads(report.read_text())["images"] == 3 and (tmp_path / "r_results.json").is_file()

    code = main(["evaluate", "--data", str(tmp_path / "none.json"), "--images", ".", "--weights", "x.pth"])
    assert code == 1 and "none.json" in capsys.readouterr().err


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """``build_predictor`` picks the backend from the weights' suffix unless told, and refuses torch for an export."""
    import isseg.deploy.predictor
    import isseg.weights.loading

    class FakePredictor:
        def __init__(self, weights: str, backend: str, device: str | None = None, preset: str | None = None,
                     tiling: object = None) -> None:
            self.backend, self.device, self.tiling = backend, device, tiling

    class FakeModel:
        backend = "torch"

        def eval(self) -> FakeModel:
            return self

    monkeypatch.setattr(isseg.deploy.predictor, "Predictor", FakePredictor)
    monkeypatch.setattr(isseg.weights.loading, "load_model", lambda weights, preset=None: FakeModel())
    assert cli_evaluate.build_predictor("m.xml", None).backend == "openvino"
    assert cli_evaluate.build_predictor("m.ONNX", None).backend == "onnx"
    assert cli_evaluate.build_predictor("best.pth", None).backend == "torch"
    assert cli_evaluate.build_predictor("m.xml", "onnx").backend == "onnx"
    assert cli_evaluate.build_predictor("m.xml", None, device="gpu").device == "GPU"  # passed on, in OpenVINO's case
    tiled = cli_evaluate.build_predictor("best.pth", None, tiling=True)  # tiling runs through the Predictor
    assert (tiled.backend, tiled.tiling) == ("torch", True)
    with pytest.raises(ValueError, match="--backend torch cannot run the exported model"):
        cli_evaluate.build_predictor("m.onnx", "torch")
