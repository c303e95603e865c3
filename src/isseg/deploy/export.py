"""Export a Mask R-CNN to OpenVINO IR or ONNX with the seed's contract (instance-segmentation-security-0002).

    path = isseg.export(model, "out/", format="openvino", precision="int8")

The exported graph is the model's own inference traced (:class:`isseg.deploy.graph.ExportModule` around
``MaskRCNN.infer``) by the TorchScript-based ONNX exporter (standard ops only, opset 17; ``NonMaxSuppression``,
``RoiAlign``, ``TopK``, no ``Loop``), and for OpenVINO converted with ``ov.convert_model``. Its input is fixed
for a "fit" preset (the seed's ``image`` [1, 3, 768, 1024]) and dynamic for a "shortest_edge" one (each photo
resized as the preset says), so an export computes exactly its preset's function. The IR then gets:

- ``rt_info/model_info`` for OpenVINO Model API (``Model.create_model("model.xml")`` runs a "fit" export as
  ``MaskRCNN`` with zero configuration), and ``rt_info/isseg`` (the whole preset, class names, precision:
  :mod:`isseg.deploy.contract`);
- with ``explain=True`` (``isseg export --explain``), two more outputs after the contract's three,
  ``saliency_map`` and ``feature_vector``, which Model API reads (:mod:`isseg.explain.graph`);
- with ``tiling``, Model API's tiler parameters too (its ``InstanceSegmentationTiler`` configures itself from
  them) and ``isseg/tiling`` (the Predictor then tiles);
- the "precise" runtime attribute on every geometry operation (anchors, box decoding, level assignment,
  RoI coordinates, NMS inputs), so that a runtime computing the network in bf16 / fp16 keeps coordinates
  in fp32;
- ``fp16``: weights stored in fp16 (computations follow the device's inference precision);
  ``int8``: NNCF post-training quantization of the convolutions and fully connected layers on calibration
  images (coco-mini by default, see :mod:`isseg.deploy.quantize`).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from isseg.config import COCO_CLASSES
from isseg.deploy.contract import INPUT_NAME, OUTPUT_NAMES, input_shape, isseg_metadata, model_info, tiling_metadata
from isseg.deploy.graph import ExportModule, is_geometry
from isseg.tiling.options import TilingOptions

FORMATS = ("openvino", "onnx")
PRECISIONS = ("fp32", "fp16", "int8")
OPSET = 17


def resolve_model(model: nn.Module | str | Path, preset: str | None = None) -> nn.Module:
    """A ready ``MaskRCNN`` from a model, a checkpoint path or a registry name."""
    if isinstance(model, nn.Module):
        return model
    from isseg.weights.loading import load_model

    return load_model(model, preset=preset)


def at_size(model: nn.Module, input_size: tuple[int, int] | None) -> nn.Module:
    """``model`` itself, or (for another ``input_size`` than its preset's, with a warning that says so) a
    twin sharing its weights whose preset runs at that size."""
    cfg = model.config  # type: ignore[attr-defined]
    if input_size is None or tuple(input_size) == tuple(cfg.input.size):
        return model
    from isseg.model.mask_rcnn import MaskRCNN

    size = (int(input_size[0]), int(input_size[1]))
    what = "canvas" if cfg.input.resize == "fit" else "short/long sides"
    warnings.warn(f"running {cfg.name!r} at {what} {size[0]}x{size[1]} instead of its preset's "
                  f"{cfg.input.size[0]}x{cfg.input.size[1]}", stacklevel=3)
    twin = MaskRCNN(replace(cfg, input=cfg.input.with_size(size)))
    twin.load_state_dict(model.state_dict())
    return twin.eval()


# ------------------------------------------------------------------------------------------------ ONNX
def export_onnx(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None,
                explain: float | None = None) -> Path:
    """Trace ``model``'s inference (:class:`ExportModule`) to an ONNX file (standard ops only, opset 17), with
    the input its preset defines (:func:`isseg.deploy.contract.input_shape`); ``explain`` (a score threshold)
    adds the outputs of :class:`isseg.explain.graph.ExplainModule` after the contract's three."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config  # type: ignore[attr-defined]
    shape = input_shape(cfg)
    graph, names = _graph(model, explain)
    example = torch.zeros(1, 3, *(shape or _example_size(cfg)))
    dynamic = None if shape is not None else {INPUT_NAME: {2: "height", 3: "width"}}
    if dynamic is not None and explain is not None:
        dynamic["saliency_map"] = {2: "map_height", 3: "map_width"}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values are expected and benign
            torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=list(names),
                              do_constant_folding=True, dynamic_axes=dynamic)
    finally:
        model.train(was_training)
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    if "Loop" in ops or "If" in ops:
        raise RuntimeError(f"exported graph has control flow ops {sorted(ops & {'Loop', 'If'})}")
    proto.producer_name = "isseg"
    _set_metadata(proto, metadata or {})
    onnx.save(proto, str(path))
    return path


