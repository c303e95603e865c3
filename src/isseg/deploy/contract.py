"""The deployment contract, one owner: tensor names, the input size a preset defines, and the metadata an exported
model carries (written once here, read once here, for OpenVINO IR ``rt_info`` and ONNX ``metadata_props`` alike).

An isseg export stores its whole preset (``isseg/config``: JSON of ``ModelConfig``), so the Predictor runs the
same pre- and post-processing as the eager model. A foreign IR with the seed's contract (Open Model Zoo's
``instance-segmentation-security-*``) has none: it is run as the seed is by Open Model Zoo's demos (letterbox
with pixel 0, masks pasted the torchvision / Open Model Zoo way), with the class names of ``model_info/labels``.

An export made with tiling (``isseg export --tile``) also carries it: OpenVINO Model API's tiler parameters in
``model_info`` (``tile_size``, ``tiles_overlap``, ``tile_with_full_img``, ``iou_threshold``, ``max_pred_number``,
so that its ``InstanceSegmentationTiler`` configures itself from the IR) and isseg's complete
:class:`isseg.tiling.TilingOptions` in ``isseg/tiling`` (:mod:`isseg.tiling.options`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

from isseg.config import COCO_CLASSES, ModelConfig, get_config
from isseg.tiling.options import TilingOptions, model_api_info, read_tiling

INPUT_NAME = "image"
OUTPUT_NAMES = ("labels", "boxes", "masks")
# Model API's label list is indexed by label + 1 (the Open Model Zoo models' "background" first convention)
BACKGROUND_LABEL = "background"
# The score threshold of a model that does not store one (model_info/confidence_threshold)
DEFAULT_CONFIDENCE_THRESHOLD = 0.5


@dataclass(frozen=True)
class ModelMeta:
    """What a runtime knows of the model it runs: the preset function it computes and how it was exported."""

    config: ModelConfig
    precision: str | None = None  # "fp32", "fp16", "int8" for isseg exports
    foreign: bool = False  # no isseg metadata: Open Model Zoo conventions assumed
    confidence_threshold: float | None = None  # model_info/confidence_threshold, when the model stores one
    tiling: TilingOptions | None = None  # the tiling the export carries (None: none)

    @property
    def default_threshold(self) -> float:
        """The score threshold to apply when the user gives none: the model's, else 0.5."""
        if self.confidence_threshold is None:
            return DEFAULT_CONFIDENCE_THRESHOLD
        return self.confidence_threshold


def input_shape(cfg: ModelConfig) -> tuple[int, int] | None:
    """(H, W) of the exported ``image`` input: the canvas of a "fit" preset; None (dynamic) for "shortest_edge"
    presets, whose network input is the resized image of each photo."""
    return tuple(cfg.input.size) if cfg.input.resize == "fit" else None  # type: ignore[return-value]


def model_info(cfg: ModelConfig, confidence_threshold: float = 0.5) -> dict[str, str]:
    """``rt_info/model_info`` entries that make OpenVINO Model API run a "fit" export as Mask R-CNN unconfigured.

    Model API splits ``labels`` on whitespace, so spaces inside class names become underscores (the exact names
    are in ``isseg/class_names``); the list starts with "background" because its MaskRCNN wrapper shifts the
    graph's 0-based labels by one. Model API pads with one integer for all channels: the nearest to the preset's
    letterbox fill (the mean pixel) is its channel average.
    """
    labels = [BACKGROUND_LABEL] + [n.replace(" ", "_") for n in cfg.class_names]
    pad = cfg.input.pad_pixel()
    return {
        "model_type": "MaskRCNN",
        "labels": " ".join(labels),
        "resize_type": "fit_to_window",
        "interpolation_mode": "LINEAR",
        "pad_value": str(int(round(sum(pad) / 3))),
        "reverse_input_channels": "False",
        "confidence_threshold": str(float(confidence_threshold)),
        "postprocess_semantic_masks": "True",
    }


def isseg_metadata(cfg: ModelConfig, precision: str) -> dict[str, str]:
    """``isseg/*`` entries: the complete preset (so every runtime computes the eager model's function)."""
    import isseg

    return {
        "version": isseg.__version__,
        "preset": cfg.name,
        "class_names": json.dumps(list(cfg.class_names)),
        "precision": precision,
        "config": json.dumps(cfg.to_dict()),
    }


def tiling_metadata(tiling: TilingOptions, cfg: ModelConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(``model_info`` entries of Model API's tiler, ``isseg`` entries) that carry ``tiling`` in an export of a
    ``cfg`` model; a tiling Model API cannot express (rectangular tiles) is a ValueError."""
    return model_api_info(tiling, tuple(cfg.input.size)), {"tiling": tiling.to_json()}  # type: ignore[arg-type]


def read_metadata(get: Callable[[str, str], str | None], shape: tuple[int, int] | None, source: str) -> ModelMeta:
    """The ``ModelMeta`` of an exported model. ``get(section, key)`` reads one entry ("isseg" / "model_info")
    or None; ``shape`` is the model's static (H, W) input or None when dynamic; ``source`` names the file in
    errors."""
    raw = get("isseg", "config")
    if raw:
        try:
            cfg = ModelConfig.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"{source}: isseg/config metadata is not a valid isseg preset ({exc})") from None
        if input_shape(cfg) != shape:
            want = "a dynamic input" if input_shape(cfg) is None else f"input {input_shape(cfg)}"
            raise ValueError(f"{source}: its preset {cfg.name!r} expects {want}, the model has "
                             f"{'a dynamic input' if shape is None else f'input {shape}'}")
        return ModelMeta(cfg, get("isseg", "precision"), foreign=False,
                         confidence_threshold=_threshold(get, source),
                         tiling=read_tiling(get, source))
    if shape is None:
        raise ValueError(f"{source}: a model without isseg metadata must have a static [1, 3, H, W] image input")
    names: tuple[str, ...] = COCO_CLASSES
    labels = get("model_info", "labels")
    if labels:
        parts = labels.split()
        names = tuple(parts[1:] if parts and parts[0].lower() in ("background", "__background__") else parts)
    base = get_config("security-0002", class_names=names)
    cfg = replace(base, input=replace(base.input.with_size(shape), pad_normalized=False),
                  roi=replace(base.roi, mask_paste="torchvision"))
    return ModelMeta(cfg, None, foreign=True, confidence_threshold=_threshold(get, source),
                     tiling=read_tiling(get, source))


def _threshold(get: Callable[[str, str], str | None], source: str) -> float | None:
    """``model_info/confidence_threshold`` as a number in [0, 1], None when absent; anything else is an error."""
    raw = get("model_info", "confidence_threshold")
    if raw is None or not str(raw).strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{source}: model_info/confidence_threshold is {raw!r}, expected a number in [0, 1]")
    return value
