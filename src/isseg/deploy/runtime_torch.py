"""PyTorch backend: the same fixed-size graph as the exports (:class:`DeployGraph`), run eagerly.

So every backend of the Predictor computes the same function on the same letterboxed input; for the seed
preset this is ``model.predict`` up to boxes being clipped to the padded input rather than the resized image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from isseg.deploy.graph import DeployGraph


class TorchRuntime:
    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", input_size: tuple[int, int] = (768, 1024)) -> None:
        cfg = model.config  # type: ignore[attr-defined]
        self.device = torch.device(device)
        self.graph = DeployGraph(model.eval(), input_size).eval().to(self.device)
        self.input_size = self.graph.input_size
        self.metadata: dict[str, Any] = {
            "class_names": tuple(cfg.class_names),
            "mask_paste": cfg.roi.mask_paste,
            "mask_threshold": cfg.roi.mask_threshold,
            "preset": cfg.name,
            "precision": "fp32",
        }
        self.num_requests = 1

    @torch.inference_mode()
    def infer(self, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(canvas)).to(self.device).permute(2, 0, 1)[None].float()
        labels, boxes, masks = self.graph(x)
        return labels.cpu().numpy(), boxes.cpu().numpy(), masks.cpu().numpy()
