"""Presets: each one a complete definition of a Mask R-CNN, architecture and pre/post-processing.

A preset is plain data (a frozen dataclass tree), so it can be stored inside a checkpoint, printed, diffed
and rebuilt. The differences between the reference implementations (torchvision, detectron2, mmdetection,
the OpenVINO seed) are all named here; the model code reads them and has no per-library branches beyond
these switches.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# COCO category ids (1..90 with 11 gaps) of the 80 contiguous classes above, in the same order.
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

Norm = Literal["frozen_bn", "bn", "gn", "none"]


class _Validated:
    """Frozen dataclasses whose ``Literal`` fields are checked when built, so a typo in a preset, a checkpoint
    or a ``--set`` is an error naming the field instead of a silent default."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            hint = hints[f.name]
            if typing.get_origin(hint) is Literal:
                allowed = typing.get_args(hint)
                value = getattr(self, f.name)
                if value not in allowed:
                    raise ValueError(f"{type(self).__name__}.{f.name}: {value!r} is not one of {list(allowed)}")


@dataclass(frozen=True)
class InputConfig(_Validated):
    """How a BGR uint8 image becomes the network's input, for inference and for training.

    ``size`` is the one inference-size setting. resize "shortest_edge": (short, long) = the short side is
    scaled to ``size[0]`` unless the long side would exceed ``size[1]`` (torchvision, detectron2,
    mmdetection); the network then sees the resized image, padded right/bottom to a multiple of
    ``size_divisor`` with zeros after normalization (the mean pixel), and boxes are clipped to the resized
    image. resize "fit": (height, width) of a fixed canvas (the OpenVINO seed's 768x1024): the image is
    scaled to fit inside it keeping its aspect ratio and letterboxed right/bottom; the whole canvas is the
    network input (an exported model cannot know where the image ends), so boxes are clipped to the canvas.

    ``train_sizes`` is the one training-scale setting: short sides drawn at random per image; the training
    resize is the inference resize at ``(s, size[1])`` (shortest_edge) or at the canvas scaled to short side
    ``s`` (fit). Setting ``size`` alone (``--set input.size=...``) scales ``train_sizes`` with it.

    resize_backend: which library's bilinear resize to reproduce: "torch" (F.interpolate on the float
    image; torchvision), "cv2" (uint8 cv2.INTER_LINEAR; mmdetection and OpenVINO Model API), "pil" (uint8
    PIL bilinear; detectron2). size_rounding: how the resized size is rounded: "floor" (torchvision's
    recompute_scale_factor), "round" (int(x + 0.5) of the size times min(short/min_side, long/max_side):
    mmdetection, Model API), "detectron2" (ResizeShortestEdge: short side first, then the long side capped,
    then int(x + 0.5)).
    pad_normalized: the letterbox fill of "fit": the mean pixel (zero after normalization, as mmdetection pads)
    when True, pixel value 0 when False (Open Model Zoo's demos).
    """

    channel_order: Literal["bgr", "rgb"] = "bgr"
    pixel_scale: float = 1.0  # pixel values are divided by this before (x - mean) / std (255 for torchvision)
    mean: tuple[float, float, float] = (103.53, 116.28, 123.675)  # in ``channel_order``, after pixel_scale
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: Literal["shortest_edge", "fit"] = "fit"
    size: tuple[int, int] = (768, 1024)
    resize_backend: Literal["torch", "cv2", "pil"] = "cv2"
    size_rounding: Literal["floor", "round", "detectron2"] = "round"
    size_divisor: int = 32
    pad_normalized: bool = True
    train_sizes: tuple[int, ...] = (640, 672, 704, 736, 768, 800)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"InputConfig.size: expected two positive sizes, got {self.size}")
        if self.resize == "shortest_edge" and self.size[0] > self.size[1]:
            raise ValueError(f"InputConfig.size: (short, long) = {self.size}: the short side exceeds the long one")
        if not self.train_sizes or min(self.train_sizes) < 1:
            raise ValueError(f"InputConfig.train_sizes: expected positive short sides, got {self.train_sizes}")
        if self.resize == "shortest_edge" and max(self.train_sizes) > self.size[1]:
            raise ValueError(f"InputConfig.train_sizes {self.train_sizes} contradict size {self.size}: a training "
                             f"short side exceeds the long-side limit {self.size[1]}; set both consistently")
        if self.size_divisor < 1:
            raise ValueError(f"InputConfig.size_divisor must be >= 1, got {self.size_divisor}")
        if self.resize == "fit" and any(s % self.size_divisor for s in self.size):
            raise ValueError(f"InputConfig.size {self.size}: a fixed canvas must be a multiple of size_divisor "
                             f"{self.size_divisor}")

    def pad_pixel(self) -> tuple[float, float, float]:
        """BGR value of the letterbox fill (see ``pad_normalized``), in 0..255 pixel units."""
        if not self.pad_normalized:
            return (0.0, 0.0, 0.0)
        bgr = self.mean if self.channel_order == "bgr" else self.mean[::-1]
        return tuple(float(m) * self.pixel_scale for m in bgr)  # type: ignore[return-value]

    def training_size(self, short: int) -> tuple[int, int]:
        """The ``size`` used for a training image drawn at short side ``short``."""
        if self.resize == "shortest_edge":
            return (short, self.size[1])
        return (short, int(round(self.size[1] * short / self.size[0])))

    def with_size(self, size: tuple[int, int], train_sizes: tuple[int, ...] | None = None) -> InputConfig:
        """This input at another inference size; the training scales follow proportionally unless given."""
        if train_sizes is None:
            ratio = size[0] / self.size[0]
            train_sizes = tuple(sorted({max(1, int(round(s * ratio))) for s in self.train_sizes}))
        return replace(self, size=(int(size[0]), int(size[1])), train_sizes=tuple(train_sizes))


