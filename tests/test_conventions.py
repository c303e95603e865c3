"""Each library convention isseg reproduces, checked in isolation against a hand-computed case.

Sources (see docs/conventions.md): torchvision ``ops/poolers.py`` LevelMapper, ``models/detection/
anchor_utils.py``; detectron2 ``modeling/poolers.py`` assign_boxes_to_levels, ``anchor_generator.py``,
``box_regression.py`` Box2BoxTransform, ``data/transforms/augmentation_impl.py`` ResizeShortestEdge,
``layers/mask_ops.py``; mmdetection ``roi_extractors/single_level_roi_extractor.py`` map_roi_levels,
``coders/delta_xywh_bbox_coder.py`` delta2bbox, mmcv ``rescale_size``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from isseg.config import BackboneConfig, RoIConfig, get_config
from isseg.model.anchors import base_anchors, grid_anchors
from isseg.model.box_coder import BoxCoder, clip_boxes
from isseg.model.postprocess import paste_masks
from isseg.model.roi_heads import assign_levels
from isseg.model.transform import resized_size


def square(side: float) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, side, side]], dtype=torch.float32)


# ------------------------------------------------------------------------------------------ level mapping
# P-level (2..5) of a square RoI of the given side. The formulas agree except within ~1e-6 (relative) of a
# boundary (112, 224, 448 px):
#   torchvision  floor(4 + log2(s / 224) + 1e-6)
#   detectron2   floor(4 + log2(s / 224 + 1e-8))
#   mmdet        floor(log2(s / 56 + 1e-6)) + 2
# At s = 224 (1 - 5e-7): log2(s/224) = -7.2e-7, so torchvision's +1e-6 lifts it to level 4; mmdet's eps
# (1e-6 on s/56 = 4 (1 - 5e-7), i.e. 2.5e-7 relative) does not; detectron2's 1e-8 does not either.
# At s = 112 (1 - 2e-7): torchvision and mmdet (eps 5e-7 relative) round up to level 3, detectron2 does not.
LEVEL_CASES = [
    # side,                   torchvision, detectron2, mmdet
    (1.0, 2, 2, 2),  # clamped to P2
    (111.0, 2, 2, 2),
    (112.0, 3, 3, 3),  # exact boundary: every formula gives the upper level
    (112.0 * (1 - 2e-7), 3, 2, 3),
    (224.0, 4, 4, 4),
    (224.0 * (1 - 5e-7), 4, 3, 3),
    (223.9, 3, 3, 3),
    (448.0, 5, 5, 5),
    (5000.0, 5, 5, 5),  # clamped to P5
]


@pytest.mark.parametrize(("side", "tv", "d2", "mm"), LEVEL_CASES)
def test_level_mapping_at_boundaries(side, tv, d2, mm):
    box = square(side)
    got = {m: int(assign_levels(box, m)[0]) + 2 for m in ("torchvision", "detectron2", "mmdet")}
    assert got == {"torchvision": tv, "detectron2": d2, "mmdet": mm}


def test_presets_choose_their_library_mapping():
    assert get_config("torchvision-v1").roi.level_mapping == "torchvision"
    assert get_config("detectron2-r50-fpn").roi.level_mapping == "detectron2"
    assert get_config("mmdet-r50-caffe-fpn").roi.level_mapping == "mmdet"


# ------------------------------------------------------------------------------------------ anchors
S2 = math.sqrt(2.0)


def test_base_anchors_fractional_and_rounded():
    """Size 32, ratios h/w = 0.5, 1, 2: w = 32 / sqrt(r), h = 32 sqrt(r), centred on 0."""
    exact = base_anchors(32, (0.5, 1.0, 2.0), round_base=False)
    expected = torch.tensor([
        [-16 * S2, -8 * S2, 16 * S2, 8 * S2],  # r = 0.5: 45.25 x 22.63
        [-16.0, -16.0, 16.0, 16.0],
        [-8 * S2, -16 * S2, 8 * S2, 16 * S2],  # r = 2: 22.63 x 45.25
    ])  # fmt: skip
    torch.testing.assert_close(exact, expected, rtol=0, atol=1e-5)
    # torchvision rounds the cell anchors (anchor_utils.AnchorGenerator.generate_anchors ... .round())
    rounded = base_anchors(32, (0.5, 1.0, 2.0), round_base=True)
    assert rounded.tolist() == [
        [-23.0, -11.0, 23.0, 11.0],
        [-16.0, -16.0, 16.0, 16.0],
        [-11.0, -23.0, 11.0, 23.0],
    ]


def test_grid_anchors_offset_zero_and_order():
    """detectron2 OFFSET=0.0 / mmdet center_offset=0: the first anchor is centred on pixel (0, 0); the order
    is (y, x, anchor), as the RPN head's [A, H, W] outputs are flattened."""
    base = base_anchors(32, (0.5, 1.0, 2.0), round_base=False)
    grid = grid_anchors(base, 4, 4, 2, 3)  # stride 4, H=2, W=3
    assert grid.shape == (2 * 3 * 3, 4)
    torch.testing.assert_close(grid[0], base[0])
    torch.testing.assert_close(grid[1], base[1])
    torch.testing.assert_close(grid[3], base[0] + torch.tensor([4.0, 0.0, 4.0, 0.0]))  # next x
    torch.testing.assert_close(grid[9], base[0] + torch.tensor([0.0, 4.0, 0.0, 4.0]))  # next y
    centre = (grid[:, :2] + grid[:, 2:]) / 2
    assert centre[-1].tolist() == [8.0, 4.0]


