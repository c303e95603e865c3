"""The PyTorch model: presets, training step, input validation, parameter count and FLOPs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import isseg
from helpers import small_config
from isseg.config import ModelConfig, get_config
from isseg.model.complexity import count_flops, count_parameters


def toy_sample(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 60, (3, 120, 150), dtype=torch.uint8, generator=g)
    masks = torch.zeros(2, 120, 150, dtype=torch.uint8)
    masks[0, 20:70, 10:60] = 1
    masks[1, 60:110, 80:140] = 1
    image[:, masks[0].bool()] = 200
    image[2, masks[1].bool()] = 250
    target = {"boxes": torch.tensor([[10.0, 20, 60, 70], [80, 60, 140, 110]]), "labels": torch.tensor([0, 2]),
              "masks": masks}
    return image, target


@pytest.mark.parametrize("preset", sorted(isseg.PRESETS))
def test_every_preset_builds_and_predicts(preset: str) -> None:
    torch.manual_seed(0)
    model = isseg.MaskRCNN(small_config(preset)).eval()
    det = model.predict(np.zeros((90, 120, 3), np.uint8))
    assert det.boxes.shape[1] == 4 and det.boxes.dtype == np.float32
    assert det.masks.shape[1:] == (90, 120) and det.masks.dtype == bool
    assert det.labels.dtype == np.int64 and det.scores.dtype == np.float32
    assert det.class_names == model.class_names


def test_training_step_lowers_loss_on_fixed_batch() -> None:
    torch.manual_seed(0)
    model = isseg.MaskRCNN(small_config()).train()
    image, target = toy_sample()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.005, momentum=0.9)

    def total_loss(seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(seed)  # same RPN / RoI sampling every time we measure
        losses = model([image], [target])
        return sum(losses.values()), losses

    with torch.no_grad():
        before, parts = total_loss(123)
    assert set(parts) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in parts.values())
    for step in range(12):
        loss, _ = total_loss(step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)  # random init on 0..255 inputs: keep steps bounded
        opt.step()
    with torch.no_grad():
        after, _ = total_loss(123)
    assert after < 0.7 * before, (float(before), float(after))


def test_frozen_stages_get_no_gradient() -> None:
    model = isseg.MaskRCNN(small_config())
    body = model.backbone.body
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())


def test_eval_is_deterministic() -> None:
    torch.manual_seed(1)
    model = isseg.MaskRCNN(small_config()).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[:3] = 3.0  # let detections through
    image = np.random.default_rng(0).integers(0, 255, (100, 130, 3), dtype=np.uint8)
    a, b = model.predict(image), model.predict(image)
    assert len(a) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_batched_prediction_matches_single() -> None:
    torch.manual_seed(2)
    model = isseg.MaskRCNN(small_config()).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[:3] = 3.0
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (100, 130, 3), dtype=np.uint8), rng.integers(0, 255, (80, 90), dtype=np.uint8)]
    batched = model.predict(images, batch_size=2)
    single = [model.predict(i) for i in images]
    assert [d.image_size for d in batched] == [(100, 130), (80, 90)]
    for b, s in zip(batched, single):
        assert len(b) == len(s)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-3)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 4), np.uint8), "RGBA"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((2, 10, 10, 3), np.uint8), "HxWx3"),
        ([[1, 2], [3, 4]], "numpy"),
    ],
)
def test_bad_images_give_clear_errors(image, message: str) -> None:
    model = isseg.MaskRCNN(small_config()).eval()
    with pytest.raises(ValueError, match=message):
        model.predict(image)


def test_grayscale_and_path_inputs(tmp_path) -> None:
    import cv2

    model = isseg.MaskRCNN(small_config()).eval()
    gray = np.full((50, 60), 128, np.uint8)
    assert model.predict(gray).masks.shape[1:] == (50, 60)
    cv2.imwrite(str(tmp_path / "a.png"), gray)
    assert model.predict(tmp_path / "a.png").image_size == (50, 60)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        model.predict(str(tmp_path / "nope.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        model.predict(str(tmp_path / "bad.png"))


def test_predict_refuses_training_mode() -> None:
    model = isseg.MaskRCNN(small_config()).train()
    with pytest.raises(RuntimeError, match="eval"):
        model.predict(np.zeros((20, 20, 3), np.uint8))


def test_config_round_trip_and_unknown_fields() -> None:
    for name in isseg.PRESETS:
        cfg = get_config(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    data = get_config().to_dict()
    data["roi"]["nms_treshold"] = 0.3
    with pytest.raises(ValueError, match=r"config\.roi: unknown field.*nms_treshold"):
        ModelConfig.from_dict(data)
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("maskrcnn-r101")


def test_parameter_count_and_flops_of_security_0002() -> None:
    """Figures reported in the README next to the seed's 48.37 M parameters and 423 GFLOPs."""
    model = isseg.build_model("security-0002")
    assert sum(p.numel() for p in model.parameters()) == 44_343_216
    assert count_parameters(model) == 44_396_336  # + frozen-BN scale and shift of the backbone
    flops = count_flops(model, 768, 1024)
    # The seed counts the full RoI budget: 1000 proposals through the box head, 100 through the mask head.
    assert flops["total"] == pytest.approx(422.28, abs=0.05)
    assert flops["backbone"] == pytest.approx(120.87, abs=0.05)
    assert flops["mask_head"] == pytest.approx(105.97, abs=0.05)


