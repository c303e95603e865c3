"""The baseline of ``isseg benchmark``: torchvision's ``maskrcnn_resnet50_fpn`` in eager PyTorch, with seeded
random weights whose classifier passes ~100 detections per image (the realistic amount of work), run on the
same letterboxed input as isseg."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def torchvision_model(seed: int = 0, input_size: tuple[int, int] = (768, 1024)) -> Any:
    """``maskrcnn_resnet50_fpn(weights=None)``, seeded, with a classifier bias that passes ~100 detections,
    and its transform set to keep a ``input_size`` image as it is."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(seed)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        cls = model.roi_heads.box_predictor.cls_score
        bias = torch.randn(cls.bias.shape[0], generator=g) * 1.5 + 1.0
        bias[0] = -1.0  # background
        cls.bias.copy_(bias)
        cls.weight.mul_(0.1)
    model.transform.min_size = (min(input_size),)
    model.transform.max_size = max(input_size)
    return model


def letterboxed(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxWx3 ``image`` resized to fit ``size`` (H, W) and padded with 0, as the seed's application does;
    returns a uint8 ``size[0] x size[1] x 3`` array in the same channel order."""
    import torch

    from isseg.config import InputConfig
    from isseg.model.transform import prepare_image

    cfg = InputConfig(resize="fit", size=size, pad_normalized=False)
    canvas = prepare_image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), cfg).input
    return np.ascontiguousarray(canvas.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())


class TorchvisionRunner:
    """torchvision eager fp32 on the same letterboxed input as isseg (its transform keeps 768x1024 as it is):
    "preprocess" = letterbox + RGB float tensor, "infer" = its whole forward (transform, network, detection
    post-processing, mask pasting at 768x1024), "postprocess" = thresholding the mask probabilities."""

    def __init__(self, input_size: tuple[int, int] = (768, 1024)) -> None:
        self.model = torchvision_model(input_size=input_size)
        self.input_size = input_size
        self.timings: dict[str, float] = {}

    def predict(self, image: np.ndarray) -> Any:
        """The [N, H, W] bool masks of a BGR image (N detections, at the letterboxed size); stage times in
        :attr:`timings`."""
        import torch

        t0 = time.perf_counter()
        canvas = letterboxed(image, self.input_size)
        x = torch.from_numpy(canvas[:, :, ::-1].copy()).permute(2, 0, 1).float().div_(255.0)
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = self.model([x])[0]
        t2 = time.perf_counter()
        masks = (out["masks"][:, 0] > 0.5).numpy()
        t3 = time.perf_counter()
        self.timings = {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2}
        return masks