# ------------------------------------------------------------------------------------------ box coder
def test_box_coder_weights_are_inverse_stds():
    """Proposal (0,0,10,10) -> gt (1,2,11,14): (dx,dy,dw,dh) = (0.1, 0.3, 0, log 1.2); weights (10,10,5,5)
    == mmdet target_stds (0.1, 0.1, 0.2, 0.2) give (1, 3, 0, 5 log 1.2)."""
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    prop = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[1.0, 2.0, 11.0, 14.0]])
    deltas = coder.encode(gt, prop)
    torch.testing.assert_close(deltas, torch.tensor([[1.0, 3.0, 0.0, 5 * math.log(1.2)]]))
    torch.testing.assert_close(coder.decode(deltas, prop), gt)


def test_box_decoding_clamps_growth_only():
    """detectron2 Box2BoxTransform / torchvision: dw, dh clamped from above at log(1000/16), not below."""
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    out = coder.decode(torch.tensor([[0.0, 0.0, 50.0, -50.0]]), box)[0]  # dw = +10, dh = -10
    w = 10 * 1000 / 16  # exp(clamped dw) * 10 = 625
    h = 20 * math.exp(-10.0)  # not clamped
    torch.testing.assert_close(out, torch.tensor([5 - w / 2, 10 - h / 2, 5 + w / 2, 10 + h / 2]))


def test_torchvision_decoding_clamps_growth_only():
    from isseg.model.mask_rcnn import build_model

    with torch.device("meta"):
        coder = build_model("torchvision-v1").roi_heads.box_coder
    out = coder.decode(torch.tensor([[0.0, 0.0, 0.0, -50.0]]), torch.tensor([[0.0, 0.0, 10.0, 20.0]]))[0]
    h = 20 * math.exp(-10.0)  # dh / 5 = -10 is not clamped
    torch.testing.assert_close(out, torch.tensor([0.0, 10 - h / 2, 10.0, 10 + h / 2]))


def test_mmdet_decoding_clamps_both_sides():
    from isseg.model.mask_rcnn import build_model

    with torch.device("meta"):
        coder = build_model("mmdet-r50-caffe-fpn").roi_heads.box_coder
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    out = coder.decode(torch.tensor([[0.0, 0.0, 0.0, -50.0]]), box)[0]
    h = 20 * 16 / 1000  # exp(-log(1000/16)) * 20 = 0.32
    torch.testing.assert_close(out, torch.tensor([0.0, 10 - h / 2, 10.0, 10 + h / 2]))


def test_clip_to_image():
    boxes = torch.tensor([[-5.0, -1.0, 120.0, 30.0]])
    assert clip_boxes(boxes, 20, 100).tolist() == [[0.0, 0.0, 100.0, 20.0]]


