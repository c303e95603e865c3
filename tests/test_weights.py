"""Checkpoints: isseg format, torchvision layout and its 91->80 class mapping, registry cache, bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import isseg
from helpers import small_config
from isseg.config import COCO_CATEGORY_IDS
from isseg.weights import registry
from isseg.weights.loading import load_model, load_weights, save_checkpoint
from isseg.weights.torchvision import from_torchvision, to_torchvision


def test_isseg_checkpoint_round_trip_keeps_config_and_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = small_config(num_classes=3).with_classes(("cat", "dog", "fox"))
    model = isseg.MaskRCNN(cfg)
    path = save_checkpoint(tmp_path / "run" / "model.pth", model, epoch=3)
    loaded = load_model(path)
    assert loaded.config == cfg and loaded.class_names == ("cat", "dog", "fox")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not loaded.training
    assert torch.load(path, weights_only=True)["epoch"] == 3


def test_save_checkpoint_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = isseg.MaskRCNN(small_config())
    path = save_checkpoint(tmp_path / "m.pth", model)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before  # the previous checkpoint survives
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]  # no temporary file left behind


def test_torchvision_91_slots_map_onto_80_classes() -> None:
    cfg = isseg.get_config("torchvision-v1")
    state = {
        "roi_heads.box_predictor.cls_score.weight": torch.arange(91.0)[:, None].repeat(1, 2),
        "roi_heads.box_predictor.cls_score.bias": torch.arange(91.0),
        "roi_heads.box_predictor.bbox_pred.weight": torch.arange(364.0)[:, None].repeat(1, 2),
        "roi_heads.box_predictor.bbox_pred.bias": torch.arange(364.0),
        "roi_heads.mask_predictor.mask_fcn_logits.weight": torch.arange(91.0).reshape(91, 1, 1, 1),
        "roi_heads.mask_predictor.mask_fcn_logits.bias": torch.arange(91.0),
    }
    out, notes = from_torchvision(state, cfg)
    cls = out["roi_heads.box_predictor.cls_score.bias"]
    assert cls.shape == (81,) and cls[-1] == 0  # background last
    assert cls[:80].tolist() == [float(c) for c in COCO_CATEGORY_IDS]  # "person" is id 1, "toothbrush" 90
    assert cls[11] == 13  # "stop sign": id 12 is one of the unused slots
    box = out["roi_heads.box_predictor.bbox_pred.bias"]
    assert box.shape == (320,) and box[:4].tolist() == [4.0, 5, 6, 7] and box[-4:].tolist() == [360.0, 361, 362, 363]
    assert out["roi_heads.mask_predictor.mask_fcn_logits.bias"].tolist() == [float(c) for c in COCO_CATEGORY_IDS]
    assert any("91" in n for n in notes)


def test_torchvision_round_trip_and_old_names(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = isseg.MaskRCNN(small_config("torchvision-v1"))
    tv_state = to_torchvision(model.state_dict(), model.config)
    # pre-0.13 torchvision names, as in the published COCO checkpoint
    old = {}
    for k, v in tv_state.items():
        k = k.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for i in range(4):
            k = k.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
            k = k.replace(f"backbone.fpn.inner_blocks.{i}.0.", f"backbone.fpn.inner_blocks.{i}.")
        old[k] = v
    torch.save(old, tmp_path / "tv_old.pth")
    again = isseg.MaskRCNN(small_config("torchvision-v1"))
    report = load_weights(again, tmp_path / "tv_old.pth")
    assert report.layout == "torchvision" and report.loaded == len(model.state_dict())
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_registry_detects_every_layout_in_order() -> None:
    """Each layout's checkpoint is claimed by its own registry entry; torchvision before a bare state dict."""
    from converter_states import random_isseg_state
    from isseg.weights.checkpoint import FORMAT, VERSION
    from isseg.weights.detectron2 import to_detectron2
    from isseg.weights.loading import LAYOUTS, checkpoint_config, detect_layout
    from isseg.weights.mmdet import to_mmdet

    cfg = isseg.get_config("torchvision-v1", class_names=("a", "b", "c"))
    state = random_isseg_state(cfg)
    samples = {
        "isseg": {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "model": state},
        "torchvision": to_torchvision(state, cfg),
        "isseg-state-dict": {"state_dict": state},
        "detectron2": to_detectron2(state, cfg),
        "mmdet": to_mmdet(state, cfg),
    }
    assert list(LAYOUTS) == list(samples)
    presets = {"torchvision": "torchvision-v1", "isseg-state-dict": "security-0002",
               "detectron2": "detectron2-r50-fpn", "mmdet": "mmdet-r50-caffe-fpn"}  # fmt: skip
    for name, ckpt in samples.items():
        assert detect_layout(ckpt) is LAYOUTS[name]
        count, _ = LAYOUTS[name].class_info(ckpt)
        assert count == 3, name
        if name in presets:
            assert checkpoint_config(ckpt, name).name == presets[name]
    assert checkpoint_config(samples["mmdet"], "mmdet").class_names == ("a", "b", "c")  # names from meta


def test_load_checkpoint_is_not_an_alias_of_load_model() -> None:
    """``load_checkpoint`` returns a checkpoint in other libraries; isseg has ``load_model`` and says so."""
    assert "load_checkpoint" not in isseg.__all__ and "load_model" in isseg.__all__
    with pytest.raises(AttributeError, match=r"isseg\.load_model\(path\) builds and loads a model"):
        isseg.load_checkpoint  # noqa: B018


