"""The other commands: options and outputs checked before the expensive part (one line each), and
``isseg convert`` saying what class names it really writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isseg.cli.main import main, one_line


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_convert_without_class_names_says_they_are_generic(tmp_path, capsys):
    from isseg.config import get_config
    from isseg.model.mask_rcnn import MaskRCNN
    from isseg.weights.detectron2 import to_detectron2

    config = get_config("detectron2-r50-fpn", num_classes=5)
    src = tmp_path / "d2.pth"
    torch.save(to_detectron2(MaskRCNN(config).state_dict(), config), src)
    dst = tmp_path / "out.pth"
    assert main(["convert", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "class names" in line]
    assert len(notes) == 1 and "generic names class_0 ... class_4" in notes[0] and "--classes" in notes[0], out
    assert "using the preset's" not in out  # the old note claimed names it did not write
    written = torch.load(dst, weights_only=False)["config"]["class_names"]
    assert list(written) == [f"class_{i}" for i in range(5)]
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nfox\nowl\nyak\n")
    assert main(["convert", str(src), str(dst), "--classes", str(names)]) == 0
    out = capsys.readouterr().out
    assert "generic" not in out and "(cat, dog, fox, owl, yak)" in out
    assert list(torch.load(dst, weights_only=False)["config"]["class_names"]) == ["cat", "dog", "fox", "owl", "yak"]


def test_output_checks_come_before_the_work(tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not read: the destination is checked first")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["convert", str(junk), str(folder)], ["a_folder", "is a folder"]),
        (["export", str(junk), "-o", str(a_file)], ["a_file", "is a file"]),
        (["export", str(junk), "-o", str(folder), "--confidence-threshold", "1.5"], ["--confidence-threshold"]),
        (["export", str(junk), "-o", str(folder), "--calibration", str(tmp_path / "none")], ["--calibration"]),
        (["synth", "--output", str(a_file), "--num-images", "2"], ["a_file", "is a file"]),
        (["synth", "--output", str(folder), "--num-images", "0"], ["--num-images", ">= 1"]),
        (["synth", "--output", str(folder), "--num-images", "2", "--val-fraction", "3"], ["--val-fraction"]),
        (["benchmark", "--images", "0"], ["--images"]),
        (["benchmark", "--json", str(folder)], ["a_folder", "is a folder"]),
        (["info", "--preset", "security-0002", "--flops", "--size", "4", "4"], ["--size"]),
    ]
    for argv, words in cases:
        assert main(argv) == 1, argv
        line = _one_error(capsys)
        assert line.startswith(f"isseg {argv[0]}: error: ") and all(w in line for w in words), (argv, line)
    assert list(folder.iterdir()) == []


def test_messages_are_one_line():
    assert one_line(RuntimeError("first\n  second\n\nthird")) == "first | second | third"
    assert one_line(ValueError()) == "ValueError"


def test_device_names_any_case():
    from isseg.cli.checks import backend_of, device_for

    assert device_for("openvino", "cpu") == "CPU" and device_for("openvino", "gpu.1") == "GPU.1"
    assert device_for("torch", "CUDA:0") == "cuda:0" and device_for("onnx", " CPU ") == "cpu"
    assert backend_of("m.XML", None) == "openvino" and backend_of("m.onnx", None) == "onnx"
    assert backend_of("w.pth", None) == "torch" and backend_of("m.xml", "onnx") == "onnx"
    with pytest.raises(ValueError, match="--device"):
        device_for("torch", "  ")


def test_read_only_folder_message(tmp_path):
    import os

    from isseg.cli.checks import output_dir, output_file

    target = Path("/sys/kernel") if os.geteuid() == 0 else tmp_path / "ro"
    if target != Path("/sys/kernel"):
        target.mkdir()
        target.chmod(0o555)
    with pytest.raises(ValueError, match="not writable"):
        output_dir(target)
    with pytest.raises(ValueError, match="not writable"):
        output_file(target / "x.json", "--json")
    assert output_dir(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"


def test_info_runs_and_says_when_torch_is_a_useless_cuda_build(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "presets:" in out and "security-0002" in out
    useless = bool(torch.version.cuda) and not torch.cuda.is_available()
    assert ("download.pytorch.org/whl/cpu" in out) == useless