def _graph_names(explain: float | None) -> tuple[str, ...]:
    """Output names of the exported graph, in order."""
    if explain is None:
        return OUTPUT_NAMES
    from isseg.explain.graph import EXPLAIN_OUTPUT_NAMES

    return OUTPUT_NAMES + EXPLAIN_OUTPUT_NAMES


def _graph(model: nn.Module, explain: float | None) -> tuple[nn.Module, tuple[str, ...]]:
    """The module to trace and its output names: the contract's, plus the explain outputs (class maps of the
    detections scoring >= ``explain``)."""
    if explain is None:
        return ExportModule(model).eval(), OUTPUT_NAMES
    from isseg.explain.graph import ExplainModule

    return ExplainModule(model, min_score=explain).eval(), _graph_names(explain)


def default_name(cfg: Any, precision: str = "fp32") -> str:
    """The file stem of an export, after the model it holds: the preset's name for the 80 COCO classes (the
    seed's ``security-0002``), else the preset (a recipe's model name) and its classes, e.g.
    ``fast-cpu-circle_square_triangle+2``; plus ``-fp16`` / ``-int8``."""
    stem = cfg.name
    if tuple(cfg.class_names) != COCO_CLASSES:
        names = [re.sub(r"[^a-z0-9]+", "-", str(n).lower()).strip("-") or "class" for n in cfg.class_names]
        joined = "_".join(names)
        stem += "-" + (joined if len(names) <= 4 and len(joined) <= 40
                       else "_".join(names[:3])[:40] + f"+{len(names) - 3}")
    return stem + ("" if precision == "fp32" else f"-{precision}")


def _example_size(cfg: Any) -> tuple[int, int]:
    """A trace input of a "shortest_edge" preset: a 4:3 photo at its size (the graph stays dynamic)."""
    short, long = cfg.input.size
    return short, min(long, (short * 4) // 3)


def _set_metadata(proto: Any, metadata: dict[str, str]) -> None:
    for key, value in metadata.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def add_onnx_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    _set_metadata(proto, metadata)
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)  # a new file: anything still mapping the old one keeps reading it


