"""``TilingOptions``: how a frame is cut into tiles and how the tiles' detections are merged, and how the options
travel in an exported model's metadata (OpenVINO Model API's tiler keys in ``model_info``, all of isseg's in
``isseg/tiling``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

MERGES = ("nms", "nmm")
METRICS = ("iou", "ios")

# OpenVINO Model API's tiler parameters (model_api/models/parameters.py, ParameterRegistry.TILER and
# DETECTION_TILER): read from rt_info/model_info/<key>, with these defaults when a key is absent
MODEL_API_KEYS = ("tile_size", "tiles_overlap", "tile_with_full_img", "iou_threshold", "max_pred_number")
MODEL_API_DEFAULTS = {"tiles_overlap": 0.5, "tile_with_full_img": True, "iou_threshold": 0.45, "max_pred_number": 100}


@dataclass(frozen=True)
class TilingOptions:
    """Tiled inference: each frame is cut into overlapping tiles, every tile goes through the network at the
    model's own scale, and the tiles' detections are merged into the frame's. Checked on construction.

    Attributes:
        tile_size: tile (height, width) in frame pixels; an int is a square tile; None: the model's input
            size (the canvas of a "fit" model, so each tile reaches the network unscaled). A frame smaller
            than the tile in one dimension gets tiles of its own extent in that dimension.
        overlap: least overlap of neighbouring tiles, as a fraction of the tile size, in [0, 1). Tiles are
            spread evenly so that they cover the frame exactly (the last one ends on the frame's edge);
            objects smaller than the overlap are whole in at least one tile.
        full_frame: also run the whole frame, downscaled to the model's input, as one more tile: it finds
            the objects larger than a tile. Not added when a single tile already covers the frame.
        merge: "nms": class-wise non-maximum suppression (OpenVINO Model API's tiler): the best-scoring
            detection of overlapping ones is kept, the others dropped. "nmm": greedy non-maximum merging
            (SAHI's): overlapping detections of one class found in different tiles become one detection
            (box: their union; score: the highest; mask: the union of their masks), so an object cut by a
            tile border comes out whole.
        match_metric: overlap measure of two boxes for ``merge``: "iou" (intersection over union) or "ios"
            (intersection over the smaller box's area: a fragment inside a whole object's box scores 1).
        match_threshold: boxes overlapping by more than this are suppressed ("nms") or merged ("nmm").
        max_detections: at most this many detections per frame after the merge (the highest scores).
    """

    tile_size: int | tuple[int, int] | None = None
    overlap: float = 0.2
    full_frame: bool = True
    merge: str = "nmm"
    match_metric: str = "ios"
    match_threshold: float = 0.5
    max_detections: int = 100

    def __post_init__(self) -> None:
        size = self.tile_size
        if size is not None:
            sides = (size, size) if isinstance(size, int) else tuple(size)
            if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 32
                                          for s in sides):
                raise ValueError(f"tiling: tile_size must be an int or (height, width) of ints >= 32, got {size!r}")
            object.__setattr__(self, "tile_size", sides if not isinstance(size, int) else size)
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ValueError(f"tiling: overlap must be a fraction in [0, 1), got {self.overlap!r}")
        if not isinstance(self.full_frame, bool):
            raise ValueError(f"tiling: full_frame must be True or False, got {self.full_frame!r}")
        if self.merge not in MERGES:
            raise ValueError(f"tiling: merge must be 'nms' or 'nmm', got {self.merge!r}")
        if self.match_metric not in METRICS:
            raise ValueError(f"tiling: match_metric must be 'iou' or 'ios', got {self.match_metric!r}")
        if not 0.0 <= float(self.match_threshold) <= 1.0:
            raise ValueError(f"tiling: match_threshold must be in [0, 1], got {self.match_threshold!r}")
        if isinstance(self.max_detections, bool) or not isinstance(self.max_detections, int) \
                or self.max_detections < 1:
            raise ValueError(f"tiling: max_detections must be an int >= 1, got {self.max_detections!r}")

    def tile_hw(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """(height, width) of a tile for a model whose input size (canvas, or short/long sides) is
        ``input_size``."""
        if self.tile_size is None:
            return int(input_size[0]), int(input_size[1])
        if isinstance(self.tile_size, int):
            return self.tile_size, self.tile_size
        return int(self.tile_size[0]), int(self.tile_size[1])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> TilingOptions:
        """The options ``to_json`` wrote; a damaged entry is a ValueError that says what is wrong."""
        try:
            fields = json.loads(text)
            if isinstance(fields.get("tile_size"), list):
                fields["tile_size"] = tuple(fields["tile_size"])
            return TilingOptions(**fields)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"isseg/tiling metadata is not valid tiling options ({exc})") from None


def model_api_info(options: TilingOptions, input_size: tuple[int, int]) -> dict[str, str]:
    """``model_info`` entries that configure OpenVINO Model API's ``InstanceSegmentationTiler`` as ``options``
    (for a model of ``input_size``). Model API tiles are square and always merged by class-wise NMS on IoU:
    a rectangular tile size is an error; with "nmm" or "ios" its ``iou_threshold`` is Model API's default."""
    h, w = options.tile_hw(input_size)
    if h != w:
        raise ValueError(f"tiling: Model API's tiler takes square tiles; give tile_size=N (the model's input is "
                         f"{input_size[0]}x{input_size[1]}, so the default tile would be {h}x{w})")
    nms_iou = options.merge == "nms" and options.match_metric == "iou"
    iou = options.match_threshold if nms_iou else MODEL_API_DEFAULTS["iou_threshold"]
    return {"tile_size": str(h), "tiles_overlap": str(float(options.overlap)),
            "tile_with_full_img": str(bool(options.full_frame)), "iou_threshold": str(float(iou)),
            "max_pred_number": str(int(options.max_detections))}


def read_tiling(get: Callable[[str, str], str | None], source: str) -> TilingOptions | None:
    """The tiling an exported model carries: ``isseg/tiling`` when present, else Model API's ``model_info``
    keys (class-wise NMS on IoU, as its tiler), else None. ``get(section, key)`` reads one entry or None."""
    raw = get("isseg", "tiling")
    if raw:
        try:
            return TilingOptions.from_json(raw)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    size = get("model_info", "tile_size")
    if not size:
        return None
    entries = {k: get("model_info", k) for k in MODEL_API_KEYS[1:]}
    try:
        values = _parse_model_api({"tile_size": size, **{k: v for k, v in entries.items() if v}})
        return TilingOptions(tile_size=values["tile_size"], overlap=values["tiles_overlap"],
                             full_frame=values["tile_with_full_img"], merge="nms", match_metric="iou",
                             match_threshold=values["iou_threshold"], max_detections=values["max_pred_number"])
    except ValueError as exc:
        raise ValueError(f"{source}: model_info tiling entries are not valid ({exc})") from None


def _parse_model_api(entries: Mapping[str, str]) -> dict:
    values: dict = dict(MODEL_API_DEFAULTS)
    for key, text in entries.items():
        if key in ("tile_size", "max_pred_number"):
            values[key] = int(float(text))
        elif key == "tile_with_full_img":  # Model API: "True" or "YES" is true
            if text not in ("True", "YES", "False", "NO"):
                raise ValueError(f"tile_with_full_img {text!r} is not True or False")
            values[key] = text in ("True", "YES")
        else:
            values[key] = float(text)
    return values
