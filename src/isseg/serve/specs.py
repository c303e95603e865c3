"""Model specs (``[NAME=]SOURCE``, as ``isseg serve`` takes them) -> the served models.

An exported IR / ONNX file gives two models: the contract model NAME (the network as it is) and the
detections model NAME-detections; a checkpoint or registry name gives the detections model NAME.
:func:`plan_models` checks the specs without loading anything (files exist, names unique), so that a bad one
fails at once; :func:`load_models` loads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isseg.serve.admission import ServedModel
from isseg.serve.contract import ContractModel
from isseg.serve.detections import DetectionsModel
from isseg.serve.settings import ServeSettings


def split_spec(spec: str) -> tuple[str, str]:
    """``NAME=SOURCE`` or ``SOURCE`` (name: the file's stem, or the registry name)."""
    name, sep, source = spec.partition("=")
    if sep and name and "/" not in name and not Path(spec).exists():
        return name, source
    return Path(spec).stem if Path(spec).suffix else spec, spec


def plan_models(specs: Sequence[str], contract: bool = True) -> list[tuple[list[str], str, bool]]:
    """-> (served names, source, exported) of each ``[NAME=]SOURCE``, checked (files exist, names unique)
    without loading anything: an IR / ONNX file gives the contract model NAME and the detections model
    NAME-detections; a checkpoint or registry name gives the detections model NAME."""
    plan: list[tuple[list[str], str, bool]] = []
    seen: set[str] = set()
    for spec in specs:
        name, source = split_spec(spec)
        exported = Path(source).suffix.lower() in (".xml", ".onnx")
        if exported and not Path(source).is_file():
            raise FileNotFoundError(f"model file not found: {source}")
        names = [name, f"{name}-detections"] if exported and contract else [name]
        for n in names:
            if n in seen:
                raise ValueError(f"two models are named '{n}'; name them with NAME=SOURCE")
            seen.add(n)
        plan.append((names, source, exported))
    return plan


def load_models(specs: Sequence[str], settings: ServeSettings, backend: str | None = None,
                device: str | None = None, precision: str | None = None, num_threads: int = 0,
                preset: str | None = None, contract: bool = True, tiling: Any = None) -> list[ServedModel]:
    """The served models of :func:`plan_models`, loaded. A contract model pre-processes images as the
    detections model's Predictor of the same file does, and runs on OpenVINO (``device`` when it is an
    OpenVINO name, upper case, else the CPU). ``tiling`` (``PredictorOptions.tiling``: ``TilingOptions``, False,
    or None for each model's own) applies to the detections models; a contract model runs the network as it is."""
    models: list[ServedModel] = []
    for names, source, exported in plan_models(specs, contract):
        det_name = names[-1]
        det = DetectionsModel(det_name, source, settings.for_model(det_name), settings.threshold,
                              settings.max_pixels, backend, device, precision, num_threads, preset, tiling=tiling)
        if exported and contract:
            ov_device = device if device and device.isupper() else "CPU"
            models.append(ContractModel(names[0], source, settings.for_model(names[0]), det.input_config,
                                        ov_device, precision))
        models.append(det)
    return models
