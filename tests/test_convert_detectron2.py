"""detectron2 <-> isseg conversion: round trips, key coverage, conventions and refused checkpoints.

Most checkpoints here are built from random tensors laid out by ``isseg_layout`` (no model needed); the
model is built once, small, for the end-to-end checks (file -> load_weights -> identical outputs).
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from converter_states import CLASS_NAMES as NAMES
from converter_states import random_isseg_state
from isseg.config import get_config
from isseg.weights.conversion import isseg_layout
from isseg.weights.detectron2 import (
    class_info,
    from_detectron2,
    is_detectron2,
    read_detectron2_pkl,
    to_detectron2,
    write_detectron2_pkl,
)


@pytest.fixture(scope="module")
def cfg():
    return get_config("detectron2-r50-fpn", class_names=NAMES)


@pytest.fixture(scope="module")
def state(cfg):
    return random_isseg_state(cfg)


def d2_checkpoint(state, cfg) -> dict:
    return to_detectron2(state, cfg)


# ------------------------------------------------------------------------------------------ layout / keys
@pytest.mark.parametrize("preset", ["detectron2-r50-fpn", "mmdet-r50-caffe-fpn", "security-0002",
                                    "torchvision-v1", "torchvision-v2"])  # fmt: skip
def test_layout_is_the_models_state_dict(preset):
    """isseg_layout (used to check and produce every key) == the real module's keys and shapes."""
    from isseg.model.mask_rcnn import build_model

    with torch.device("meta"):
        model = build_model(preset, num_classes=3)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert dict(isseg_layout(model.config)) == own


