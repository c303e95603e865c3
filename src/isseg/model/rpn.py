"""Region Proposal Network: objectness + box deltas per anchor, then top-k / NMS to proposals."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from isseg.config import AnchorConfig, RPNConfig
from isseg.model.anchors import AnchorGenerator
from isseg.model.backbone import ConvNormAct
from isseg.model.box_coder import BoxCoder, clip_boxes
from isseg.model.losses import box_regression_loss
from isseg.model.ops import nms_rows, topk_dynamic
from isseg.model.sampling import match, sample_balanced


class RPNHead(nn.Module):
    """Shared conv(s) then a 1x1 objectness logit and 4 deltas for each of ``A`` anchors per location."""

    def __init__(self, channels: int, num_anchors: int, conv_depth: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(*(ConvNormAct(channels, channels, 3) for _ in range(conv_depth)))
        self.cls_logits = nn.Conv2d(channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: logits [N, H*W*A] and deltas [N, H*W*A, 4], in the anchors' (y, x, a) order."""
        logits, deltas = [], []
        for x in features:
            t = self.conv(x)
            n, _, h, w = t.shape
            logits.append(self.cls_logits(t).permute(0, 2, 3, 1).reshape(n, -1))
            deltas.append(self.bbox_pred(t).view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        return logits, deltas


class RPN(nn.Module):
    def __init__(self, channels: int, cfg: RPNConfig, anchor_cfg: AnchorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.anchor_generator = AnchorGenerator(anchor_cfg)
        self.head = RPNHead(channels, self.anchor_generator.num_anchors, cfg.conv_depth)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0), clamp_both_sides=cfg.delta_clamp == "both")

    def forward(
        self,
        features: list[Tensor],
        padded_size: tuple[int, int] | tuple[Tensor, Tensor],
        image_sizes: list[tuple[int, int]] | list[tuple[Tensor, Tensor]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals ([P_i, 4] per image, in network-input pixels, clipped to ``image_sizes[i]``) and, when
        training, losses. Sizes may be traced 0-dim tensors (the exported graph's dynamic input)."""
        logits, deltas = self.head(features)
        anchors = self.anchor_generator([f.shape[-2:] for f in features], padded_size, features[0].device)
        proposals = [
            self.select_proposals(anchors, [x[i].detach() for x in logits], [d[i].detach() for d in deltas], size)
            for i, size in enumerate(image_sizes)
        ]
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN: targets are required in training mode")
            losses = self.loss(torch.cat(anchors), torch.cat(logits, 1), torch.cat(deltas, 1), targets)
        return proposals, losses

    def select_proposals(self, anchors: list[Tensor], logits: list[Tensor], deltas: list[Tensor],
                         image_size: tuple[int, int] | tuple[Tensor, Tensor]) -> Tensor:
        """One image: per level the top-k anchors by objectness, decoded, clipped, size- and score-filtered and
        suppressed (NMS within the level); then the best ``post_nms_top_n`` of all levels -> [P, 4].

        ``logits[l]`` [A_l] and ``deltas[l]`` [A_l, 4] of level l; traceable (the exported graph runs this).
        """
        cfg = self.cfg
        pre_n = cfg.pre_nms_top_n_train if self.training else cfg.pre_nms_top_n_test
        post_n = cfg.post_nms_top_n_train if self.training else cfg.post_nms_top_n_test
        kept_boxes, kept_scores = [], []
        for a, lg, d in zip(anchors, logits, deltas):
            top, idx = topk_dynamic(lg, pre_n)
            boxes = clip_boxes(self.box_coder.decode(d[idx], a[idx]), *image_size)
            scores = torch.sigmoid(top)
            ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            if cfg.min_size_mode == "ge":
                valid = (ws >= cfg.min_size) & (hs >= cfg.min_size)
            else:
                valid = (ws > cfg.min_size) & (hs > cfg.min_size)
            valid = valid & (scores >= cfg.score_thresh)
            scores = torch.where(valid, scores, torch.full_like(scores, -1.0))  # ignored by the NMS below
            keep = nms_rows(boxes[None], scores[None, None], post_n, cfg.nms_thresh, -0.5)[:, 2]
            kept_boxes.append(boxes[keep])
            kept_scores.append(scores[keep])
        _, order = topk_dynamic(torch.cat(kept_scores), post_n)
        return torch.cat(kept_boxes)[order]

    def loss(self, anchors: Tensor, logits: Tensor, deltas: Tensor, targets: list[dict[str, Tensor]]
             ) -> dict[str, Tensor]:
        """Objectness BCE over sampled anchors and box loss over the positive ones.

        anchors [A, 4]; logits [N, A]; deltas [N, A, 4].
        """
        cfg = self.cfg
        sampled_pos, sampled_neg, reg_targets = [], [], []
        for i, t in enumerate(targets):
            gt = t["boxes"]
            m = match(box_iou(gt, anchors), cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.low_quality_min_iou)
            labels = torch.full_like(m, -1)
            labels[m >= 0] = 1
            labels[m == -1] = 0
            pos, neg = sample_balanced(labels, cfg.batch_size_per_image, cfg.positive_fraction)
            sampled_pos.append(pos + i * anchors.shape[0])
            sampled_neg.append(neg + i * anchors.shape[0])
            if pos.numel():
                reg_targets.append(self.box_coder.encode(gt[m[pos]], anchors[pos]))
        pos = torch.cat(sampled_pos)
        neg = torch.cat(sampled_neg)
        flat_logits = logits.reshape(-1)
        sampled = torch.cat([pos, neg])
        obj_target = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(flat_logits.dtype)
        loss_obj = F.binary_cross_entropy_with_logits(flat_logits[sampled], obj_target)
        if pos.numel():
            pred = deltas.reshape(-1, 4)[pos]
            loss_box = box_regression_loss(pred, torch.cat(reg_targets), cfg.box_loss, cfg.smooth_l1_beta)
            loss_box = loss_box / max(sampled.numel(), 1)
        else:
            loss_box = deltas.sum() * 0.0
        return {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_box}
