"""COCO evaluation of any predictor (the PyTorch model, an OpenVINO / ONNX ``Predictor``) on a COCO file.

The predictor sees exactly what an application would give it, a ``uint8 [H, W, 3]`` BGR image at its
original size, so the numbers measure the whole pipeline (pre-processing, network, mask pasting) and the
backends can be compared with each other.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from isseg.data.coco import CocoDataset, match_class_names
from isseg.engine.coco_eval import coco_eval, detections_to_coco


class SupportsPredict(Protocol):
    class_names: Sequence[str]

    def predict(self, image: Any) -> Any: ...


def _category_ids(predictor: Any, dataset: CocoDataset) -> list[int]:
    """COCO category id of each of the predictor's classes (see ``match_class_names``)."""
    names = getattr(predictor, "class_names", None)
    if names is None:
        raise ValueError(f"{type(predictor).__name__} has no 'class_names'; cannot map its labels")
    return match_class_names(list(names), dataset.categories, str(dataset.annotation_file))


def results_path_for(report: str | os.PathLike) -> Path:
    """Where :func:`evaluate` writes the result records next to a report: ``<stem>_results.json``."""
    report = Path(report)
    return report.with_name(f"{report.stem}_results.json")


def evaluate(
    predictor: SupportsPredict,
    annotation_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every image of ``annotation_json`` (the first ``max_images``) and score it with COCO AP.

    ``predictor.predict(image_bgr_uint8) -> Detections`` and ``predictor.class_names``; its classes are
    matched to the file's categories by name (generic ``class_i`` names by index when the counts agree).
    Returns ``coco_eval``'s ``{"bbox": {...}, "segm": {...}}`` (``segm`` only if the predictor gives
    masks) plus ``images`` (number evaluated), ``missing_images`` (``{"image_id", "file_name",
    "reason"}`` of images that could not be read; they are left out of the AP, not fatal) and
    ``seconds_per_image`` (mean ``predict`` time). With ``output``, the report is written there as JSON
    and the result records to :func:`results_path_for` ``(output)``.
    """
    from tqdm import tqdm

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    dataset = CocoDataset(annotation_json, image_dir)
    category_ids = _category_ids(predictor, dataset)
    n = len(dataset) if max_images is None else min(int(max_images), len(dataset))

    results: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    evaluated: list[int] = []
    seconds = 0.0
    with_masks: bool | None = None
    for i in tqdm(range(n), desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True):
        info = dataset.image_info(i)
        image, reason = dataset.try_load_image(i)
        if image is None:
            missing.append({"image_id": info["id"], "file_name": info["file_name"], "reason": reason})
            continue
        start = time.perf_counter()
        det = predictor.predict(image)
        seconds += time.perf_counter() - start
        has_masks = getattr(det, "masks", None) is not None
        if with_masks is None:
            with_masks = has_masks
        elif has_masks != with_masks:
            raise ValueError(
                f"{type(predictor).__name__}.predict returned masks for some images and none for others "
                f"(image id {info['id']})"
            )
        results.extend(detections_to_coco(det, info["id"], category_ids))
        evaluated.append(info["id"])

    if n and not evaluated:
        raise FileNotFoundError(
            f"none of the {n} images of {annotation_json} could be read from {image_dir}; "
            f"first: {missing[0]['reason']}"
        )
    iou_types = ("bbox",) if with_masks is False else ("bbox", "segm")
    report: dict[str, Any] = dict(coco_eval(annotation_json, results, iou_types, image_ids=evaluated))
    report.update(
        images=len(evaluated),
        missing_images=missing,
        seconds_per_image=seconds / len(evaluated) if evaluated else 0.0,
        detections=len(results),
        annotation_file=str(annotation_json),
        image_dir=str(image_dir),
    )
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        results_file = results_path_for(output)
        results_file.write_text(json.dumps(results))
        report["results_file"] = str(results_file)
        output.write_text(json.dumps(report, indent=2))
    return report
