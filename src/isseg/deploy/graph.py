"""An export-friendly Mask R-CNN forward with the seed's contract.

``DeployGraph`` runs the whole network for one image of a fixed size (768x1024 by default) in one call:
normalization, backbone + FPN, RPN proposals (per-level TopK, per-level NMS, global top-N), multi-level
RoIAlign, box head, class-specific decoding, score threshold + per-class NMS + top-100, mask head, and pads
the result to exactly ``detections_per_img`` rows (score 0). It is built from the trained network's modules
(``isseg.model.MaskRCNN``) and its preset, so it computes the same function as the model's
own inference path, with shapes that are fixed wherever that costs nothing, and only tensor operations that
trace into standard ONNX (``TopK``, ``NonMaxSuppression``, ``RoiAlign``, ``NonZero``, ``ScatterND``,
``Gather``), never a ``Loop``.

Input ``image``: float32 ``[1, 3, H, W]``, BGR, 0..255, already resized to fit and padded right/bottom
with 0 by the application; the whole ``H x W`` is the image (boxes are clipped to it).
Outputs: ``labels`` int64 ``[100]`` (0-based), ``boxes`` float32 ``[100, 5]`` (x1, y1, x2, y2, score in
input pixels), ``masks`` float32 ``[100, 28, 28]`` (probabilities of the detected class inside its box).

Non-maximum suppression goes through :class:`_NMS`, an autograd function whose ONNX symbolic is the standard
``NonMaxSuppression`` with the batch dimension used for the class (or level) so that class-specific boxes
need no coordinate offsets (which would cost precision in reduced-precision inference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms as tv_nms
from torchvision.ops import roi_align

from isseg.model.box_coder import clip_boxes
from isseg.model.roi_heads import assign_levels

OUTPUT_NAMES = ("labels", "boxes", "masks")
INPUT_NAME = "image"


class _NMS(torch.autograd.Function):
    """Per-batch NMS: ``boxes [B, N, 4]``, ``scores [B, 1, N]`` -> selected ``[M, 3]`` int64 rows
    (batch, 0, box index), boxes with score <= ``score_thresh`` ignored, at most ``max_out`` per batch.
    Exported as ONNX ``NonMaxSuppression`` (opset >= 11)."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_out: int, iou_thresh: float,  # noqa: D102
                score_thresh: float) -> Tensor:
        rows = []
        for b in range(boxes.shape[0]):
            s = scores[b, 0]
            idx = torch.nonzero(s > score_thresh).squeeze(1)
            keep = tv_nms(boxes[b, idx], s[idx], iou_thresh)[:max_out]
            sel = idx[keep]
            rows.append(torch.stack([torch.full_like(sel, b), torch.zeros_like(sel), sel], 1))
        return torch.cat(rows, 0) if rows else torch.zeros(0, 3, dtype=torch.int64, device=boxes.device)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou_thresh, score_thresh):  # noqa: D102
        return g.op(
            "NonMaxSuppression", boxes, scores,
            g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_thresh], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_thresh], dtype=torch.float32)),
            center_point_box_i=0,
        )  # fmt: skip


def batched_nms_rows(boxes: Tensor, scores: Tensor, max_out: int, iou_thresh: float,
                     score_thresh: float) -> Tensor:
    return _NMS.apply(boxes, scores, max_out, iou_thresh, score_thresh)


