"""``isseg train`` on a YOLO-seg export without a converter: the class order of data.yaml reaches the checkpoint,
and the run folder has metrics, TensorBoard events and ``curves.png``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import TINY_TRAIN as TINY
from helpers import TRAIN_SIZE as SIZE
from isseg.cli.main import main
from isseg.data.formats import export_dataset, load_dataset
from isseg.data.synth import CLASS_NAMES, make_synthetic_dataset

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")]


def test_train_on_yolo_seg_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synth = make_synthetic_dataset(tmp_path / "synth", 5, seed=1, image_size=SIZE, val_fraction=0.2, max_objects=3)
    order = list(reversed(CLASS_NAMES))  # not the synthetic set's order: it must come from data.yaml
    yolo = tmp_path / "yolo"
    for split, key in (("train", "train"), ("val", "val")):
        loaded = load_dataset(synth[f"{key}_json"], images=synth[f"{key}_images"], classes=order)
        export_dataset(loaded, yolo, "yolo-seg", subset=split)
    out = tmp_path / "run"
    args = ["train", "--data", str(yolo), "--subset", "train", "--val-subset", "val", "--output", str(out),
            "--iterations", "2", "--batch-size", "1", "--workers", "0", "--lr", "0.01", "--warmup-iters", "1",
            "--log-every", "1", "--no-progress"] + [a for o in TINY for a in ("--set", o)]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"{yolo} (yolo-seg, subset train): 4 images" in text and "-> " + str(out / "data" / "train.json") in text
    assert f"logs in {out}/" in text and "curves.png" in text and f"tensorboard --logdir {out / 'tensorboard'}" in text
    state = torch.load(out / "last.pth", weights_only=False)
    assert list(state["config"]["class_names"]) == order
    val = json.loads((out / "data" / "val.json").read_text())
    assert len(val["images"]) == 1 and [c["name"] for c in val["categories"]] == order
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG" and (out / "curves.png").stat().st_size < 200_000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_segm_AP" in r for r in rows)