def test_detectron2_names_hand_checked(state, cfg):
    d2 = d2_checkpoint(state, cfg)["model"]
    pairs = {
        "backbone.body.conv1.weight": "backbone.bottom_up.stem.conv1.weight",
        "backbone.body.bn1.running_var": "backbone.bottom_up.stem.conv1.norm.running_var",
        "backbone.body.layer2.0.conv1.weight": "backbone.bottom_up.res3.0.conv1.weight",
        "backbone.body.layer4.2.bn3.bias": "backbone.bottom_up.res5.2.conv3.norm.bias",
        "backbone.body.layer1.0.downsample.0.weight": "backbone.bottom_up.res2.0.shortcut.weight",
        "backbone.body.layer3.0.downsample.1.weight": "backbone.bottom_up.res4.0.shortcut.norm.weight",
        "backbone.fpn.inner_blocks.0.0.weight": "backbone.fpn_lateral2.weight",
        "backbone.fpn.layer_blocks.3.0.bias": "backbone.fpn_output5.bias",
        "rpn.head.conv.0.0.weight": "proposal_generator.rpn_head.conv.weight",
        "rpn.head.cls_logits.weight": "proposal_generator.rpn_head.objectness_logits.weight",
        "rpn.head.bbox_pred.bias": "proposal_generator.rpn_head.anchor_deltas.bias",
        "roi_heads.box_head.fc6.weight": "roi_heads.box_head.fc1.weight",
        "roi_heads.box_head.fc7.bias": "roi_heads.box_head.fc2.bias",
        "roi_heads.box_predictor.cls_score.weight": "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.weight": "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.mask_head.0.0.weight": "roi_heads.mask_head.mask_fcn1.weight",
        "roi_heads.mask_head.3.0.bias": "roi_heads.mask_head.mask_fcn4.bias",
        "roi_heads.mask_predictor.conv5_mask.weight": "roi_heads.mask_head.deconv.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.weight": "roi_heads.mask_head.predictor.weight",
    }
    for mine, theirs in pairs.items():
        assert torch.equal(d2[theirs], state[mine]), (mine, theirs)
    assert len(d2) == len(state)  # one detectron2 key per isseg key, nothing dropped or added
    # background last and class-specific regression in both: no reordering at all
    assert d2["roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)
    assert d2["roi_heads.box_predictor.bbox_pred.weight"].shape == (12, 1024)


def test_round_trip_state_dict(state, cfg):
    ckpt = d2_checkpoint(state, cfg)
    assert is_detectron2(ckpt)
    back, notes = from_detectron2(ckpt, cfg, strict=True)
    assert list(back) == list(isseg_layout(cfg))
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    assert "unused keys: 0" in notes and "missing keys: 0" in notes
    assert any(n.startswith("keys converted: 307 of 307") for n in notes)


def test_round_trip_trainer_pth_with_ddp_prefix(state, cfg, tmp_path):
    """A trainer .pth: {"model", "optimizer", "iteration"}, saved from a DDP-wrapped model."""
    model = {f"module.{k}": v for k, v in d2_checkpoint(state, cfg)["model"].items()}
    path = tmp_path / "model_final.pth"
    torch.save({"model": model, "optimizer": {}, "scheduler": {}, "iteration": 90000}, path)
    ckpt = torch.load(path, weights_only=True)
    assert is_detectron2(ckpt)
    back, notes = from_detectron2(ckpt, cfg, strict=True)
    assert all(torch.equal(back[k], v) for k, v in state.items())
    assert "module." in notes[0] and "trainer checkpoint" in notes[0]


def test_pkl_reader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": Evil(), "__author__": "x"}))
    with pytest.raises(ValueError, match="refusing to unpickle .*print"):  # Ray, once imported, wraps print
        read_detectron2_pkl(path)


def test_pkl_reader_latin1_python2_strings(tmp_path):
    """Model-zoo files were pickled by Python 2: byte strings decode as latin1."""
    path = tmp_path / "py2.pkl"
    # protocol-2 pickle of {'__author__': 'Detectron2 Model Zoo', 'model': {}} as Python 2 writes str (bytes)
    path.write_bytes(
        b"\x80\x02}q\x00(U\n__author__q\x01U\x14Detectron2 Model Zooq\x02U\x05modelq\x03}q\x04u."
    )
    data = read_detectron2_pkl(path)
    assert data == {"__author__": "Detectron2 Model Zoo", "model": {}}


# ------------------------------------------------------------------------------------------ coverage
def test_known_extra_buffers_are_checked_and_reported(state, cfg):
    ckpt = d2_checkpoint(state, cfg)
    model = ckpt["model"]
    model["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    model["pixel_std"] = torch.ones(3, 1, 1)
    cells = [torch.tensor([[-s / 2 ** 0.5, -s / 2 ** 0.5 / 2, s / 2 ** 0.5, s / 2 ** 0.5 / 2],
                           [-s / 2, -s / 2, s / 2, s / 2],
                           [-s / 2 ** 0.5 / 2, -s / 2 ** 0.5, s / 2 ** 0.5 / 2, s / 2 ** 0.5]])
             for s in (32, 64, 128, 256, 512)]  # fmt: skip
    for i, c in enumerate(cells):
        model[f"proposal_generator.anchor_generator.cell_anchors.{i}"] = c
    model["backbone.bottom_up.res2.0.conv1.norm.num_batches_tracked"] = torch.tensor(5)
    back, notes = from_detectron2(ckpt, cfg, strict=True)
    assert len(back) == 307
    text = "\n".join(notes)
    assert "pixel_mean" in text and "cell anchors: match" in text
    assert "ignored (anchor buffers" in text and "ignored (input normalization" in text
    assert "ignored (BN step counter" in text


def test_unknown_and_missing_keys(state, cfg):
    ckpt = d2_checkpoint(state, cfg)
    ckpt["model"]["sem_seg_head.predictor.weight"] = torch.zeros(54, 128, 1, 1)
    with pytest.raises(ValueError, match="sem_seg_head.predictor.weight"):
        from_detectron2(ckpt, cfg, strict=True)
    back, notes = from_detectron2(ckpt, cfg)  # passed on for the loader to report / refuse
    assert "detectron2:sem_seg_head.predictor.weight" in back
    assert any("unused keys: 1" in n for n in notes)

    ckpt = d2_checkpoint(state, cfg)
    del ckpt["model"]["roi_heads.box_head.fc2.bias"]
    with pytest.raises(ValueError, match=r"missing key.*roi_heads\.box_head\.fc2\.bias"):
        from_detectron2(ckpt, cfg, strict=True)
    back, notes = from_detectron2(ckpt, cfg)
    assert "roi_heads.box_head.fc7.bias" not in back
    assert any(n.startswith("missing keys: 1") for n in notes)


def test_frozen_bn_without_statistics_gets_identity(state, cfg):
    """Old FrozenBatchNorm2d stored only weight/bias; detectron2 then uses mean 0, var 1 (batch_norm.py)."""
    ckpt = d2_checkpoint(state, cfg)
    for k in [k for k in ckpt["model"] if k.endswith(("running_mean", "running_var"))]:
        del ckpt["model"][k]
    back, notes = from_detectron2(ckpt, cfg, strict=True)
    assert torch.equal(back["backbone.body.bn1.running_mean"], torch.zeros(64))
    assert torch.equal(back["backbone.body.layer1.0.bn1.running_var"], torch.ones(64))
    assert any(n.startswith("filled with identity statistics (106)") for n in notes)


# ------------------------------------------------------------------------------------------ refused
def test_random_dict_is_not_detectron2(cfg):
    assert not is_detectron2({"foo": 1, "bar": torch.zeros(2)})
    assert not is_detectron2([1, 2])
    with pytest.raises(ValueError, match="missing key 'roi_heads.box_predictor.cls_score.weight'"):
        from_detectron2({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(64, 3, 7, 7)}}, cfg)


def test_caffe2_blobs_refused(cfg):
    ckpt = {"blobs": {"conv1_w": np.zeros((64, 3, 7, 7)), "res2_0_branch2a_w": np.zeros((64, 64, 1, 1))}}
    assert is_detectron2(ckpt)
    with pytest.raises(ValueError, match="Caffe2 / Detectron1"):
        from_detectron2(ckpt, cfg)
    with pytest.raises(ValueError, match="Caffe2 / Detectron1"):
        from_detectron2({"model": {"res2_0_branch2a_w": np.zeros((64, 64, 1, 1))}, "__author__": "x"}, cfg)


def test_wrong_shape_names_key_and_shapes(state, cfg):
    ckpt = d2_checkpoint(state, cfg)
    ckpt["model"]["roi_heads.box_head.fc1.weight"] = torch.zeros(1024, 256 * 14 * 14)
    with pytest.raises(
        ValueError, match=r"roi_heads\.box_head\.fc1\.weight.*\(1024, 50176\).*\(1024, 12544\)"
    ):
        from_detectron2(ckpt, cfg)


def test_torchvision_converted_backbone_refused_for_caffe_preset(state, cfg):
    """tools/convert-torchvision-to-d2.py marks its output __author__='torchvision' (STRIDE_IN_1X1=False)."""
    ckpt = dict(d2_checkpoint(state, cfg), __author__="torchvision")
    with pytest.raises(ValueError, match="pytorch-style stride"):
        from_detectron2(ckpt, cfg)


def test_other_normalization_refused(state, cfg):
    ckpt = d2_checkpoint(state, cfg)
    ckpt["model"]["pixel_std"] = torch.tensor([57.375, 57.12, 58.395]).view(3, 1, 1)
    with pytest.raises(ValueError, match="pixel_std"):
        from_detectron2(ckpt, cfg)


def test_other_anchors_refused(state, cfg):
    ckpt = d2_checkpoint(state, cfg)
    for i, s in enumerate((16, 32, 64, 128, 256)):
        ckpt["model"][f"proposal_generator.anchor_generator.cell_anchors.{i}"] = torch.tensor(
            [[-s, -s / 2, s, s / 2], [-s / 2, -s / 2, s / 2, s / 2], [-s / 2, -s, s / 2, s]],
            dtype=torch.float32,
        )
    with pytest.raises(ValueError, match="cell anchors differ"):
        from_detectron2(ckpt, cfg)


def test_class_agnostic_and_gn_heads_refused(state, cfg):
    ckpt = d2_checkpoint(state, cfg)
    ckpt["model"]["roi_heads.box_predictor.bbox_pred.weight"] = torch.zeros(4, 1024)
    ckpt["model"]["roi_heads.box_predictor.bbox_pred.bias"] = torch.zeros(4)
    with pytest.raises(ValueError, match="class-agnostic box regression"):
        from_detectron2(ckpt, cfg)
    ckpt = d2_checkpoint(state, cfg)
    ckpt["model"]["roi_heads.mask_head.mask_fcn1.norm.weight"] = torch.ones(256)
    with pytest.raises(ValueError, match="GN / BN heads"):
        from_detectron2(ckpt, cfg)


def test_backbone_only_refused(cfg):
    with pytest.raises(ValueError, match="backbone-only"):
        from_detectron2({"model": {"stem.conv1.weight": np.zeros((64, 3, 7, 7)),
                                   "res2.0.conv1.weight": np.zeros((64, 64, 1, 1))}}, cfg)  # fmt: skip


def test_class_count_left_to_the_loader(state, cfg):
    """from_detectron2 keeps the checkpoint's class count (fine-tuning); the loader refuses a mismatch."""
    from isseg.weights.loading import apply_checkpoint

    five = replace(cfg, class_names=tuple(f"c{i}" for i in range(5)))
    back, notes = from_detectron2(d2_checkpoint(random_isseg_state(five, 1), five), cfg)
    assert back["roi_heads.box_predictor.cls_score.weight"].shape == (6, 1024)
    assert any("checkpoint has 5 classes, the model 3" in n for n in notes)

    from isseg.model.mask_rcnn import MaskRCNN

    with torch.device("meta"):  # shapes only: the loader refuses before loading anything
        model = MaskRCNN(cfg)
    with pytest.raises(ValueError, match="shape mismatch"):
        apply_checkpoint(model, d2_checkpoint(random_isseg_state(five, 1), five), "five.pkl")


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def small_model():
    """Randomly initialised detectron2-preset model at a small input size (fast on CPU)."""
    from isseg.model.mask_rcnn import MaskRCNN

    torch.manual_seed(0)
    base = get_config("detectron2-r50-fpn", class_names=NAMES)
    config = replace(
        base,
        input=base.input.with_size((160, 224), (160,)),
        rpn=replace(base.rpn, pre_nms_top_n_test=100, post_nms_top_n_test=40),
        roi=replace(base.roi, detections_per_img=8),
    )
    return MaskRCNN(config).eval()


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, 120, 170), dtype=torch.uint8, generator=g)


def test_file_round_trip_gives_identical_outputs(small_model, tmp_path: Path):
    """isseg -> detectron2 .pkl -> load_weights into a fresh model: same tensors, same detections."""
    from isseg.weights.loading import load_weights

    path = tmp_path / "from_isseg.pkl"
    write_detectron2_pkl(to_detectron2(small_model.state_dict(), small_model.config), path)
    fresh = copy.deepcopy(small_model)  # cheaper than building; zeroed so that every tensor must be loaded
    for value in fresh.state_dict().values():
        value.zero_()
    report = load_weights(fresh, path)
    raw = read_detectron2_pkl(path)  # the model-zoo container: numpy arrays under "model"
    assert isinstance(raw["model"]["backbone.bottom_up.stem.conv1.weight"], np.ndarray)
    assert class_info(raw) == (3, None)
    assert report.layout == "detectron2" and report.loaded == 307 and not report.missing and not report.unused
    for k, v in small_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    with torch.no_grad():
        a, b = small_model([_image()])[0], fresh([_image()])[0]
    assert len(a.boxes) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.masks, b.masks)