def _topk_dynamic(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """TopK with ``min(k, len(x))`` that stays dynamic in a trace (Python ``min`` would freeze it)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        n = torch._shape_as_tensor(x)[0]
        kk = torch.minimum(n, torch.tensor(k, dtype=n.dtype))
        return x.topk(kk)  # type: ignore[arg-type]
    return x.topk(min(k, x.shape[0]))


def feature_sizes(input_size: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature map sizes of the ResNet-FPN levels for an input size: every stride-2 step rounds up."""
    h, w = input_size
    return [(-(-h // s), -(-w // s)) for s in strides]


class PooledFeatures(nn.Module):
    """Concatenates the per-level RoIAlign outputs ``[R_l, C, S, S] -> [R, C, S, S]``. A module only so that the
    exported ``Concat`` carries a network scope and runs in the network's precision (bf16), not in the fp32
    kept for geometry, which cost ~20 ms of layout conversions per image at 768x1024."""

    def forward(self, pooled: list[Tensor]) -> Tensor:
        return torch.cat(pooled, 0)


class DeployGraph(nn.Module):
    """Fixed-size, single-image inference of an ``isseg.MaskRCNN``; see the module docstring for the contract.

    Submodules keep the model's own modules (no copies of the weights) under the names ``backbone``,
    ``rpn_head``, ``box_head``, ``box_predictor`` and ``mask_head`` (mask head + predictor), and the
    ``box_roi_features`` / ``mask_roi_features`` concatenations of pooled features; every other
    operation of the graph is geometry (anchors, boxes, scores, indices) that :mod:`isseg.deploy.export`
    keeps in fp32 when the runtime computes the network in bf16 / fp16.
    """

    MODULE_SCOPES = ("backbone", "rpn_head", "box_roi_features", "box_head", "box_predictor", "mask_roi_features",
                     "mask_head")

    def __init__(self, model: nn.Module, input_size: tuple[int, int] = (768, 1024)) -> None:
        super().__init__()
        cfg = model.config  # type: ignore[attr-defined]
        self.config = cfg
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_classes = cfg.num_classes
        inp, rpn, roi = cfg.input, cfg.rpn, cfg.roi
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head
        self.rpn_coder = model.rpn.box_coder
        heads = model.roi_heads
        self.box_head = heads.box_head
        self.box_predictor = heads.box_predictor
        self.mask_head = nn.Sequential(heads.mask_head, heads.mask_predictor)
        self.box_roi_features, self.mask_roi_features = PooledFeatures(), PooledFeatures()
        self.box_coder = heads.box_coder
        self.roi_strides = tuple(heads.box_roi_pool.strides)
        gen = model.rpn.anchor_generator
        sizes = feature_sizes(self.input_size, gen.strides)
        anchors = gen(sizes, self.input_size, torch.device("cpu"))
        self.num_levels = len(anchors)
        for i, a in enumerate(anchors):
            self.register_buffer(f"anchors_{i}", a.detach().float().clone().contiguous(), persistent=False)
        self.channel_index = [2, 1, 0] if inp.channel_order == "rgb" else [0, 1, 2]
        self.pixel_scale = float(inp.pixel_scale)
        self.divide_std = any(s != 1.0 for s in inp.std)
        self.register_buffer("mean", torch.tensor(inp.mean).float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(inp.std).float().view(1, 3, 1, 1), persistent=False)
        self.rpn_cfg, self.roi_cfg = rpn, roi

    # -- stages ---------------------------------------------------------------------------------------------
    def normalize(self, image: Tensor) -> Tensor:
        """BGR 0..255 -> the network's input, as ``model.transform.normalize`` (padding included)."""
        x = image
        if self.channel_index != [0, 1, 2]:
            x = torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], 1)
        if self.pixel_scale != 1.0:
            x = x / self.pixel_scale
        x = x - self.mean
        if self.divide_std:
            x = x / self.std
        return x

    def _clip(self, boxes: Tensor) -> Tensor:
        h, w = self.input_size
        return clip_boxes(boxes, h, w)

    def proposals(self, feats: list[Tensor]) -> Tensor:
        """RPN: per level top-k, decode, clip, size filter, NMS; then the best ``post_nms_top_n`` overall."""
        cfg = self.rpn_cfg
        logits, deltas = self.rpn_head(feats)
        all_boxes, all_scores = [], []
        for lvl in range(self.num_levels):
            anchors = getattr(self, f"anchors_{lvl}")
            lg = logits[lvl].reshape(-1)
            d = deltas[lvl].reshape(-1, 4)
            k = min(cfg.pre_nms_top_n_test, anchors.shape[0])  # static: the anchor count is fixed
            top, idx = lg.topk(k)
            boxes = self._clip(self.rpn_coder.decode(d[idx], anchors[idx]))
            scores = torch.sigmoid(top)
            ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            if cfg.min_size_mode == "ge":
                valid = (ws >= cfg.min_size) & (hs >= cfg.min_size)
            else:
                valid = (ws > cfg.min_size) & (hs > cfg.min_size)
            valid = valid & (scores >= cfg.score_thresh)
            scores = torch.where(valid, scores, torch.full_like(scores, -1.0))
            sel = batched_nms_rows(boxes[None], scores[None, None], cfg.post_nms_top_n_test, cfg.nms_thresh,
                                   -0.5)
            keep = sel[:, 2]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
        boxes = torch.cat(all_boxes, 0)
        scores = torch.cat(all_scores, 0)
        _, order = _topk_dynamic(scores, cfg.post_nms_top_n_test)
        return boxes[order]

    def roi_align(self, feats: list[Tensor], boxes: Tensor, resolution: int, concat: PooledFeatures
                  ) -> tuple[Tensor, Tensor]:
        """Each box on its pyramid level (P2..P5), as the model's ``MultiScaleRoIAlign``, but grouped by level:
        -> (pooled [R, C, S, S], order [R]) where row i of ``pooled`` belongs to ``boxes[order[i]]``.

        Grouping avoids a zero-filled [R, C, S, S] tensor and scattering into it; callers either keep the
        grouped order (the box head: proposals are a set) or put the few results back (the mask head).
        """
        cfg = self.roi_cfg
        levels = assign_levels(boxes, cfg.level_mapping)
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1)
        pooled, order = [], []
        for lvl, stride in enumerate(self.roi_strides):
            idx = torch.nonzero(levels == lvl).squeeze(1)
            pooled.append(roi_align(feats[lvl], rois[idx], (resolution, resolution), 1.0 / stride,
                                    cfg.sampling_ratio, cfg.aligned))
            order.append(idx)
        return concat(pooled), torch.cat(order, 0)

    def detect(self, feats: list[Tensor], proposals: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> boxes [D,4], scores [D], labels [D]; D <= detections_per_img, sorted by descending score."""
        cfg, k = self.roi_cfg, self.num_classes
        x, order = self.roi_align(feats, proposals, cfg.box_resolution, self.box_roi_features)
        proposals = proposals[order]  # the proposals are a set: keep them in the pooled (level) order
        cls_logits, deltas = self.box_predictor(self.box_head(x))
        scores = F.softmax(cls_logits, -1)[:, :k]  # [N, K]; background is the last column
        boxes = self._clip(self.box_coder.decode(deltas, proposals).reshape(-1, k, 4))
        if cfg.min_box_size > 0:
            ws, hs = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
            small = (ws < cfg.min_box_size) | (hs < cfg.min_box_size)
            scores = torch.where(small, torch.zeros_like(scores), scores)
        # NMS per class with the class as the batch dimension: boxes of different classes never interact
        boxes_ck = boxes.permute(1, 0, 2)  # [K, N, 4]
        scores_ck = scores.t().unsqueeze(1)  # [K, 1, N]
        sel = batched_nms_rows(boxes_ck, scores_ck, cfg.detections_per_img, cfg.nms_thresh, cfg.score_thresh)
        cls, idx = sel[:, 0], sel[:, 2]
        flat = cls * boxes.shape[0] + idx
        det_scores = scores_ck.reshape(-1)[flat]
        det_boxes = boxes_ck.reshape(-1, 4)[flat]
        top, order = _topk_dynamic(det_scores, cfg.detections_per_img)
        return det_boxes[order], top, cls[order]

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cfg = self.roi_cfg
        feats = self.backbone(self.normalize(image))
        proposals = self.proposals(feats)
        boxes, scores, labels = self.detect(feats[:4], proposals)
        # masks of the detected class only, for the (at most 100) detections, put back in score order
        x, order = self.roi_align(feats[:4], boxes, cfg.mask_resolution, self.mask_roi_features)
        logits = self.mask_head(x)  # [D, K, M, M] in level order
        m = logits.shape[-1]
        d = labels.shape[0]
        flat = torch.arange(d, dtype=labels.dtype, device=labels.device) * self.num_classes + labels[order]
        grouped = torch.sigmoid(logits.reshape(-1, m, m)[flat])
        masks = torch.zeros(d, m, m, dtype=grouped.dtype, device=grouped.device).index_put((order,), grouped)
        # pad to exactly detections_per_img rows with score 0
        n = cfg.detections_per_img
        boxes5 = torch.cat([boxes, scores[:, None]], 1)
        boxes5 = torch.cat([boxes5, boxes5.new_zeros(n, 5)], 0)[:n].reshape(n, 5)
        labels = torch.cat([labels, labels.new_zeros(n)], 0)[:n].reshape(n)
        masks = torch.cat([masks, masks.new_zeros(n, m, m)], 0)[:n].reshape(n, m, m)
        return labels, boxes5, masks