@dataclass(frozen=True)
class BackboneConfig(_Validated):
    """ResNet-50 + FPN. ``style="caffe"`` puts the stride in the first 1x1 conv of a bottleneck
    (MSRA / detectron2 / mmdetection caffe models), ``"pytorch"`` in the 3x3 conv (torchvision)."""

    depth: int = 50  # 18, 34 (basic blocks: small, for training from scratch on a CPU), 50, 101
    style: Literal["caffe", "pytorch"] = "caffe"
    norm: Norm = "frozen_bn"
    norm_eps: float = 1e-5
    frozen_stages: int = 1  # stem + this many residual stages get requires_grad=False (0..4)
    fpn_channels: int = 256
    fpn_norm: Norm = "none"


@dataclass(frozen=True)
class AnchorConfig(_Validated):
    sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one size per level P2..P6
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    round_base: bool = False  # torchvision rounds the base anchors to integers
    strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    # torchvision derives each level's stride as padded_image_size // feature_size, which is not 64 for P6
    # when H/32 is odd (e.g. 800 // 13 = 61); reproduce that for exact equality.
    strides_from_image: bool = False


@dataclass(frozen=True)
class RPNConfig(_Validated):
    conv_depth: int = 1
    pre_nms_top_n_train: int = 2000  # per level
    pre_nms_top_n_test: int = 1000  # per level
    post_nms_top_n_train: int = 2000  # per image
    post_nms_top_n_test: int = 1000  # per image
    nms_thresh: float = 0.7
    min_size: float = 0.0  # boxes with a side <= min_size ("gt") or < min_size ("ge") are dropped
    min_size_mode: Literal["gt", "ge"] = "gt"
    score_thresh: float = 0.0
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    low_quality_min_iou: float | None = 0.0  # each gt keeps its best anchors if their IoU >= this (None: off)
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    box_loss: Literal["smooth_l1", "l1"] = "smooth_l1"
    smooth_l1_beta: float = 1.0 / 9
    # exp(dw) is capped at 1000/16; mmdetection also floors it at 16/1000 ("both")
    delta_clamp: Literal["upper", "both"] = "upper"