def test_low_quality_matches_follow_the_min_iou() -> None:
    from isseg.model.sampling import BACKGROUND, IGNORE, match

    iou = torch.tensor([[0.35, 0.1, 0.6], [0.2, 0.25, 0.1]])  # 2 ground truths x 3 predictions
    assert match(iou, 0.7, 0.3, None).tolist() == [IGNORE, BACKGROUND, IGNORE]
    # torchvision / detectron2: every gt keeps its best prediction, whatever its IoU
    assert match(iou, 0.7, 0.3, 0.0).tolist() == [IGNORE, 1, 0]
    # mmdetection's RPN: only where that best IoU reaches 0.3
    assert match(iou, 0.7, 0.3, 0.3).tolist() == [IGNORE, BACKGROUND, 0]


def test_detectron2_postprocess_clips_to_the_original_image() -> None:
    from isseg.model.transform import ImageBatch

    model = isseg.MaskRCNN(small_config("detectron2-r50-fpn")).eval()
    results = [{"boxes": torch.tensor([[-4.0, 2.0, 70.0, 30.0], [66.0, 5.0, 80.0, 9.0]]),
                "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 1]),
                "mask_probs": torch.ones(2, 28, 28)}]
    batch = ImageBatch(torch.zeros(1, 3, 64, 64), [(64, 64)], [(64, 64)], [(32, 32)])
    det = model.postprocess(results, batch)[0]
    # scaled by 0.5, clipped to 32x32; the second box is empty after clipping and dropped
    np.testing.assert_allclose(det.boxes, [[0.0, 1.0, 32.0, 15.0]])
    assert det.labels.tolist() == [0] and det.masks.shape == (1, 32, 32)
    assert det.masks[0, 1:15, 0:32].all()  # the mask fills the clipped box (pasted after clipping)


def test_letterbox_postprocess_pastes_then_clips() -> None:
    """security-0002 (a fixed canvas): a box reaching into the letterbox keeps its mask's geometry (pasted into
    the mapped box, then cut at the image border) and is reported clipped; a box inside the padding goes."""
    from isseg.model.transform import ImageBatch

    model = isseg.MaskRCNN(small_config("security-0002")).eval()
    probs = torch.zeros(2, 28, 28)
    probs[:, :14] = 1.0  # top half of each box
    # a 40x64 photo letterboxed into the 128x160 canvas at scale 2.5: content rows 0..99, padding below
    results = [{"boxes": torch.tensor([[20.0, 80.0, 60.0, 120.0], [20.0, 105.0, 60.0, 125.0]]),
                "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 1]), "mask_probs": probs}]
    batch = ImageBatch(torch.zeros(1, 3, 128, 160), [(128, 160)], [(100, 160)], [(40, 64)])
    det = model.postprocess(results, batch)[0]
    np.testing.assert_allclose(det.boxes, [[8.0, 32.0, 24.0, 40.0]], atol=1e-5)  # y2 48 clipped to 40
    assert det.labels.tolist() == [0]  # the second box lies in the padding: empty once clipped, dropped
    # pasted into the unclipped box 32..48, the top half of the mask covers rows 32..39 (clipped first, it
    # would have been squeezed into 32..35)
    assert det.masks[0, 32:40, 9:23].all() and not det.masks[0, :32].any()


@pytest.mark.parametrize(("depth", "params"), [(18, 30_913_122), (34, 41_021_282)])
def test_small_resnets_for_cpu_training(depth: int, params: int) -> None:
    """Counts = torchvision resnet18/34 bodies (11.18 M / 21.28 M without fc) + FPN + heads for 3 classes."""
    cfg = small_config()
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, depth=depth, norm="gn", frozen_stages=0))
    model = isseg.MaskRCNN(cfg)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.backbone.body.out_channels == (64, 128, 256, 512)
    losses = model.train()(*[[x] for x in toy_sample()])
    assert torch.isfinite(sum(losses.values()))


def test_mask_positives_per_image_caps_what_the_mask_head_learns_from() -> None:
    """The box head samples every positive; the mask head sees at most the cap per image, a random subset."""
    seen: list[int] = []

    def rois_in_mask_head(cap: int | None) -> int:
        torch.manual_seed(0)
        cfg = small_config()
        model = isseg.MaskRCNN(dataclasses.replace(cfg, roi=dataclasses.replace(cfg.roi,
                                                                                  mask_positives_per_image=cap)))
        hook = model.roi_heads.mask_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
        images, targets = zip(toy_sample(0), toy_sample(1))
        losses = model.train()(list(images), list(targets))
        hook.remove()
        assert torch.isfinite(losses["loss_mask"])
        return seen[-1]

    # the two ground-truth boxes join the proposals, so each image has at least 2 positives
    assert rois_in_mask_head(None) >= 4
    assert rois_in_mask_head(1) == 2
    assert rois_in_mask_head(1000) == rois_in_mask_head(None)
    for bad in (0, -3, 2.5, True, "16"):
        with pytest.raises(ValueError, match="mask_positives_per_image"):
            dataclasses.replace(get_config().roi, mask_positives_per_image=bad)
