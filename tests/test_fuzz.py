"""Fuzzing every reader of user files with truncated and bit-flipped copies of valid files (seeded).

Each mutated file must either be read (a flipped pixel byte is still an image) or fail with ONE clear error:
``ValueError`` / ``FileNotFoundError`` / ``OSError`` whose message names the file. Any other exception type (a
``KeyError``, ``struct.error``, ``IndexError``, ``UnicodeDecodeError`` escaping from a parser) fails the test
and is listed with the mutation that caused it.

Readers: images (``isseg.sources.decode.read_image`` and the training loader's ``read_image_bgr``), COCO JSON
(``CocoDataset``), checkpoints (``read_checkpoint`` and ``load_model``), exported IR metadata (``isseg.Predictor``
on a mutated ``.xml``).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

CLEAR = (ValueError, FileNotFoundError, OSError)
SEED = 20261201
TINY_MODEL = ("backbone.depth=18", "backbone.norm=gn", "backbone.fpn_channels=16", "roi.representation_size=32",
              "backbone.frozen_stages=0")


def mutations(data: bytes, n: int, rng: np.random.Generator, hot: int = 0) -> Iterator[tuple[str, bytes]]:
    """``n`` mutated copies: truncations, bit flips, overwritten spans, deleted spans. ``hot``: when > 0, half of
    the positions fall in the first and last ``hot`` bytes (where containers keep their structure)."""
    size = len(data)

    def position() -> int:
        if hot and rng.random() < 0.5:
            p = int(rng.integers(0, min(hot, size)))
            return p if rng.random() < 0.5 else size - 1 - p
        return int(rng.integers(0, size))

    for k in range(n):
        kind = ("truncate", "flip", "overwrite", "delete")[k % 4]
        buf = bytearray(data)
        if kind == "truncate":
            cut = position()
            yield f"truncate@{cut}", bytes(buf[:cut])
        elif kind == "flip":
            spots = [position() for _ in range(int(rng.integers(1, 5)))]
            for p in spots:
                buf[p] ^= 1 << int(rng.integers(0, 8))
            yield f"flip@{spots}", bytes(buf)
        elif kind == "overwrite":
            p, length = position(), int(rng.integers(1, 17))
            buf[p:p + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            yield f"overwrite@{p}+{length}", bytes(buf[:size])
        else:
            p, length = position(), int(rng.integers(1, 33))
            del buf[p:p + length]
            yield f"delete@{p}+{length}", bytes(buf)


def fuzz(reader: Callable[[Path], Any], path: Path, valid: bytes, n: int, rng: np.random.Generator,
         check: Callable[[Any], None] | None = None, hot: int = 0) -> tuple[int, int, list[str]]:
    """Write each mutation to ``path`` and read it; -> (read, clear errors, problems)."""
    ok = failed = 0
    problems: list[str] = []
    for name, data in mutations(valid, n, rng, hot):
        path.write_bytes(data)
        try:
            result = reader(path)
        except CLEAR as exc:
            failed += 1
            message = str(exc)
            if path.name not in message:
                problems.append(f"{path.name} {name}: {type(exc).__name__} without the file name: {message[:200]}")
            elif "\n" in message.strip():
                problems.append(f"{path.name} {name}: {type(exc).__name__} on several lines: {message[:200]}")
        except Exception as exc:  # noqa: BLE001 - what this test looks for
            problems.append(f"{path.name} {name}: {type(exc).__name__}: {str(exc)[:200]}")
        else:
            ok += 1
            if check is not None:
                check(result)
    return ok, failed, problems


def _scene(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    cv2.rectangle(image, (8, 6), (40, 30), (40, 200, 90), -1)
    cv2.circle(image, (48, 30), 9, (220, 60, 30), -1)
    return image


def _is_image(array: Any) -> None:
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp"])
def test_fuzz_image_readers(suffix: str, tmp_path: Path) -> None:
    from isseg.data.coco import read_image_bgr
    from isseg.sources.decode import read_image

    rng = np.random.default_rng(SEED + len(suffix) + ord(suffix[1]))
    valid = cv2.imencode(suffix, _scene())[1].tobytes()
    path = tmp_path / f"mutant{suffix}"
    ok1, bad1, problems = fuzz(read_image, path, valid, 60, rng, _is_image, hot=64)
    ok2, bad2, more = fuzz(lambda p: read_image_bgr(p)[0], tmp_path / f"loader{suffix}", valid, 30, rng, _is_image,
                           hot=64)
    assert not problems + more, "\n".join(problems + more)
    assert bad1 >= 15 and bad2 >= 7  # every truncation at least is refused: not a vacuous pass
    path.write_bytes(valid[: len(valid) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_image(path)


def test_fuzz_coco_json(tmp_path: Path) -> None:
    from isseg.data.coco import CocoDataset

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _scene())
    square = [4.0, 4.0, 30.0, 4.0, 30.0, 20.0, 4.0, 20.0]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "box"}, {"id": 5, "name": "disc"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 26, 16], "segmentation": [square],
             "area": 416.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [39, 21, 18, 18], "area": 254.0, "iscrowd": 1,
             "segmentation": {"size": [48, 64], "counts": [1900, 20, 1152]}},
        ],
    }  # fmt: skip
    valid = json.dumps(data, indent=1).encode()

    def read(path: Path) -> Any:
        ds = CocoDataset(path, images, train=True)
        return [ds.load_target(i) for i in range(len(ds))]

    ok, bad, problems = fuzz(read, tmp_path / "instances.json", valid, 100, np.random.default_rng(SEED))
    assert not problems, "\n".join(problems)
    assert bad >= 40 and ok >= 1


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An isseg checkpoint of the smallest real model (ResNet-18, narrow FPN / heads): ~45 MB."""
    from isseg.config import get_config
    from isseg.engine.config_overrides import apply_overrides
    from isseg.model.mask_rcnn import MaskRCNN
    from isseg.weights.loading import save_checkpoint

    cfg = apply_overrides(get_config("security-0002", class_names=("box", "disc")), TINY_MODEL)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, MaskRCNN(cfg))
    return path.read_bytes()