@dataclass(frozen=True)
class RoIConfig(_Validated):
    """RoI feature extraction, box head and mask head."""

    aligned: bool = True  # RoIAlign with the half-pixel offset (detectron2 / mmdetection)
    sampling_ratio: int = 0  # 0 = adaptive
    box_resolution: int = 7
    mask_resolution: int = 14
    # level assignment: floor(canonical_level + log2(sqrt(area) / canonical_scale) [+ eps]) clamped to [2, 5]
    level_mapping: Literal["torchvision", "detectron2", "mmdet"] = "detectron2"
    box_head: Literal["2fc", "4conv1fc"] = "2fc"
    box_head_norm: Norm = "none"
    mask_head_norm: Norm = "none"
    representation_size: int = 1024
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    # training
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    low_quality_min_iou: float | None = None
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    # the mask head learns from at most this many of an image's sampled positives, a random subset (None: from
    # all of them, as in every reference); lets the box head sample more positives at the mask head's old cost
    mask_positives_per_image: int | None = None
    box_loss: Literal["smooth_l1", "l1"] = "smooth_l1"
    smooth_l1_beta: float = 1.0 / 9
    # inference
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    min_box_size: float = 0.0  # torchvision drops boxes with a side < 1e-2 before NMS
    mask_threshold: float = 0.5
    mask_paste: Literal["torchvision", "grid_sample"] = "grid_sample"
    delta_clamp: Literal["upper", "both"] = "upper"
    # boxes mapped back to the original image: "none" keeps them (torchvision, mmdetection: they lie inside
    # already); "before_paste" clips them to the image, drops empty ones and pastes masks into the clipped
    # boxes (detectron2's detector_postprocess); "after_paste" pastes masks into the mapped boxes, then clips
    # and drops empty ones (a fixed canvas: boxes may reach into the letterbox padding)
    final_clip: Literal["none", "before_paste", "after_paste"] = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        cap = self.mask_positives_per_image
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"RoIConfig.mask_positives_per_image: {cap!r} is not a positive integer or null (all)")


