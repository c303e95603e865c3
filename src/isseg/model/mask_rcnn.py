"""Mask R-CNN: transform -> backbone (ResNet + FPN) -> RPN -> RoI heads -> detections."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from isseg.config import ModelConfig, get_config
from isseg.model.backbone import Backbone
from isseg.model.detections import Detections
from isseg.model.postprocess import to_detections
from isseg.model.roi_heads import RoIHeads
from isseg.model.rpn import RPN
from isseg.model.transform import ImageBatch, ImageTransform
from isseg.sources.decode import ImageLike, read_image


class MaskRCNN(nn.Module):
    """The whole detector. ``forward`` follows torchvision's convention (losses in training, results in
    eval); ``predict`` is the convenient entry point for numpy images."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.transform = ImageTransform(config.input)
        self.backbone = Backbone(config.backbone)
        self.rpn = RPN(self.backbone.out_channels, config.rpn, config.anchors)
        self.roi_heads = RoIHeads(self.backbone.out_channels, config.num_classes, config.roi)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[Detections]:
        """images: BGR [3, H, W] uint8/float tensors. Training: dict of scalar losses; eval: Detections."""
        if self.training and targets is None:
            raise ValueError("MaskRCNN: targets are required in training mode (call model.eval() to predict)")
        batch, targets = self.transform(images, targets)
        if self.training:
            features = self.backbone(batch.tensor)
            proposals, rpn_losses = self.rpn(features, batch.padded_size, batch.image_sizes, targets)
            _, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, targets, batch.original_sizes)
            return {**rpn_losses, **roi_losses}
        return self.postprocess(self.infer(batch.tensor, batch.image_sizes), batch)

    def infer(self, x: Tensor, image_sizes: list) -> list[dict[str, Tensor]]:
        """The network's inference on a normalized, padded batch ``x`` [N, 3, H, W]: per image ``boxes`` [D, 4]
        (network-input pixels, clipped to ``image_sizes[i]``), ``scores`` [D], ``labels`` [D], ``mask_probs``
        [D, 28, 28]. The exported graph traces exactly this (``isseg.deploy.export``)."""
        features = self.backbone(x)
        proposals, _ = self.rpn(features, (x.shape[-2], x.shape[-1]), image_sizes)
        results, _ = self.roi_heads(features, proposals, image_sizes)
        return results

    def postprocess(self, results: list[dict[str, Tensor]], batch: ImageBatch) -> list[Detections]:
        return [to_detections(r["boxes"], r["scores"], r["labels"], r["mask_probs"], content, original,
                              self.config.roi, self.class_names)
                for r, content, original in zip(results, batch.content_sizes, batch.original_sizes)]

    @torch.inference_mode()
    def predict(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 1
                ) -> Detections | list[Detections]:
        """Detect instances in an HxWx3 uint8 BGR image (OpenCV's convention), an HxW grayscale image or an
        image file path; a list gives a list. Call ``model.eval()`` first."""
        if self.training:
            raise RuntimeError("MaskRCNN.predict: the model is in training mode; call model.eval() first")
        single = isinstance(images, np.ndarray | str | Path)
        items = [images] if single else list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = self.device
        results: list[Detections] = []
        for start in range(0, len(items), batch_size):
            chunk = [to_image_tensor(x).to(device) for x in items[start : start + batch_size]]
            results.extend(self(chunk))
        return results[0] if single else results


def to_image_tensor(image: ImageLike) -> Tensor:
    """Check and convert one user image to a BGR uint8 [3, H, W] tensor, with a clear error otherwise."""
    if isinstance(image, Tensor):
        raise ValueError("predict() takes numpy images (HxWx3 uint8 BGR); call the model on [3,H,W] tensors")
    return torch.from_numpy(np.ascontiguousarray(read_image(image))).permute(2, 0, 1)


def build_model(preset: str | ModelConfig = "security-0002", num_classes: int | None = None,
                class_names: Sequence[str] | None = None) -> MaskRCNN:
    """A Mask R-CNN from a preset name (see ``isseg.PRESETS``) or a ``ModelConfig``, with random weights;
    ``isseg.load_weights(model, ...)`` or ``isseg.load_model(...)`` give it trained ones."""
    cfg = get_config(preset, num_classes, tuple(class_names) if class_names is not None else None)
    return MaskRCNN(cfg)
