"""Second stage: RoIAlign over the pyramid, box classification/regression, mask prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, roi_align

from isseg.config import Norm, RoIConfig
from isseg.model.backbone import ConvNormAct
from isseg.model.box_coder import BoxCoder, clip_boxes
from isseg.model.losses import box_regression_loss
from isseg.model.ops import nms_rows, topk_dynamic
from isseg.model.roi_align import roi_align_rows, use_rows
from isseg.model.sampling import BACKGROUND, match, sample_balanced


def assign_levels(boxes: Tensor, mapping: str) -> Tensor:
    """Pyramid level index (0 = P2 ... 3 = P5) of each RoI [R, 4], by the library's formula.

    The three formulas differ only in where the epsilon sits, which matters for boxes on a boundary.
    """
    size = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    if mapping == "torchvision":
        level = torch.floor(4 + torch.log2(size / 224) + torch.tensor(1e-6, dtype=size.dtype))
    elif mapping == "detectron2":
        level = torch.floor(4 + torch.log2(size / 224 + 1e-8))
    elif mapping == "mmdet":
        level = torch.floor(torch.log2(size / 56 + 1e-6)) + 2
    else:
        raise ValueError(f"unknown level_mapping {mapping!r}")
    return (level.clamp(2, 5) - 2).to(torch.int64)


class PooledFeatures(nn.Module):
    """Concatenates per-level RoIAlign outputs ``[R_l, C, S, S] -> [R, C, S, S]``. A module only so that the
    exported ``Concat`` carries a network scope and runs in the network's precision (bf16), not in the fp32
    kept for geometry, which cost ~20 ms of layout conversions per image at 768x1024."""

    def forward(self, pooled: list[Tensor]) -> Tensor:
        return torch.cat(pooled, 0)


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign each box on its pyramid level (P2..P5)."""

    def __init__(self, output_size: int, sampling_ratio: int, aligned: bool, level_mapping: str,
                 strides: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__()
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.level_mapping = level_mapping
        self.strides = strides
        self.concat = PooledFeatures()

    def forward(self, features: list[Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        """``rois`` [R, 5] (batch index, x1, y1, x2, y2) -> (pooled [R, C, S, S], order [R]): row i of
        ``pooled`` belongs to ``rois[order[i]]``. Grouped by level, which avoids a zero-filled [R, C, S, S]
        tensor and a scatter into it; callers keep the grouped order or put the results back."""
        levels = assign_levels(rois[:, 1:], self.level_mapping)
        pooled, order = [], []
        for level, (feat, stride) in enumerate(zip(features, self.strides)):
            idx = torch.nonzero(levels == level).squeeze(1)
            align = roi_align_rows if use_rows(feat) else roi_align
            pooled.append(align(feat, self._rois(rois[idx], feat), self.output_size, 1.0 / stride,
                                self.sampling_ratio, self.aligned))
            order.append(idx)
        return self.concat(pooled), torch.cat(order, 0)

    @staticmethod
    def _rois(rois: Tensor, feat: Tensor) -> Tensor:
        """The RoIs in the features' dtype, which torchvision's operator wants, unless autocast runs it (it then
        casts both to fp32 itself: rounding coordinates to bf16 would move them by up to ~0.4 % of their value)."""
        try:
            autocast = torch.is_autocast_enabled(feat.device.type)
        except TypeError:  # torch < 2.4 has one query per device type
            autocast = torch.is_autocast_cpu_enabled() if feat.device.type == "cpu" else torch.is_autocast_enabled()
        return rois if autocast else rois.to(feat.dtype)

    def in_order(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """Boxes of each image [R_i, 4] -> [sum R_i, C, S, S] in the boxes' order."""
        pooled, order = self(features, rois_of(boxes))
        return torch.zeros_like(pooled).index_put((order,), pooled)


def rois_of(boxes: list[Tensor]) -> Tensor:
    """Per-image boxes [R_i, 4] -> [sum R_i, 5] with the image index first (RoIAlign's layout)."""
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])


class TwoFCHead(nn.Module):
    """flatten -> fc6 -> ReLU -> fc7 -> ReLU (torchvision v1, detectron2, mmdetection)."""

    def __init__(self, in_features: int, representation: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation)
        self.fc7 = nn.Linear(representation, representation)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


def conv_fc_head(channels: int, resolution: int, representation: int, norm: Norm) -> nn.Sequential:
    """4 x (conv3x3-norm-ReLU) -> flatten -> fc -> ReLU (torchvision v2); keys 0..3 and 5."""
    convs = [ConvNormAct(channels, channels, 3, norm) for _ in range(4)]
    return nn.Sequential(*convs, nn.Flatten(), nn.Linear(channels * resolution**2, representation), nn.ReLU(True))


class BoxPredictor(nn.Module):
    """Class logits [R, K+1] (background last) and class-specific deltas [R, 4K]."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class MaskPredictor(nn.Module):
    """2x deconv + ReLU then per-class 1x1 logits: [R, C, 14, 14] -> [R, K, 28, 28]."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.mask_fcn_logits = nn.Conv2d(channels, num_classes, 1)
        for m in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits [R, K, M, M] of every class, or with ``labels`` [R] each RoI's own class's [R, M, M]: selected
        here so that the exported selection runs in the network's precision (bf16), where the geometry's fp32
        reordered and converted all K maps of every RoI first."""
        logits = self.mask_fcn_logits(F.relu(self.conv5_mask(x)))
        if labels is None:
            return logits
        k, m = logits.shape[1], logits.shape[-1]
        flat = torch.arange(labels.shape[0], dtype=labels.dtype, device=labels.device) * k + labels
        return logits.reshape(-1, m, m)[flat]


class RoIHeads(nn.Module):
    def __init__(self, channels: int, num_classes: int, cfg: RoIConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.box_roi_pool = MultiScaleRoIAlign(cfg.box_resolution, cfg.sampling_ratio, cfg.aligned, cfg.level_mapping)
        self.mask_roi_pool = MultiScaleRoIAlign(cfg.mask_resolution, cfg.sampling_ratio, cfg.aligned,
                                                cfg.level_mapping)
        if cfg.box_head == "2fc":
            self.box_head: nn.Module = TwoFCHead(channels * cfg.box_resolution**2, cfg.representation_size)
        else:
            self.box_head = conv_fc_head(channels, cfg.box_resolution, cfg.representation_size, cfg.box_head_norm)
        self.box_predictor = BoxPredictor(cfg.representation_size, num_classes)
        self.mask_head = nn.Sequential(*(ConvNormAct(channels, channels, 3, cfg.mask_head_norm) for _ in range(4)))
        self.mask_predictor = MaskPredictor(channels, num_classes)
        self.box_coder = BoxCoder(cfg.box_coder_weights, clamp_both_sides=cfg.delta_clamp == "both")

    # ----------------------------------------------------------------------------------------- inference
    def forward(self, features: list[Tensor], proposals: list[Tensor], image_sizes: list,
                targets: list[dict[str, Tensor]] | None = None, original_sizes: list[tuple[int, int]] | None = None,
                ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Eval: per image ``boxes`` [D,4] (network-input pixels), ``scores`` [D], ``labels`` [D],
        ``mask_probs`` [D, 28, 28] of the detected class, sorted by descending score. Train: the loss dict."""
        levels = features[:4]
        if self.training:
            if targets is None or original_sizes is None:
                raise ValueError("RoI heads: targets are required in training mode")
            return [], self.loss(levels, proposals, image_sizes, targets, original_sizes)
        results = self.detect(levels, proposals, image_sizes)
        probs = self.mask_probs(levels, [r["boxes"] for r in results], [r["labels"] for r in results])
        for r, p in zip(results, probs):
            r["mask_probs"] = p
        return results, {}

    def detect(self, features: list[Tensor], proposals: list[Tensor], image_sizes: list
               ) -> list[dict[str, Tensor]]:
        """Box head on every proposal, class-specific decoding, clipping, score threshold, NMS per class and
        the best ``detections_per_img`` of each image. Traceable: the exported graph runs this."""
        rois = rois_of(proposals)
        x, order = self.box_roi_pool(features, rois)
        rois = rois[order]  # proposals are a set: keep them in the pooled (level) order
        scores, boxes = self.decode_predictions(*self.box_predictor(self.box_head(x)), rois[:, 1:])
        results = []
        for i, size in enumerate(image_sizes):
            if len(image_sizes) == 1:
                b, s = boxes, scores
            else:
                mine = rois[:, 0] == i
                b, s = boxes[mine], scores[mine]
            results.append(self.postprocess_detections(b, s, size))
        return results

    def decode_predictions(self, class_logits: Tensor, box_deltas: Tensor, proposals: Tensor
                           ) -> tuple[Tensor, Tensor]:
        """Class logits [R, K+1] (background last) and deltas [R, 4K] of proposals [R, 4] -> foreground class
        probabilities [R, K] and class-specific boxes [R, K, 4]."""
        k = self.num_classes
        scores = F.softmax(class_logits, -1)[:, :k]
        return scores, self.box_coder.decode(box_deltas, proposals).reshape(-1, k, 4)

    def postprocess_detections(self, boxes: Tensor, scores: Tensor, image_size: tuple) -> dict[str, Tensor]:
        """One image's class-specific ``boxes`` [R, K, 4] and ``scores`` [R, K] -> its detections."""
        cfg = self.cfg
        boxes = clip_boxes(boxes, *image_size)
        if cfg.min_box_size > 0:
            ws, hs = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
            small = (ws < cfg.min_box_size) | (hs < cfg.min_box_size)
            scores = torch.where(small, torch.zeros_like(scores), scores)
        # NMS per class with the class as the batch dimension: boxes of different classes never interact
        boxes_kr = boxes.permute(1, 0, 2)  # [K, R, 4]
        scores_kr = scores.t().unsqueeze(1)  # [K, 1, R]
        sel = nms_rows(boxes_kr, scores_kr, cfg.detections_per_img, cfg.nms_thresh, cfg.score_thresh)
        cls, idx = sel[:, 0], sel[:, 2]
        flat = cls * boxes.shape[0] + idx
        top, order = topk_dynamic(scores_kr.reshape(-1)[flat], cfg.detections_per_img)
        return {"boxes": boxes_kr.reshape(-1, 4)[flat][order], "scores": top, "labels": cls[order]}

    def mask_probs(self, features: list[Tensor], boxes: list[Tensor], labels: list[Tensor]) -> list[Tensor]:
        """Mask probabilities [D_i, M, M] of each detection's own class, per image, in the detections' order."""
        m = self.cfg.mask_resolution * 2
        counts = [b.shape[0] for b in boxes]
        if not torch.jit.is_tracing() and sum(counts) == 0:
            return [features[0].new_zeros((0, m, m)) for _ in boxes]
        x, order = self.mask_roi_pool(features, rois_of(boxes))
        grouped = torch.sigmoid(self.mask_predictor(self.mask_head(x), torch.cat(labels)[order]))  # level order
        probs = torch.zeros_like(grouped).index_put((order,), grouped)
        return list(probs.split(counts)) if len(boxes) > 1 else [probs]

    # ------------------------------------------------------------------------------------------ training
    def loss(self, features: list[Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]],
             targets: list[dict[str, Tensor]], original_sizes: list[tuple[int, int]]) -> dict[str, Tensor]:
        cfg, k = self.cfg, self.num_classes
        rois, labels, reg_targets, matched_gt = [], [], [], []
        for props, t in zip(proposals, targets):
            gt_boxes, gt_labels = t["boxes"], t["labels"]
            props = torch.cat([props, gt_boxes])  # ground truth joins the proposals, as in every reference
            m = match(box_iou(gt_boxes, props), cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.low_quality_min_iou)
            lab = torch.full_like(m, k)
            fg = m >= 0
            lab[fg] = gt_labels[m[fg]]
            lab[m == BACKGROUND] = k
            sample_labels = torch.where(fg, 1, torch.where(m == BACKGROUND, 0, -1))
            pos, neg = sample_balanced(sample_labels, cfg.batch_size_per_image, cfg.positive_fraction)
            idx = torch.cat([pos, neg])
            rois.append(props[idx])
            labels.append(lab[idx])
            safe = m[idx].clamp(min=0)
            reg_targets.append(self.box_coder.encode(gt_boxes[safe], props[idx]) if gt_boxes.numel()
                               else props[idx] * 0)
            matched_gt.append(torch.where(fg[idx], m[idx], -1))
        class_logits, box_deltas = self.box_predictor(self.box_head(self.box_roi_pool.in_order(features, rois)))
        labels_cat = torch.cat(labels)
        loss_cls = F.cross_entropy(class_logits, labels_cat)
        pos = torch.nonzero(labels_cat < k).squeeze(1)
        if pos.numel():
            deltas = box_deltas.reshape(-1, k, 4)[pos, labels_cat[pos]]
            loss_box = box_regression_loss(deltas, torch.cat(reg_targets)[pos], cfg.box_loss, cfg.smooth_l1_beta)
            loss_box = loss_box / labels_cat.numel()
        else:
            loss_box = box_deltas.sum() * 0.0
        loss_mask = self.mask_loss(features, rois, labels, matched_gt, targets, image_sizes, original_sizes)
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box, "loss_mask": loss_mask}

    def mask_loss(self, features: list[Tensor], rois: list[Tensor], labels: list[Tensor], matched: list[Tensor],
                  targets: list[dict[str, Tensor]], image_sizes: list[tuple[int, int]],
                  original_sizes: list[tuple[int, int]]) -> Tensor:
        """Per-pixel BCE on the positive RoIs; targets are the GT masks cut out at the RoI, binarized."""
        pos_boxes, pos_labels, mask_targets = [], [], []
        m = self.cfg.mask_resolution * 2
        cap = self.cfg.mask_positives_per_image
        for r, lab, mt, t, rs, os in zip(rois, labels, matched, targets, image_sizes, original_sizes):
            keep = mt >= 0
            if cap is not None:  # the positives come first, in random order: their first ``cap`` are a random subset
                keep &= keep.cumsum(0) <= cap
            boxes = r[keep]
            pos_boxes.append(boxes)
            pos_labels.append(lab[keep])
            if boxes.shape[0] == 0:
                mask_targets.append(boxes.new_zeros((0, m, m)))
                continue
            sx, sy = os[1] / rs[1], os[0] / rs[0]
            boxes_orig = boxes * boxes.new_tensor([sx, sy, sx, sy])
            gt_index = mt[keep].to(boxes.dtype)[:, None]
            masks = t["masks"].to(boxes.dtype)[:, None]
            cut = roi_align(masks, torch.cat([gt_index, boxes_orig], 1), (m, m), 1.0, 0, True)[:, 0]
            mask_targets.append((cut >= 0.5).to(boxes.dtype))
        boxes_all = torch.cat(pos_boxes)
        if boxes_all.shape[0] == 0:  # touch every mask parameter so that DDP sees them all used
            params = [*self.mask_head.parameters(), *self.mask_predictor.parameters()]
            return sum(p.sum() for p in params) * 0.0
        logits = self.mask_predictor(self.mask_head(self.mask_roi_pool.in_order(features, pos_boxes)))
        lab = torch.cat(pos_labels)
        logits = logits[torch.arange(lab.numel(), device=lab.device), lab]
        return F.binary_cross_entropy_with_logits(logits, torch.cat(mask_targets))
