"""Random isseg state dicts shared by the converter tests (detectron2, mmdetection)."""

from __future__ import annotations

import torch

CLASS_NAMES = ("cat", "dog", "bird")
"""The classes of the converters' test models (three, not COCO's: class mapping is exercised)."""


def random_isseg_state(config, seed: int = 0) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """An isseg state dict of random values for ``config`` (positive variances): the converters' input."""
    from isseg.weights.conversion import isseg_layout

    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in isseg_layout(config).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(shape, generator=g) * 0.05
    return out
