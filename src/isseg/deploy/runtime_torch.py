"""PyTorch backend: the model's inference through :class:`isseg.deploy.graph.ExportModule`, run eagerly.

That is the very code the exports trace, so this backend, ``model.predict`` and every exported model compute
one function; it is also the reference the export tests compare the runtimes with (traced == eager).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from isseg.deploy.contract import ModelMeta
from isseg.deploy.graph import ExportModule
from isseg.deploy.runtime import Outputs, StreamItem, stream_sequentially


class TorchRuntime:
    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu") -> None:
        self.device = str(device)
        self.graph = ExportModule(model.eval()).eval().to(torch.device(self.device))
        self.meta = ModelMeta(model.config, "fp32")  # type: ignore[arg-type]
        self.num_requests = 1

    @torch.inference_mode()
    def infer(self, x: np.ndarray) -> Outputs:
        labels, boxes, masks = self.graph(torch.from_numpy(x).to(self.device))
        return labels.cpu().numpy(), boxes.float().cpu().numpy(), masks.float().cpu().numpy()  # (bf16 under autocast)

    def stream(self, items: Iterable[Any], prepare: Callable[[Any], tuple[np.ndarray, Any]]) -> Iterator[StreamItem]:
        return stream_sequentially(self, items, prepare)