@dataclass(frozen=True)
class ModelConfig:
    """A complete Mask R-CNN definition. ``class_names`` defines ``num_classes`` (no background)."""

    name: str = "security-0002"
    class_names: tuple[str, ...] = COCO_CLASSES
    input: InputConfig = field(default_factory=InputConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: RoIConfig = field(default_factory=RoIConfig)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error so that a bad checkpoint is caught."""
        return _from_dict(ModelConfig, data, "config")

    def with_classes(self, class_names: tuple[str, ...] | list[str]) -> ModelConfig:
        return replace(self, class_names=tuple(class_names))


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    migrate = _LEGACY.get(cls.__name__)
    if migrate is not None:
        data = migrate(dict(data), where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = _NESTED.get((cls.__name__, name))
        if sub is not None:
            kwargs[name] = _from_dict(sub, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _legacy_input(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Configs written before ``size`` / ``train_sizes`` existed (fit_size, min_size, max_size,
    train_min_sizes, train_max_size, pad_to) keep computing what they computed."""
    old = {k: data.pop(k) for k in ("fit_size", "min_size", "max_size", "train_min_sizes", "train_max_size",
                                    "pad_to") if k in data}
    if not old:
        return data
    if "size" not in data:
        fit = data.get("resize", "fit") == "fit"
        if fit and "fit_size" in old:
            data["size"] = old["fit_size"]
        elif not fit and "min_size" in old and "max_size" in old:
            data["size"] = [old["min_size"], old["max_size"]]
    if "train_sizes" not in data and "train_min_sizes" in old:
        data["train_sizes"] = old["train_min_sizes"]
    return data


def _legacy_roi(data: dict[str, Any], where: str) -> dict[str, Any]:
    if "clip_to_original" in data:
        clip = data.pop("clip_to_original")
        data.setdefault("final_clip", "before_paste" if clip else "none")
    return data


_LEGACY = {"InputConfig": _legacy_input, "RoIConfig": _legacy_roi}


_NESTED: dict[tuple[str, str], type] = {
    ("ModelConfig", "input"): InputConfig,
    ("ModelConfig", "backbone"): BackboneConfig,
    ("ModelConfig", "anchors"): AnchorConfig,
    ("ModelConfig", "rpn"): RPNConfig,
    ("ModelConfig", "roi"): RoIConfig,
}


def _security_0002() -> ModelConfig:
    """The seed: mmdetection's ``mask_rcnn_r50_caffe_fpn`` network (the OpenVINO Training Extensions template
    ``instance-segmentation-0002`` is that model, and its snapshot is mmdetection's published checkpoint), run
    at the seed's fixed 768x1024 input: resized to fit with cv2 and letterboxed right/bottom with the mean
    pixel, mmdetection's padding (zero after normalization); boxes reaching into the letterbox are clipped to
    the image after their masks are pasted."""
    mmdet = _mmdet()
    return ModelConfig(name="security-0002", rpn=mmdet.rpn, roi=replace(mmdet.roi, final_clip="after_paste"))


def _torchvision(v2: bool) -> ModelConfig:
    return ModelConfig(
        name="torchvision-v2" if v2 else "torchvision-v1",
        input=InputConfig(
            channel_order="rgb", pixel_scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
            resize="shortest_edge", size=(800, 1333), resize_backend="torch", size_rounding="floor",
            size_divisor=32, train_sizes=(800,),
        ),
        backbone=BackboneConfig(
            style="pytorch", norm="bn" if v2 else "frozen_bn", frozen_stages=1,
            fpn_norm="bn" if v2 else "none",
        ),
        anchors=AnchorConfig(round_base=True, strides_from_image=True),
        rpn=RPNConfig(
            conv_depth=2 if v2 else 1, post_nms_top_n_train=2000, min_size=1e-3, min_size_mode="ge",
        ),
        roi=RoIConfig(
            aligned=False, sampling_ratio=2, level_mapping="torchvision",
            box_head="4conv1fc" if v2 else "2fc", box_head_norm="bn" if v2 else "none",
            mask_head_norm="bn" if v2 else "none", min_box_size=1e-2, mask_paste="torchvision",
        ),
    )  # fmt: skip


def _detectron2() -> ModelConfig:
    """detectron2 ``mask_rcnn_R_50_FPN_3x``: same network as the seed, detectron2's pre/post-processing."""
    return ModelConfig(
        name="detectron2-r50-fpn",
        input=InputConfig(
            resize="shortest_edge", size=(800, 1333), resize_backend="pil", size_rounding="detectron2",
            size_divisor=32,
        ),
        rpn=RPNConfig(post_nms_top_n_train=1000, box_loss="l1", smooth_l1_beta=0.0),
        roi=RoIConfig(level_mapping="detectron2", box_loss="l1", smooth_l1_beta=0.0, final_clip="before_paste"),
    )  # fmt: skip


def _mmdet() -> ModelConfig:
    """mmdetection ``mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco``."""
    return ModelConfig(
        name="mmdet-r50-caffe-fpn",
        input=InputConfig(
            resize="shortest_edge", size=(800, 1333), resize_backend="cv2", size_rounding="round", size_divisor=32,
        ),
        rpn=RPNConfig(post_nms_top_n_train=1000, box_loss="l1", smooth_l1_beta=0.0, delta_clamp="both",
                      low_quality_min_iou=0.3),
        roi=RoIConfig(level_mapping="mmdet", box_loss="l1", smooth_l1_beta=0.0, delta_clamp="both",
                      low_quality_min_iou=0.5),
    )  # fmt: skip


PRESETS = {
    "security-0002": _security_0002,
    "torchvision-v1": lambda: _torchvision(v2=False),
    "torchvision-v2": lambda: _torchvision(v2=True),
    "detectron2-r50-fpn": _detectron2,
    "mmdet-r50-caffe-fpn": _mmdet,
}


def get_config(preset: str | ModelConfig = "security-0002", num_classes: int | None = None,
               class_names: list[str] | tuple[str, ...] | None = None) -> ModelConfig:
    """Return the preset's config, optionally with another class list (or ``num_classes`` generic names)."""
    if isinstance(preset, ModelConfig):
        cfg = preset
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        cfg = PRESETS[preset]()
    if class_names is not None:
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names were given")
        cfg = cfg.with_classes(tuple(class_names))
    elif num_classes is not None and num_classes != cfg.num_classes:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        cfg = cfg.with_classes(tuple(f"class_{i}" for i in range(num_classes)))
    return cfg