def test_fuzz_checkpoints(tiny_checkpoint: bytes, tmp_path: Path) -> None:
    from isseg.weights.loading import load_model, read_checkpoint

    rng = np.random.default_rng(SEED + 1)
    # the zip container keeps its structure (local headers, data.pkl, central directory) at both ends
    ok, bad, problems = fuzz(read_checkpoint, tmp_path / "read.pth", tiny_checkpoint, 40, rng, hot=4096)
    ok2, bad2, more = fuzz(load_model, tmp_path / "model.pth", tiny_checkpoint, 20, rng, hot=4096)
    assert not problems + more, "\n".join(problems + more)
    assert bad >= 10 and bad2 >= 5


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest real export (ResNet-18 narrow model at 128x160: ~10 s), with its rt_info metadata."""
    pytest.importorskip("openvino")
    from isseg.config import get_config
    from isseg.deploy.export import export
    from isseg.engine.config_overrides import apply_overrides
    from isseg.model.mask_rcnn import MaskRCNN

    cfg = apply_overrides(get_config("security-0002", class_names=("box", "disc")),
                          (*TINY_MODEL, "input.size=[128,160]"))
    return export(MaskRCNN(cfg).eval(), tmp_path_factory.mktemp("ir"), "openvino", "fp32")


def test_fuzz_ir_metadata(tiny_ir: Path, tmp_path: Path) -> None:
    import isseg

    shutil.copy(tiny_ir.with_suffix(".bin"), tmp_path / "model.bin")
    valid = tiny_ir.read_bytes()
    # rt_info (the metadata isseg reads) sits at the end of the IR
    ok, bad, problems = fuzz(isseg.Predictor, tmp_path / "model.xml", valid, 40, np.random.default_rng(SEED + 2),
                             hot=4096)
    assert not problems, "\n".join(problems)
    assert bad >= 10


def test_ir_with_invalid_utf8_metadata_names_the_file(tiny_ir: Path, tmp_path: Path) -> None:
    import isseg

    shutil.copy(tiny_ir.with_suffix(".bin"), tmp_path / "model.bin")
    text = tiny_ir.read_bytes()
    value = text.index(b'<config value="', text.rindex(b"<isseg>")) + len(b'<config value="')  # read by isseg
    mutated = tmp_path / "model.xml"
    mutated.write_bytes(text[:value] + b"\xd5\xd5" + text[value:])
    try:
        isseg.Predictor(mutated)
    except ValueError as exc:  # found by the fuzz test: OpenVINO's bare UnicodeDecodeError did not name the file
        message = str(exc)
    else:
        pytest.fail("an IR with invalid UTF-8 metadata was accepted")
    assert mutated.name in message, message


def test_an_ir_with_bytes_that_are_not_utf8_is_one_clear_error(tiny_ir: Path, tmp_path: Path) -> None:
    """OpenVINO's reader turns its own error message about a damaged attribute into a UnicodeDecodeError when the
    attribute's bytes are not UTF-8 (found by the fuzz test above once its offsets moved)."""
    import isseg

    shutil.copy(tiny_ir.with_suffix(".bin"), tmp_path / "model.bin")
    valid = tiny_ir.read_bytes()
    at = re.compile(rb'to-layer="\d\d\d').search(valid, valid.index(b"<edges>")).start() + len(b'to-layer="') + 1
    (tmp_path / "model.xml").write_bytes(valid[:at] + b"\xc4A" + valid[at + 2:])  # to-layer="536" -> "5\xc4A"
    with pytest.raises(ValueError, match=r"model\.xml: not a model OpenVINO can read \(text that is not valid UTF-8"):
        isseg.Predictor(tmp_path / "model.xml")
