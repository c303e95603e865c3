"""isseg's training RoIAlign (isseg.model.roi_align) computes torchvision's roi_align: outputs and feature
gradients, at the borders, with adaptive sampling, unaligned, for empty and degenerate RoIs, under bf16 autocast;
MultiScaleRoIAlign takes it only when training on a CPU."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

import isseg.model.roi_heads as roi_heads
from isseg.model.roi_align import roi_align_rows
from isseg.model.roi_heads import MultiScaleRoIAlign


def _case(n: int, c: int, h: int, w: int, r: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [n, c, h, w] at stride 4 and ``r`` RoIs, many reaching past the borders, some with zero or negative
    size, one wholly outside."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, c, h, w, generator=g)
    xy = torch.rand(r, 2, generator=g) * torch.tensor([w * 4 + 24.0, h * 4 + 24.0]) - 12
    wh = torch.rand(r, 2, generator=g) * 90 - 6
    rois = torch.cat([torch.randint(0, n, (r, 1), generator=g).float(), xy, xy + wh], 1)
    if r:
        rois[0, 1:] = torch.tensor([-40.0, -40.0, -9.0, -9.0])
    return feat, rois


def _both(feat: torch.Tensor, rois: torch.Tensor, *args: object) -> tuple[torch.Tensor, ...]:
    """(torchvision's output, ours, torchvision's feature gradient, ours) for a random upstream gradient."""
    a, b = feat.clone().requires_grad_(), feat.clone().requires_grad_()
    ya, yb = roi_align(a, rois, *args), roi_align_rows(b, rois, *args)
    upstream = torch.randn(ya.shape, generator=torch.Generator().manual_seed(1))
    (ya * upstream).sum().backward()
    (yb * upstream).sum().backward()
    return ya, yb, a.grad, b.grad


@pytest.mark.parametrize("size,ratio,aligned", [(7, 2, True), (14, 2, True), (7, 0, True), (14, 0, True),
                                                (7, 1, False), (7, 0, False), (7, 3, True)])
def test_rows_equal_torchvision(size: int, ratio: int, aligned: bool) -> None:
    feat, rois = _case(3, 16, 13, 17, 60, seed=size + ratio)
    ya, yb, ga, gb = _both(feat, rois, size, 0.25, ratio, aligned)
    assert yb.shape == ya.shape and yb.dtype == ya.dtype
    assert ya.abs().max() > 0.1 and ga.abs().max() > 0.1  # the case reaches real values
    torch.testing.assert_close(yb, ya, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(gb, ga, atol=5e-5, rtol=1e-5)
    assert yb[0].abs().max() == 0 and ya[0].abs().max() == 0  # the RoI outside the image pools zeros


def test_rows_of_no_rois_stay_in_the_graph() -> None:
    feat, rois = _case(2, 8, 6, 6, 0, seed=0)
    feat.requires_grad_()
    out = roi_align_rows(feat, rois, 7, 0.25, 2, True)
    assert out.shape == (0, 8, 7, 7) and out.requires_grad
    (out.sum() + feat.sum()).backward()
    assert torch.equal(feat.grad, torch.ones_like(feat))


def test_rows_under_bf16_autocast_match_torchvision() -> None:
    """Under autocast torchvision pools in fp32 and returns the features' dtype; so does isseg's."""
    feat, rois = _case(2, 16, 12, 12, 40, seed=3)
    feat = feat.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb, ga, gb = _both(feat, rois, 7, 0.25, 2, True)
    assert ya.dtype == yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), ya.float(), atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(gb.float(), ga.float(), atol=2e-2, rtol=1e-2)


def test_multiscale_takes_rows_only_when_training_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def spy(feat: torch.Tensor, *args: object) -> torch.Tensor:
        calls.append(feat.shape[-1])
        return roi_align_rows(feat, *args)

    monkeypatch.setattr(roi_heads, "roi_align_rows", spy)
    pool = MultiScaleRoIAlign(7, 2, True, "detectron2")
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 8, 64 // s, 64 // s, generator=g) for s in (4, 8, 16, 32)]
    rois = torch.tensor([[0, 2.0, 3.0, 30.0, 40.0], [1, 0.0, 0.0, 250.0, 240.0], [0, 5.0, 5.0, 9.0, 8.0]])
    with torch.no_grad():
        expected, order = pool(features, rois)
    assert calls == []  # inference keeps torchvision's operator (and export traces it)
    trained = [f.clone().requires_grad_() for f in features]
    pooled, order_t = pool(trained, rois)
    assert calls == [16, 8, 4, 2]  # every level, in training
    assert torch.equal(order, order_t)
    torch.testing.assert_close(pooled, expected, atol=2e-5, rtol=1e-5)