def test_missing_and_garbage_checkpoints(tmp_path: Path) -> None:
    model = isseg.MaskRCNN(small_config())
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_weights(model, tmp_path / "nothere.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"junk\.pth: not a PyTorch checkpoint"):
        load_weights(model, tmp_path / "junk.pth")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="unrecognized checkpoint layout"):
        load_weights(model, tmp_path / "other.pth")


def test_mismatched_keys_are_listed(tmp_path: Path) -> None:
    model = isseg.MaskRCNN(small_config())
    state = model.state_dict()
    state.pop("backbone.fpn.layer_blocks.0.0.weight")
    state["roi_heads.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "s.pth")
    with pytest.raises(ValueError) as err:
        load_weights(isseg.MaskRCNN(small_config()), tmp_path / "s.pth")
    assert "missing key(s): backbone.fpn.layer_blocks.0.0.weight" in str(err.value)
    assert "unexpected key(s): roi_heads.extra.weight" in str(err.value)
    report = load_weights(isseg.MaskRCNN(small_config()), tmp_path / "s.pth", strict=False)
    assert report.missing == ["backbone.fpn.layer_blocks.0.0.weight"] and report.unused == ["roi_heads.extra.weight"]


def test_other_class_count_needs_reinit_flag(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = isseg.MaskRCNN(small_config(num_classes=5))
    save_checkpoint(tmp_path / "five.pth", src)
    target = isseg.MaskRCNN(small_config(num_classes=3))
    with pytest.raises(ValueError, match="shape mismatch.*reinit_class_layers"):
        load_weights(target, tmp_path / "five.pth")
    report = load_weights(target, tmp_path / "five.pth", reinit_class_layers=True)
    assert "roi_heads.box_predictor.cls_score.weight" in report.reinitialized
    assert torch.equal(target.backbone.body.layer2[0].conv1.weight, src.backbone.body.layer2[0].conv1.weight)


def test_checkpoint_of_other_architecture_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "tv.pth", isseg.MaskRCNN(small_config("torchvision-v1")))
    with pytest.raises(ValueError, match="backbone.style: checkpoint 'pytorch', model 'caffe'"):
        load_weights(isseg.MaskRCNN(small_config("security-0002")), tmp_path / "tv.pth")


def _local_entry(tmp_path: Path, payload: bytes, sha: str | None = None) -> registry.WeightsEntry:
    src = tmp_path / "upstream" / "weights-abc.pth"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(payload)
    digest = sha or hashlib.sha256(payload).hexdigest()[:8]
    return registry.WeightsEntry("test-weights", src.as_uri(), digest, "security-0002", "isseg")


def test_registry_downloads_verifies_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISSEG_CACHE", str(tmp_path / "cache"))
    entry = _local_entry(tmp_path, b"weights")
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    path = registry.resolve(entry.name)  # a file:// URL: the real download code, no network
    assert path == tmp_path / "cache" / "weights-abc.pth" and path.read_bytes() == b"weights"
    (tmp_path / "upstream" / "weights-abc.pth").unlink()
    assert registry.resolve(entry.name) == path  # second use comes from the cache
    path.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="does not match the published"):
        registry.resolve(entry.name)


def test_registry_bad_download_and_offline_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISSEG_CACHE", str(tmp_path / "cache"))
    entry = _local_entry(tmp_path, b"weights", sha="deadbeef")
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    with pytest.raises(ValueError, match="deadbeef"):
        registry.resolve(entry.name)
    assert not any((tmp_path / "cache").iterdir())  # nothing unverified is left in the cache
    gone = registry.WeightsEntry("gone", (tmp_path / "missing.pth").as_uri(), "00", "security-0002", "isseg")
    monkeypatch.setitem(registry.REGISTRY, "gone", gone)
    with pytest.raises(FileNotFoundError, match=r"Download file://.*missing\.pth and save it as .*cache"):
        registry.resolve("gone")
    with pytest.raises(ValueError, match="unknown weights"):
        registry.resolve("no-such-weights")


def test_registry_entries_point_at_official_files() -> None:
    v1 = registry.REGISTRY["torchvision-v1-coco"]
    assert v1.url == "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    assert v1.url.rsplit("-", 1)[1].startswith(v1.sha256) and v1.preset == "torchvision-v1"
    assert (v1.box_ap, v1.mask_ap) == (37.9, 34.6)


def test_same_count_other_class_names_reinitializes_class_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "abc.pth", isseg.MaskRCNN(small_config(num_classes=3).with_classes(("a", "b", "c"))))
    target = isseg.MaskRCNN(small_config(num_classes=3).with_classes(("x", "y", "z")))
    before = target.roi_heads.box_predictor.cls_score.weight.clone()
    report = load_weights(target, tmp_path / "abc.pth", reinit_class_layers=True)
    assert "roi_heads.mask_predictor.mask_fcn_logits.weight" in report.reinitialized
    assert torch.equal(target.roi_heads.box_predictor.cls_score.weight, before)
    same = isseg.MaskRCNN(small_config(num_classes=3).with_classes(("a", "b", "c")))
    assert load_weights(same, tmp_path / "abc.pth", reinit_class_layers=True).reinitialized == []
