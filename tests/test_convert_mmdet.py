"""mmdetection 2.x / 3.x (and OpenVINO Training Extensions) <-> isseg conversion."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from converter_states import CLASS_NAMES as NAMES
from converter_states import random_isseg_state
from isseg.config import get_config
from isseg.weights.conversion import isseg_layout
from isseg.weights.mmdet import class_info, from_mmdet, is_mmdet, mmdet_version, parse_mm_config, to_mmdet

# A training config as mmdetection stores it in meta (2.x "config", 3.x "cfg"), reduced to what is checked.
CONFIG_2X = """
model = dict(
    type='MaskRCNN',
    backbone=dict(
        type='ResNet', depth=50, num_stages=4, frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, style='caffe'),
    neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                              strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0)),
        bbox_head=dict(type='Shared2FCBBoxHead', num_classes=3, reg_class_agnostic=False,
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                                       target_stds=[0.1, 0.1, 0.2, 0.2])),
        mask_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0)),
        mask_head=dict(type='FCNMaskHead', num_convs=4, num_classes=3)),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
                  mask_thr_binary=0.5)))
img_norm_cfg = dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False)
lr_config = dict(policy='step', step=[28, 34])
"""

CONFIG_3X = CONFIG_2X.replace(
    "type='MaskRCNN',",
    "type='MaskRCNN', data_preprocessor=dict(type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675], "
    "std=[1.0, 1.0, 1.0], bgr_to_rgb=False, pad_size_divisor=32),",
).replace("img_norm_cfg = dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False)\n", "")


@pytest.fixture(scope="module")
def cfg():
    return get_config("mmdet-r50-caffe-fpn", class_names=NAMES)


@pytest.fixture(scope="module")
def state(cfg):
    return random_isseg_state(cfg)


def mm_checkpoint(state, cfg, version: int = 2, text: str | None = None) -> dict:
    ckpt = to_mmdet(state, cfg, version=version)
    if text is not None:
        ckpt["meta"]["config" if version == 2 else "cfg"] = text
    return ckpt


# ------------------------------------------------------------------------------------------ layout
def test_mmdet_names_hand_checked(state, cfg):
    sd = mm_checkpoint(state, cfg)["state_dict"]
    pairs = {
        "backbone.body.conv1.weight": "backbone.conv1.weight",
        "backbone.body.layer2.0.bn1.running_mean": "backbone.layer2.0.bn1.running_mean",
        "backbone.body.layer3.0.downsample.1.weight": "backbone.layer3.0.downsample.1.weight",
        "backbone.fpn.inner_blocks.2.0.weight": "neck.lateral_convs.2.conv.weight",
        "backbone.fpn.layer_blocks.0.0.bias": "neck.fpn_convs.0.conv.bias",
        "rpn.head.conv.0.0.weight": "rpn_head.rpn_conv.weight",
        "rpn.head.cls_logits.bias": "rpn_head.rpn_cls.bias",
        "rpn.head.bbox_pred.weight": "rpn_head.rpn_reg.weight",
        "roi_heads.box_head.fc6.weight": "roi_head.bbox_head.shared_fcs.0.weight",
        "roi_heads.box_head.fc7.bias": "roi_head.bbox_head.shared_fcs.1.bias",
        "roi_heads.box_predictor.cls_score.weight": "roi_head.bbox_head.fc_cls.weight",
        "roi_heads.box_predictor.bbox_pred.bias": "roi_head.bbox_head.fc_reg.bias",
        "roi_heads.mask_head.2.0.weight": "roi_head.mask_head.convs.2.conv.weight",
        "roi_heads.mask_predictor.conv5_mask.weight": "roi_head.mask_head.upsample.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias": "roi_head.mask_head.conv_logits.bias",
    }
    for mine, theirs in pairs.items():
        assert torch.equal(sd[theirs], state[mine]), (mine, theirs)
    # mmdetection builds nn.BatchNorm2d (frozen by requires_grad=False + norm_eval) -> num_batches_tracked too
    assert sd["backbone.layer1.0.bn1.num_batches_tracked"].dtype == torch.long
    assert len(sd) == len(state) + 53


@pytest.mark.parametrize("version", [2, 3])
def test_round_trip_with_config_checks(state, cfg, version):
    ckpt = mm_checkpoint(state, cfg, version, CONFIG_2X if version == 2 else CONFIG_3X)
    assert is_mmdet(ckpt) and mmdet_version(ckpt["meta"], ckpt["state_dict"]) == str(version)
    assert class_info(ckpt) == (3, list(NAMES))
    back, notes = from_mmdet(ckpt, cfg, strict=True)
    assert list(back) == list(isseg_layout(cfg))
    assert all(torch.equal(back[k], v) for k, v in state.items())
    text = "\n".join(notes)
    assert f"layout: mmdetection {version}.x" in text
    assert "stride placement: style='caffe'" in text
    assert "target_stds [0.1, 0.1, 0.2, 0.2] == 1 / box_coder_weights [10.0, 10.0, 5.0, 5.0]" in text
    assert "input normalization: mean [103.53, 116.28, 123.675] std [1.0, 1.0, 1.0] BGR" in text
    assert "ignored (BN step counter" in text and "unused keys: 0" in text and "missing keys: 0" in text


def test_parse_config_never_runs_code():
    cfg = parse_mm_config("import os\nx = os.system('echo no')\ny = dict(a=[1, -2.5], b=(1 / 9))\n")
    assert cfg == {"y": {"a": [1, -2.5], "b": 1 / 9}}


# --------------------------------------------------------------------------------- conventions refused
@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("style='caffe'", "style='pytorch'", "backbone.style"),
        ("target_stds=[0.1, 0.1, 0.2, 0.2]", "target_stds=[0.05, 0.05, 0.1, 0.1]", "target_stds"),
        ("to_rgb=False", "to_rgb=True", "input normalization"),
        ("type='AnchorGenerator',", "type='LegacyAnchorGenerator',", "anchor_generator.type"),
        ("scales=[8]", "scales=[4]", "anchor sizes"),
        ("reg_class_agnostic=False", "reg_class_agnostic=True", "reg_class_agnostic"),
        ("use_sigmoid=True", "use_sigmoid=False", "softmax RPN"),
        ("type='Shared2FCBBoxHead'", "type='Shared4Conv1FCBBoxHead'", "bbox_head.type"),
        (
            "norm_cfg=dict(type='BN', requires_grad=False)",
            "norm_cfg=dict(type='GN', num_groups=32)",
            "norm_cfg",
        ),
    ],
)
def test_config_conventions_refused(state, cfg, old, new, match):
    assert old in CONFIG_2X
    with pytest.raises(ValueError, match=match):
        from_mmdet(mm_checkpoint(state, cfg, 2, CONFIG_2X.replace(old, new)), cfg)


def test_convention_error_names_field_value_preset_and_meaning(state, cfg):
    """One table of conventions, one message: the field's path, its value, the preset's value, what it means."""
    text = CONFIG_2X.replace("use_sigmoid=True", "use_sigmoid=False")
    with pytest.raises(ValueError) as err:
        from_mmdet(mm_checkpoint(state, cfg, 2, text), cfg)
    assert str(err.value).startswith(
        "mmdetection checkpoint: the checkpoint's config has model.rpn_head.loss_cls.use_sigmoid = False; "
        "preset 'mmdet-r50-caffe-fpn' has True ("
    )
    assert "softmax RPN" in str(err.value)


def test_mask_roi_size_checked_under_every_level_mapping(state, cfg):
    """The mask RoIAlign size is checked under a detectron2-mapped preset too (it used to be skipped there)."""
    d2cfg = get_config("detectron2-r50-fpn", class_names=NAMES)
    text = CONFIG_2X.replace("output_size=14", "output_size=28")
    with pytest.raises(ValueError, match=r"mask_roi_extractor\.roi_layer\.output_size = 28; preset .* has 14"):
        from_mmdet(mm_checkpoint(state, cfg, 2, text), d2cfg)


def test_test_cfg_and_level_mapping_differences_are_noted(state, cfg):
    text = CONFIG_2X.replace("score_thr=0.05", "score_thr=0.3")
    _, notes = from_mmdet(mm_checkpoint(state, cfg, 2, text), cfg)
    assert any("rcnn.score_thr=0.3 (preset 0.05)" in n for n in notes)
    d2cfg = get_config("detectron2-r50-fpn", class_names=NAMES)
    _, notes = from_mmdet(mm_checkpoint(state, cfg, 2, CONFIG_2X), d2cfg)
    assert any("finest_scale=56" in n and "level_mapping='detectron2'" in n for n in notes)


def test_mmdet_1x_refused(state, cfg):
    sd = {k.replace("roi_head.", ""): v for k, v in mm_checkpoint(state, cfg)["state_dict"].items()}
    ckpt = {"meta": {"mmdet_version": "1.0rc0+abc"}, "state_dict": sd}
    assert is_mmdet(ckpt)
    with pytest.raises(ValueError, match="mmdetection 1.x.*upgrade_model_version"):
        from_mmdet(ckpt, cfg)


def test_legacy_and_agnostic_predictors_refused(state, cfg):
    ckpt = mm_checkpoint(state, cfg)
    ckpt["state_dict"]["roi_head.bbox_head.fc_reg.weight"] = torch.zeros(16, 1024)
    with pytest.raises(ValueError, match=r"4 x \(K\+1\)"):
        from_mmdet(ckpt, cfg)
    ckpt = mm_checkpoint(state, cfg)
    ckpt["state_dict"]["roi_head.mask_head.conv_logits.weight"] = torch.zeros(1, 256, 1, 1)
    with pytest.raises(ValueError, match="class-agnostic mask"):
        from_mmdet(ckpt, cfg)
    ckpt = mm_checkpoint(state, cfg)
    ckpt["state_dict"]["rpn_head.rpn_cls.weight"] = torch.zeros(6, 256, 1, 1)
    with pytest.raises(ValueError, match="softmax RPN"):
        from_mmdet(ckpt, cfg)


def test_random_dict_and_wrong_shape(state, cfg):
    assert not is_mmdet({"state_dict": {"foo.weight": torch.zeros(1)}, "meta": {}})
    assert not is_mmdet({"a": 1})
    ckpt = mm_checkpoint(state, cfg)
    ckpt["state_dict"]["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, 512, 1, 1)
    with pytest.raises(ValueError, match=r"neck\.lateral_convs\.0\.conv\.weight.*\(256, 512, 1, 1\).*"
                                         r"\(256, 256, 1, 1\)"):  # fmt: skip
        from_mmdet(ckpt, cfg)


def test_ema_unknown_and_missing_keys(state, cfg):
    ckpt = mm_checkpoint(state, cfg)
    ckpt["state_dict"]["ema_backbone_conv1_weight"] = torch.zeros(64, 3, 7, 7)
    back, notes = from_mmdet(ckpt, cfg, strict=True)
    assert any(n.startswith("ignored (EMA copies") for n in notes)
    ckpt["state_dict"]["roi_head.semantic_head.conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="semantic_head"):
        from_mmdet(ckpt, cfg, strict=True)
    back, _ = from_mmdet(ckpt, cfg)
    assert "mmdet:roi_head.semantic_head.conv.weight" in back
    del ckpt["state_dict"]["rpn_head.rpn_reg.bias"]
    with pytest.raises(ValueError, match=r"rpn_head\.rpn_reg\.bias \(for rpn\.head\.bbox_pred\.bias\)"):
        from_mmdet(ckpt, cfg, strict=True)


# ------------------------------------------------------------------------------------------ classes
def _class_case(cfg):
    """Hand-made predictor: row values encode (class, coordinate) so that every move is visible."""
    st = random_isseg_state(cfg)
    st["roi_heads.box_predictor.cls_score.weight"] = torch.tensor([1.0, 2.0, 3.0, 9.0])[:, None].repeat(
        1, 1024
    )
    st["roi_heads.box_predictor.cls_score.bias"] = torch.tensor([1.0, 2.0, 3.0, 9.0])
    reg = torch.tensor([10.0 * (c + 1) + j for c in range(3) for j in range(4)])
    st["roi_heads.box_predictor.bbox_pred.weight"] = reg[:, None].repeat(1, 1024)
    st["roi_heads.box_predictor.bbox_pred.bias"] = reg
    st["roi_heads.mask_predictor.mask_fcn_logits.bias"] = torch.tensor([100.0, 200.0, 300.0])
    return st


def test_class_order_converted_background_stays_last(cfg):
    """Checkpoint classes (cat, dog, bird) loaded into a (bird, cat, dog) model."""
    ckpt = mm_checkpoint(_class_case(cfg), cfg)  # CLASSES = ("cat", "dog", "bird")
    target = replace(cfg, class_names=("bird", "cat", "dog"))
    back, notes = from_mmdet(ckpt, target, strict=True)
    assert back["roi_heads.box_predictor.cls_score.bias"].tolist() == [3.0, 1.0, 2.0, 9.0]
    assert back["roi_heads.box_predictor.cls_score.weight"][:, 0].tolist() == [3.0, 1.0, 2.0, 9.0]
    assert back["roi_heads.box_predictor.bbox_pred.bias"].tolist() == [
        30.0, 31.0, 32.0, 33.0, 10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0,
    ]  # fmt: skip
    assert back["roi_heads.box_predictor.bbox_pred.weight"][4:8, 0].tolist() == [10.0, 11.0, 12.0, 13.0]
    assert back["roi_heads.mask_predictor.mask_fcn_logits.bias"].tolist() == [300.0, 100.0, 200.0]
    assert any("3 of 3 classes reordered" in n for n in notes)


def test_class_names_case_and_underscores_are_equal(cfg):
    ckpt = mm_checkpoint(_class_case(cfg), cfg)
    ckpt["meta"]["CLASSES"] = ("Cat", "dog ", "bird")
    back, notes = from_mmdet(ckpt, cfg, strict=True)
    assert back["roi_heads.box_predictor.cls_score.bias"].tolist() == [1.0, 2.0, 3.0, 9.0]
    assert any("same order" in n for n in notes)


def test_other_class_set_refused_generic_names_accepted(cfg):
    ckpt = mm_checkpoint(_class_case(cfg), cfg)
    with pytest.raises(ValueError, match="class names differ"):
        from_mmdet(ckpt, replace(cfg, class_names=("car", "cat", "dog")))
    _, notes = from_mmdet(ckpt, get_config("mmdet-r50-caffe-fpn", num_classes=3))
    assert any("generic names" in n for n in notes)


def test_otx1_weights_pth_labels_define_the_order(cfg):
    """OTX 1.x weights.pth: {"model": {"state_dict", "meta"}, "labels": {name: color}, ...}."""
    inner = mm_checkpoint(_class_case(cfg), cfg)
    del inner["meta"]["CLASSES"]
    ckpt = {"model": inner, "config": {}, "labels": {"cat": (1, 2, 3), "dog": (0, 0, 0), "bird": (9, 9, 9)},
            "confidence_threshold": 0.35, "VERSION": 1}  # fmt: skip
    assert is_mmdet(ckpt) and class_info(ckpt) == (3, ["cat", "dog", "bird"])
    back, notes = from_mmdet(ckpt, replace(cfg, class_names=("dog", "bird", "cat")), strict=True)
    assert back["roi_heads.box_predictor.cls_score.bias"].tolist() == [2.0, 3.0, 1.0, 9.0]
    assert "OpenVINO Training Extensions 1.x" in notes[0]
    assert any("pytorch-style with RGB ImageNet normalization" in n for n in notes)


def test_otx2_lightning_prefix(state, cfg):
    ckpt = mm_checkpoint(state, cfg, 3)
    ckpt = {"state_dict": {f"model.model.{k}": v for k, v in ckpt["state_dict"].items()},
            "hyper_parameters": {}}  # fmt: skip
    assert is_mmdet(ckpt)
    back, notes = from_mmdet(ckpt, cfg, strict=True)
    assert all(torch.equal(back[k], v) for k, v in state.items())
    assert "prefix 'model.model.' removed" in notes[0]


# ------------------------------------------------------------------------------------------ files and CLI
def test_file_load_and_convert_command(state, cfg, tmp_path, capsys):
    """mmdet .pth -> `isseg convert` -> an isseg checkpoint every command loads without flags."""
    from isseg.cli.main import main
    from isseg.weights.loading import load_model

    src = tmp_path / "mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco-00000000.pth"
    torch.save(mm_checkpoint(state, cfg, 2, CONFIG_2X), src)
    names = tmp_path / "names.txt"
    names.write_text("# model order\nbird\ncat\n\ndog\n")
    dst = tmp_path / "converted.pth"
    assert main(["convert", str(src), str(dst), "--classes", str(names)]) == 0
    out = capsys.readouterr().out
    assert "mmdet layout, 307 tensors loaded" in out and "unused keys: 0" in out and "missing keys: 0" in out
    assert "3 of 3 classes reordered" in out
    model = load_model(dst)
    assert model.config.name == "mmdet-r50-caffe-fpn" and model.class_names == ("bird", "cat", "dog")
    own = model.state_dict()
    perm = [2, 0, 1]  # bird, cat, dog in the checkpoint's (cat, dog, bird)
    assert torch.equal(
        own["backbone.body.layer4.2.conv3.weight"], state["backbone.body.layer4.2.conv3.weight"]
    )
    assert torch.equal(own["roi_heads.mask_predictor.mask_fcn_logits.weight"],
                       state["roi_heads.mask_predictor.mask_fcn_logits.weight"][perm])  # fmt: skip
    saved = torch.load(dst, weights_only=False)
    assert saved["converted_from"]["layout"] == "mmdet"

    back = tmp_path / "back_mmdet3.pth"  # and back to mmdetection 3.x, in the model's class order
    assert main(["convert", str(dst), str(back), "--to", "mmdet3"]) == 0
    ckpt = torch.load(back, weights_only=True)
    assert ckpt["meta"]["dataset_meta"]["classes"] == ("bird", "cat", "dog")
    assert torch.equal(ckpt["state_dict"]["roi_head.mask_head.conv_logits.weight"],
                       own["roi_heads.mask_predictor.mask_fcn_logits.weight"])  # fmt: skip


def test_convert_command_refuses_with_reason(state, cfg, tmp_path, capsys):
    from isseg.cli.main import main

    src = tmp_path / "pytorch_style.pth"
    torch.save(mm_checkpoint(state, cfg, 2, CONFIG_2X.replace("style='caffe'", "style='pytorch'")), src)
    assert main(["convert", str(src), str(tmp_path / "out.pth")]) == 1
    err = capsys.readouterr().err
    assert "backbone.style" in err and "'pytorch'" in err
    assert not (tmp_path / "out.pth").exists()
