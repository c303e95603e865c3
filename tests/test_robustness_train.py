"""``isseg train`` robustness: the pre-flight over the training images (missing, truncated, corrupt, wrong size)
lists every bad item before any training; ``--skip-bad-images`` trains on the rest; an image that breaks after
the pre-flight stops the run with one line, not a DataLoader traceback; ``--output`` checked first.

Tiny model: helpers.TINY_TRAIN overrides (96 px, GroupNorm, few proposals).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import TINY_TRAIN as TINY
from isseg.cli.main import main
from isseg.data.coco import CocoDataset
from isseg.data.synth import make_synthetic_dataset
from isseg.engine.trainer import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def data(tmp_path: Path) -> dict[str, Path]:
    """6 training images (PNG, so a flipped byte fails its CRC) + 1 held out, in a folder of this test's own."""
    return make_synthetic_dataset(tmp_path / "synth", 7, seed=3, image_size=96, val_fraction=0.15, max_objects=2,
                                  image_format="png")


def _files(data: dict[str, Path]) -> list[Path]:
    ann = json.loads(data["train_json"].read_text())
    return [data["train_images"] / im["file_name"] for im in ann["images"]]


def _spoil(files: list[Path]) -> dict[str, str]:
    """Four kinds of bad file; -> {file name: words the report must contain}."""
    files[0].unlink()
    whole = files[1].read_bytes()
    files[1].write_bytes(whole[: len(whole) // 2])
    flipped = bytearray(files[2].read_bytes())
    flipped[len(flipped) // 2] ^= 0x10
    files[2].write_bytes(bytes(flipped))
    shutil.copy(Path(__file__).parent / "test_robustness_train.py", files[3])  # text named .png
    return {files[0].name: "not found", files[1].name: "truncated PNG", files[2].name: "CRC",
            files[3].name: "not an image"}


def _args(data: dict[str, Path], out: Path) -> list[str]:
    return ["train", "--data", str(data["train_json"]), "--images", str(data["train_images"]), "--output", str(out),
            "--iterations", "2", "--batch-size", "1", "--workers", "0", "--warmup-iters", "1", "--no-progress",
            "--device", "CPU"] + [a for o in TINY for a in ("--set", o)]  # fmt: skip


def test_preflight_lists_every_bad_image_and_stops_before_training(data, tmp_path, capsys):
    expected = _spoil(_files(data))
    out = tmp_path / "run"
    rc = main(_args(data, out))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1
    assert len(err) == len(expected) + 1, err  # one line per bad image, one line saying what to do
    for name, words in expected.items():
        assert sum(name in line and words in line for line in err) == 1, (name, err)
    assert "4 of 6 training image(s) cannot be used" in err[-1] and "--skip-bad-images" in err[-1]
    assert not (out / "last.pth").exists() and "Traceback" not in "\n".join(err)


def test_skip_bad_images_trains_on_the_rest(data, tmp_path, capsys):
    expected = _spoil(_files(data))
    out = tmp_path / "run"
    assert main(_args(data, out) + ["--skip-bad-images"]) == 0
    err = capsys.readouterr().err
    assert "training on 2 of 6 image(s)" in err
    assert all(name in err for name in expected)
    assert torch.load(out / "last.pth", weights_only=False)["iteration"] == 2


def test_preflight_checks_the_annotated_size_and_is_clean_on_good_data(data):
    ds = CocoDataset(data["train_json"], data["train_images"], train=True)
    assert ds.preflight(workers=2) == []
    first = data["train_images"] / ds.images[0]["file_name"]
    cv2.imwrite(str(first), np.zeros((96, 99, 3), np.uint8))  # a valid PNG of another size than annotated
    bad = ds.preflight()
    assert [i for i, _ in bad] == [0] and "the annotation file says" in bad[0][1] and first.name in bad[0][1]


def test_image_broken_after_the_preflight_is_one_line(data, tmp_path):
    """A DataLoader worker re-raises with its whole traceback in the message; the run says only the last line."""
    files = _files(data)

    def spoil_all(iteration: int, values: dict[str, float], model: torch.nn.Module) -> None:
        if iteration == 1:
            for f in files:
                f.write_bytes(f.read_bytes()[:100])

    cfg = TrainConfig(data=str(data["train_json"]), images=str(data["train_images"]), output=str(tmp_path / "run"),
                      overrides=TINY, iterations=30, batch_size=6, warmup_iters=1, workers=1, progress=False,
                      tensorboard=False, checkpoint_every=1000)  # one batch per epoch: epoch 2 reads the spoilt files
    with pytest.raises(ValueError) as info:
        train(cfg, on_iteration_end=spoil_all)
    message = str(info.value)
    assert "\n" not in message and "truncated PNG" in message and "iteration 1" in message, message
    assert any(f.name in message for f in files)


def test_output_that_is_a_file_fails_first(data, tmp_path, capsys):
    taken = tmp_path / "run.txt"
    taken.write_text("x")
    assert main(_args(data, taken)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.txt" in err[0] and "is a file" in err[0]
    assert os.path.getsize(taken) == 1