# ------------------------------------------------------------------------------------------ background last
def test_background_is_the_last_class():
    """cls_score has K+1 outputs with the background LAST (detectron2 fast_rcnn.py, mmdet BBoxHead)."""
    from isseg.model.roi_heads import RoIHeads

    heads = RoIHeads(256, 2, RoIConfig())
    proposal = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    deltas = torch.zeros(1, 8)

    def detect(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        scores, boxes = heads.decode_predictions(logits, deltas, proposal)
        return heads.postprocess_detections(boxes, scores, (100, 100))

    fg = detect(torch.tensor([[5.0, 0.0, 0.0]]))
    assert fg["labels"].tolist() == [0]
    torch.testing.assert_close(fg["scores"], torch.tensor([math.exp(5) / (math.exp(5) + 2)]))
    assert fg["boxes"].tolist() == [[10.0, 10.0, 50.0, 50.0]]
    bg = detect(torch.tensor([[0.0, 0.0, 5.0]]))
    assert bg["labels"].numel() == 0  # 1 / (e^5 + 2) = 0.0066 < 0.05 for both foreground classes


# ------------------------------------------------------------------------------------------ stride placement
def test_caffe_and_pytorch_stride_placement_same_shapes():
    from isseg.model.backbone import Bottleneck

    caffe = Bottleneck(256, 128, 2, BackboneConfig(style="caffe"))
    torch_style = Bottleneck(256, 128, 2, BackboneConfig(style="pytorch"))
    assert caffe.conv1.stride == (2, 2) and caffe.conv2.stride == (1, 1)
    assert torch_style.conv1.stride == (1, 1) and torch_style.conv2.stride == (2, 2)
    assert {k: v.shape for k, v in caffe.state_dict().items()} == {
        k: v.shape for k, v in torch_style.state_dict().items()
    }
    # same weights, different outputs: the placement must come from the preset, not from the shapes
    torch_style.load_state_dict(caffe.state_dict())
    x = torch.randn(1, 256, 8, 8)
    assert caffe(x).shape == torch_style(x).shape == (1, 512, 4, 4)
    assert not torch.allclose(caffe.eval()(x), torch_style.eval()(x))


# ------------------------------------------------------------------------------------------ resize
@pytest.mark.parametrize(
    ("preset", "hw", "expected"),
    [
        # 480x640 -> short side 800: long side 640 * 800 / 480 = 1066.67
        ("torchvision-v1", (480, 640), (800, 1066)),  # floor
        ("detectron2-r50-fpn", (480, 640), (800, 1067)),  # int(x + 0.5)
        ("mmdet-r50-caffe-fpn", (480, 640), (800, 1067)),
        # 500x1500: long side capped at 1333, short 500 * 1333 / 1500 = 444.33
        ("detectron2-r50-fpn", (500, 1500), (444, 1333)),
        ("mmdet-r50-caffe-fpn", (500, 1500), (444, 1333)),
        # the seed fits the image into 768x1024 (H x W)
        ("security-0002", (480, 640), (768, 1024)),
        ("security-0002", (640, 480), (768, 576)),
    ],
)
def test_resized_size(preset, hw, expected):
    assert resized_size(*hw, get_config(preset).input) == expected


# ------------------------------------------------------------------------------------------ mask paste
def test_mask_paste_threshold_is_inclusive():
    """detectron2 / mmdetection keep pasted pixels ``>= 0.5`` (mask_ops.py / _do_paste_mask). With a 32x32
    mask on a 32-pixel box every pixel centre samples a cell centre exactly, so 0.5 stays 0.5."""
    box = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    assert np.asarray(paste_masks(torch.full((1, 32, 32), 0.5), box, (32, 32), "grid_sample", 0.5)).all()
    below = torch.full((1, 32, 32), 0.5 - 2**-24)
    assert not np.asarray(paste_masks(below, box, (32, 32), "grid_sample", 0.5)).any()


def test_grid_sample_paste_samples_pixel_centres():
    """Left half 1, right half 0 on box (10, 0, 38, 28): pixel x is inside the left half iff its centre
    x + 0.5 < 24 (the box's middle), i.e. x <= 23."""
    probs = torch.zeros(1, 28, 28)
    probs[:, :, :14] = 1.0
    out = paste_masks(probs, torch.tensor([[10.0, 0.0, 38.0, 28.0]]), (28, 40), "grid_sample", 0.5)[0]
    row = np.flatnonzero(out[14]).tolist()
    assert row == list(range(10, 24))


def test_grid_sample_paste_is_bit_identical_to_the_torch_formula():
    """The paste computes its sampling grid with numpy float32; every pasted mask must be identical to the grid
    of detectron2's / mmdetection's torch ops (arange + 0.5 - x0) / (x1 - x0) * 2 - 1, sampled the same way, on
    random probabilities (many near 0.5) and boxes (fractional, tiny, huge, partly outside the image)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    n, h, w = 300, 97, 131
    probs = (0.5 + (torch.rand(n, 28, 28, generator=g) - 0.5) * 0.02).float()
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - 10
    wh = torch.rand(n, 2, generator=g) ** 3 * torch.tensor([w, h]) * 1.5 + 0.3
    boxes = torch.cat([xy, xy + wh], 1).float()
    boxes[:3, 2] = boxes[:3, 0]  # zero width (inf / nan in the grid), zero height, both
    boxes[1:3, 3] = boxes[1:3, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning where torch computes the same silently
        got = paste_masks(probs, boxes, (h, w), "grid_sample", 0.5)
    for i in range(n):
        x0, y0, x1, y1 = boxes[i].unbind(0)
        xa, ya = max(int(x0.floor()) - 1, 0), max(int(y0.floor()) - 1, 0)
        xb, yb = min(int(x1.ceil()) + 1, w), min(int(y1.ceil()) + 1, h)
        expected = torch.zeros(h, w, dtype=torch.bool)
        if xb > xa and yb > ya:
            ys = (torch.arange(ya, yb, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
            xs = (torch.arange(xa, xb, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            sampled = F.grid_sample(probs[i][None, None], torch.stack([gx, gy], -1)[None], align_corners=False)
            expected[ya:yb, xa:xb] = sampled[0, 0] >= 0.5
        assert np.array_equal(got[i], expected.numpy()), i
