"""ResNet-50 body and Feature Pyramid Network (P2..P6).

Parameter names follow torchvision's ResNet and FPN so that the common checkpoints map onto them with
little renaming. The only architectural switch between the reference implementations is where a
bottleneck puts its stride: in the first 1x1 conv ("caffe", the MSRA weights used by detectron2,
mmdetection and the OpenVINO seed) or in the 3x3 conv ("pytorch", torchvision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isseg.config import BackboneConfig, Norm


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, stored as buffers (never trained)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        state_dict.pop(prefix + "num_batches_tracked", None)  # present when loading from a real BN
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: Norm, channels: int, eps: float = 1e-5) -> nn.Module:
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "gn":
        return nn.GroupNorm(32, channels, eps=eps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected frozen_bn, bn, gn or none")


class ConvNormAct(nn.Sequential):
    """conv -> norm -> ReLU, named ``0`` / ``1`` like torchvision's Conv2dNormActivation.

    The conv has a bias only when there is no norm; a norm of "none" adds no module, so keys stay
    ``.0.weight`` / ``.0.bias`` as in torchvision's norm-free heads.
    """

    def __init__(self, cin: int, cout: int, kernel: int, norm: Norm = "none", relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=norm == "none")]
        if norm != "none":
            layers.append(make_norm(norm, cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, cfg: BackboneConfig) -> None:
        super().__init__()
        cout = width * self.expansion
        s1, s3 = (stride, 1) if cfg.style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(cin, width, 1, stride=s1, bias=False)
        self.bn1 = make_norm(cfg.norm, width, cfg.norm_eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=1, bias=False)
        self.bn2 = make_norm(cfg.norm, width, cfg.norm_eps)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = make_norm(cfg.norm, cout, cfg.norm_eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), make_norm(cfg.norm, cout, cfg.norm_eps)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34): for small models that train from scratch on a CPU."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, cfg: BackboneConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(cfg.norm, width, cfg.norm_eps)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = make_norm(cfg.norm, width, cfg.norm_eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, width, 1, stride=stride, bias=False), make_norm(cfg.norm, width, cfg.norm_eps)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


# depth -> (block type, blocks per stage)
_ARCHS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet body returning C2..C5 (strides 4, 8, 16, 32; ``out_channels`` 256..2048 for ResNet-50)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        if cfg.depth not in _ARCHS:
            raise ValueError(f"ResNet depth {cfg.depth} not supported; expected one of {sorted(_ARCHS)}")
        block, stages = _ARCHS[cfg.depth]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(cfg.norm, 64, cfg.norm_eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        self.out_channels: tuple[int, ...] = ()
        for i, (blocks, width) in enumerate(zip(stages, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(blocks):
                layers.append(block(cin, width, stride if b == 0 else 1, cfg))
                cin = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            self.out_channels += (cin,)
        self.freeze(cfg.frozen_stages)

    def freeze(self, stages: int) -> None:
        """Stop gradients for the stem and the first ``stages`` residual stages (0 = stem only)."""
        if not 0 <= stages <= 4:
            raise ValueError(f"frozen_stages must be in 0..4, got {stages}")
        frozen = [self.conv1, self.bn1] + [getattr(self, f"layer{i}") for i in range(1, stages + 1)]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            outs.append(x)
        return outs


class FPN(nn.Module):
    """Top-down pyramid P2..P5 with nearest upsampling, plus P6 = max-pool(P5, k=1, s=2)."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, norm: Norm = "none") -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(ConvNormAct(c, out_channels, 1, norm, relu=False) for c in in_channels)
        self.layer_blocks = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm, relu=False) for _ in in_channels
        )

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        last = self.inner_blocks[-1](feats[-1])
        outs = [self.layer_blocks[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.layer_blocks[i](last))
        outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return outs


class Backbone(nn.Module):
    """ResNet + FPN: image batch [N,3,H,W] -> [P2, P3, P4, P5, P6], each [N, C, H/s, W/s]."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.body = ResNet(cfg)
        self.fpn = FPN(self.body.out_channels, cfg.fpn_channels, cfg.fpn_norm)
        self.out_channels = cfg.fpn_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.fpn(self.body(x))
