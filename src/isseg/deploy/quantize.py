"""INT8 post-training quantization with NNCF, calibrated on real images (a folder or a list the caller gives;
there is no default set: calibration images should look like the deployment's).

Only the network (convolutions, fully connected layers of the backbone, FPN, RPN head, box and mask heads)
is quantized; the geometry (anchors, decoding, RoI coordinates, NMS) is excluded with an ignored scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isseg.config import ModelConfig
from isseg.deploy.contract import INPUT_NAME
from isseg.deploy.graph import is_geometry
from isseg.model.transform import network_input
from isseg.sources.decode import IMAGE_SUFFIXES, read_image_file


def calibration_images(source: str | Path | Sequence[np.ndarray], count: int = 32) -> list[np.ndarray]:
    """Up to ``count`` HxWx3 uint8 BGR images: from a list, or the first image files of a folder (sorted names,
    :data:`isseg.sources.decode.IMAGE_SUFFIXES`). A file that cannot be decoded stops the export with the
    decoder's one-line error naming it (calibrating on fewer images than asked would go unnoticed)."""
    if not isinstance(source, str | Path):
        images = [np.asarray(x) for x in list(source)[:count]]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"calibration images not found: {folder} (expected a folder of images)")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        images = [read_image_file(path) for path in files[:count]]
    if not images:
        where = source if isinstance(source, str | Path) else "the list given"
        raise ValueError(f"no calibration images in {where} (expected image files: {', '.join(IMAGE_SUFFIXES)})")
    return images


def _inputs(images: list[np.ndarray], cfg: ModelConfig) -> list[np.ndarray]:
    """The exported graph's inputs for calibration images: the preset's own pre-processing."""
    return [network_input(img, cfg.input)[0] for img in images]


def _quiet_nncf() -> None:
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)


def _ignored_scope(names: list[str]) -> Any:
    import nncf

    return nncf.IgnoredScope(names=names, validate=False)


def quantize_openvino(ov_model: Any, cfg: ModelConfig, calibration: str | Path | Sequence[np.ndarray],
                      count: int = 32) -> Any:
    """NNCF PTQ of an ``ov.Model`` of the exported graph (symmetric int8, the CPU's preferred scheme)."""
    import nncf

    _quiet_nncf()
    data = _inputs(calibration_images(calibration, count), cfg)
    dataset = nncf.Dataset(data, lambda x: {INPUT_NAME: x})
    geometry = [op.get_friendly_name() for op in ov_model.get_ops()
                if is_geometry(op.get_friendly_name(), op.get_type_name())]
    return nncf.quantize(ov_model, dataset, subset_size=len(data), preset=nncf.QuantizationPreset.PERFORMANCE,
                         ignored_scope=_ignored_scope(geometry))


def constants_to_initializers(model: Any) -> Any:
    """Turn ``Constant`` nodes with a tensor value into initializers (NNCF's ONNX backend looks weights of
    ``Gather`` and friends up among the initializers)."""
    from onnx import numpy_helper

    keep = []
    for node in model.graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            tensor = numpy_helper.from_array(numpy_helper.to_array(value.t), node.output[0])
            model.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def quantize_onnx(src: str | Path, dst: str | Path, cfg: ModelConfig, calibration: str | Path | Sequence[np.ndarray],
                  count: int = 32) -> Path:
    """NNCF PTQ of the exported ONNX file (QuantizeLinear / DequantizeLinear pairs, for ONNX Runtime)."""
    import nncf
    import onnx

    _quiet_nncf()
    model = constants_to_initializers(onnx.load(str(src)))
    geometry = [n.name for n in model.graph.node if is_geometry(n.name, n.op_type)]
    meta = [(p.key, p.value) for p in model.metadata_props]
    data = _inputs(calibration_images(calibration, count), cfg)
    dataset = nncf.Dataset(data, lambda x: {INPUT_NAME: x})
    quantized = nncf.quantize(model, dataset, subset_size=len(data), preset=nncf.QuantizationPreset.PERFORMANCE,
                              ignored_scope=_ignored_scope(geometry))
    del quantized.metadata_props[:]
    for key, value in meta:
        prop = quantized.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(quantized, str(dst))
    return Path(dst)