def onnx_metadata(info: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """Model API reads ONNX metadata keys "model_info <name>"; isseg's own go under "isseg <name>"."""
    meta = {f"model_info {k}": v for k, v in info.items()}
    meta.update({f"isseg {k}": v for k, v in extra.items()})
    return meta


# ------------------------------------------------------------------------------------------------ OpenVINO
def mark_geometry_precise(xml_path: str | Path) -> int:
    """Add the "precise" runtime attribute (``ov::disable_fp16_compression``) to every geometry layer of a
    saved IR (operations outside the network's modules, and constants only they consume, e.g. anchors);
    returns how many. The OpenVINO Python API cannot create this attribute, but the IR reader does, and the
    CPU / GPU plugins then keep those layers in fp32 under a bf16 / fp16 inference precision, and weight
    compression to fp16 leaves those constants in fp32.
    """
    xml_path = Path(xml_path)
    tree = ET.parse(xml_path)
    root = tree.getroot()
    layers = root.find("layers")
    edges = root.find("edges")
    if layers is None:
        return 0
    by_id = {layer.get("id"): layer for layer in layers}
    consumers: dict[str, list[str]] = {}
    for edge in edges if edges is not None else []:
        consumers.setdefault(edge.get("from-layer", ""), []).append(edge.get("to-layer", ""))

    def geometry_op(layer: ET.Element) -> bool:
        return is_geometry(layer.get("name", ""), layer.get("type", ""))

    count = 0
    for layer in layers:
        if layer.get("type") == "Const":
            users = [by_id[i] for i in consumers.get(layer.get("id", ""), []) if i in by_id]
            if not users or not all(geometry_op(u) or _converts_to_geometry(u, by_id, consumers, geometry_op)
                                    for u in users):
                continue
        elif not geometry_op(layer):
            continue
        rt = layer.find("rt_info")
        if rt is None:
            rt = ET.Element("rt_info")
            layer.insert(0, rt)
        if not any(a.get("name") == "precise" for a in rt.findall("attribute")):
            ET.SubElement(rt, "attribute", {"name": "precise", "version": "0"})
            count += 1
    tmp = xml_path.with_suffix(".xml.tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, xml_path)
    return count


def _converts_to_geometry(layer: ET.Element, by_id: dict, consumers: dict, geometry_op: Any) -> bool:
    """A decompression ``Convert`` (fp16 weights -> fp32) whose users are all geometry."""
    if layer.get("type") != "Convert":
        return False
    users = [by_id[i] for i in consumers.get(layer.get("id", ""), []) if i in by_id]
    return bool(users) and all(geometry_op(u) for u in users)


def _save_ir(ov_model: Any, xml_path: Path, compress_to_fp16: bool) -> None:
    """Save with the geometry marked "precise"; for fp16, save fp32 first so that weight compression sees the
    marks and leaves the geometry constants (anchors) in fp32."""
    import openvino as ov

    if not compress_to_fp16:
        ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)
        mark_geometry_precise(xml_path)
        return
    with tempfile.TemporaryDirectory(prefix="isseg-export-") as tmp:
        tmp_xml = Path(tmp) / "fp32.xml"
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
        mark_geometry_precise(tmp_xml)
        marked = ov.Core().read_model(str(tmp_xml))  # memory-maps the .bin: keep it until saved
        ov.save_model(marked, str(xml_path), compress_to_fp16=True)
        del marked
    mark_geometry_precise(xml_path)  # idempotent; layers created by the compression get marked too


def export(model: nn.Module | str | Path, out_dir: str | Path, format: str = "openvino",
           precision: str = "fp32", *, input_size: tuple[int, int] | None = None, name: str | None = None,
           preset: str | None = None, confidence_threshold: float = 0.5,
           calibration: str | Path | Sequence[np.ndarray] | None = None, calibration_size: int = 32,
           keep_onnx: bool = False, explain: bool = False,
           tiling: TilingOptions | None = None) -> Path:
    """Export ``model`` (a ``MaskRCNN``, a checkpoint path or a registry name) and return the model file.

    Args:
        format: "openvino" (``<name>.xml`` + ``.bin``) or "onnx" (``<name>.onnx``, fp32 or int8).
        precision: "fp32", "fp16" (OpenVINO: weights stored in fp16) or "int8" (NNCF post-training
            quantization on ``calibration`` images).
        input_size: the preset's inference size by default (the seed's canvas is (768, 1024)); another one
            exports the model at that size, with a warning that says so.
        name: file stem; default :func:`default_name` (``security-0002`` for the seed's preset and classes,
            else the preset and the classes), plus ``-fp16`` / ``-int8``.
        preset: the preset of a foreign checkpoint (torchvision / detectron2 / mmdetection files).
        confidence_threshold: the score threshold deployed with the model (``rt_info`` ``model_info/
            confidence_threshold``: Model API's default, and the ``Predictor``'s ``default_threshold``);
            ``isseg export`` passes a training checkpoint's best-F1 threshold when it stores one.
        calibration: a folder of images, or a list of BGR images (``calibration_size`` of them are used);
            required for int8.
        keep_onnx: with format "openvino", also keep the (fp32) ONNX file the IR is converted from, as
            ``<name>.onnx`` next to it (one trace for both formats).
        explain: add the ``saliency_map`` (of the detections scoring >= ``confidence_threshold``) and
            ``feature_vector`` outputs (:mod:`isseg.explain.graph`) after the contract's ``labels``, ``boxes``,
            ``masks``, which stay as they are.
        tiling: tiled inference stored in the model's metadata (:mod:`isseg.deploy.contract`): Model API's
            tiler and isseg's Predictor then tile with it. Model API's tiles are square: ``tile_size`` must be
            one int (or None with a square canvas).
    """
    _check_format(format, precision, calibration is not None)
    net = at_size(resolve_model(model, preset).eval(), input_size)
    cfg = net.config  # type: ignore[attr-defined]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name or default_name(cfg, precision)
    info = model_info(cfg, confidence_threshold)
    extra = isseg_metadata(cfg, precision)
    explained = float(confidence_threshold) if explain else None  # class maps of the deployed detections
    if tiling is not None:
        tiler_info, tiler_extra = tiling_metadata(tiling, cfg)
        info.update(tiler_info)
        extra.update(tiler_extra)

    if format == "onnx":
        path = out_dir / f"{stem}.onnx"
        export_onnx(net, path, onnx_metadata(info, extra), explained)
        if precision == "int8":
            from isseg.deploy.quantize import quantize_onnx

            quantize_onnx(path, path, cfg, calibration, calibration_size)
        return path

    return _export_ir(net, out_dir / f"{stem}.xml", info, extra, precision=precision, explained=explained,
                      onnx_path=out_dir / f"{name or default_name(cfg)}.onnx" if keep_onnx else None,
                      calibration=calibration, calibration_size=calibration_size)


def _check_format(format: str, precision: str, calibrated: bool) -> None:
    """ValueError naming what to do for an unknown format / precision, fp16 ONNX, or int8 without images."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {FORMATS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if format == "onnx" and precision == "fp16":
        raise ValueError("ONNX export supports fp32 and int8; use format='openvino' for fp16 weights")
    if precision == "int8" and not calibrated:
        raise ValueError("int8 export needs calibration images: pass calibration=<folder or list of images> "
                         "(isseg export --calibration DIR), e.g. a few dozen images of the deployment")


def _export_ir(net: nn.Module, xml_path: Path, info: dict[str, str], extra: dict[str, str], *, precision: str,
               explained: float | None, onnx_path: Path | None,
               calibration: str | Path | Sequence[np.ndarray] | None, calibration_size: int) -> Path:
    """The OpenVINO IR at ``xml_path``: ``net`` traced to ONNX (kept at ``onnx_path`` when given, else in a
    temporary folder), converted, its tensors named by the contract, quantized for int8, the metadata ``info``
    (``model_info``) and ``extra`` (``isseg``) set, saved (fp16 weights for precision "fp16")."""
    import openvino as ov

    cfg = net.config  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="isseg-export-") as tmp:
        onnx_file = onnx_path or Path(tmp) / "model.onnx"
        export_onnx(net, onnx_file, explain=explained)
        ov_model = ov.convert_model(str(onnx_file))
        if onnx_path is not None:  # metadata added after the conversion, which would copy it into rt_info/framework
            add_onnx_metadata(onnx_file, onnx_metadata(info, dict(extra, precision="fp32")))
    ov_model.set_friendly_name(f"isseg-{cfg.name}")
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    for output, out_name in zip(ov_model.outputs, _graph_names(explained)):
        output.get_tensor().set_names({out_name})
    if precision == "int8":
        from isseg.deploy.quantize import quantize_openvino

        ov_model = quantize_openvino(ov_model, cfg, calibration, calibration_size)
    for key, value in info.items():
        ov_model.set_rt_info(value, ["model_info", key])
    for key, value in extra.items():
        ov_model.set_rt_info(value, ["isseg", key])
    _save_ir(ov_model, xml_path, compress_to_fp16=precision == "fp16")
    return xml_path
