"""The exported graph: the model's own inference (``MaskRCNN.infer``), wrapped for one image and the contract.

``ExportModule`` adds only what export needs around the one implementation of inference: normalization and
padding of the raw ``image`` input (the same ``model.transform`` methods the eager path uses), the clip extent
taken from the input's own shape, and the output padding to exactly ``detections_per_img`` rows (score 0), as
detectron2 wraps its one model for tracing instead of writing a second one. It traces into standard ONNX ops
only (``TopK``, ``NonMaxSuppression``, ``RoiAlign``, ``NonZero``, ``ScatterND``, ``Gather``), never a
``Loop``; with a dynamic input it stays dynamic (anchors and padding are computed from the traced shape).

Input ``image``: float32 ``[1, 3, H, W]``, BGR, 0..255: the preset's pre-processed image
(:func:`isseg.model.transform.prepare_image`: the letterboxed canvas of a "fit" preset, the resized image of a
"shortest_edge" one). Outputs: ``labels`` int64 ``[100]`` (0-based), ``boxes`` float32 ``[100, 5]`` (x1, y1,
x2, y2, score in input pixels), ``masks`` float32 ``[100, 28, 28]`` (probabilities of the detected class in
its box).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Module scopes (ONNX node-name prefixes: the path of the modules called, from the model's submodules) of the
# network proper: everything else in the graph is geometry (anchors, box decoding, level assignment, RoI
# coordinates, NMS inputs), kept in fp32 and unquantized. tests/test_export.py checks they name real layers.
NETWORK_SCOPES = (
    "/backbone/", "/rpn/head/", "/roi_heads/box_roi_pool/concat/", "/roi_heads/box_head/",
    "/roi_heads/box_predictor/", "/roi_heads/mask_roi_pool/concat/", "/roi_heads/mask_head/",
    "/roi_heads/mask_predictor/",
)  # fmt: skip

# Layer types that are always part of the network even where a conversion dropped the module scope from the
# name (e.g. OpenVINO names a converted ConvTranspose "ConvolutionBackpropData_<n>"). ROIAlign counts as
# network: the CPU plugin always reads its boxes in fp32, and a fp32-marked ROIAlign would convert the
# pyramid features to fp32 in a slow layout (0.6 s at 768x1024 in bf16).
NETWORK_TYPES = frozenset({
    "Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul",
    "ROIAlign", "Conv", "ConvTranspose", "Gemm", "RoiAlign",
})  # fmt: skip


def is_geometry(name: str, layer_type: str) -> bool:
    """Whether an operation of the exported graph computes geometry (anchors, boxes, scores, indices), which
    stays in fp32 and unquantized, rather than network activations."""
    if layer_type in ("Parameter", "Result", "Const", "Constant") or layer_type in NETWORK_TYPES:
        return False
    return not any(name.startswith(scope) for scope in NETWORK_SCOPES)


class ExportModule(nn.Module):
    """One image through ``model.infer`` with the contract's inputs and outputs (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.detections_per_img = int(model.config.roi.detections_per_img)  # type: ignore[union-attr]

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        transform = self.model.transform
        x = transform.pad(transform.normalize(image))
        size = (image.shape[-2], image.shape[-1])  # boxes are clipped to the input, as the eager model does
        r = self.model.infer(x, [size])[0]
        n = self.detections_per_img
        m = r["mask_probs"].shape[-1]
        boxes = torch.cat([torch.cat([r["boxes"], r["scores"][:, None]], 1), r["boxes"].new_zeros(n, 5)], 0)
        labels = torch.cat([r["labels"], r["labels"].new_zeros(n)], 0)
        masks = torch.cat([r["mask_probs"], r["mask_probs"].new_zeros(n, m, m)], 0)
        return labels[:n].reshape(n), boxes[:n].reshape(n, 5), masks[:n].reshape(n, m, m)
