"""COCO evaluation of any predictor (the PyTorch model, an OpenVINO / ONNX ``Predictor``) on a COCO file, or of
per-image result records computed elsewhere (``isseg.engine.records``: another machine, a Ray cluster run).

The predictor sees exactly what an application would give it, a ``uint8 [H, W, 3]`` BGR image at its
original size, so the numbers measure the whole pipeline (pre-processing, network, mask pasting) and the
backends can be compared with each other. Each image's result is written as a record as soon as it is known
(``<report stem>_records.jsonl``, renamed from ``.partial`` when the run completes), so an interrupted
evaluation keeps what it did and ``evaluate_records`` can score it. Both paths score through the same
``records -> COCO results -> coco_eval`` steps, so a live run and a re-scoring of its records agree.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from isseg.atomic import atomic_write
from isseg.data.coco import CocoDataset, load_coco_json, match_class_names
from isseg.engine.coco_eval import coco_eval
from isseg.engine.records import (
    RecordWriter,
    detections_record,
    error_record,
    iter_record_files,
    read_records,
    records_to_coco,
)

PathLike = str | os.PathLike


class SupportsPredict(Protocol):
    class_names: Sequence[str]

    def predict(self, image: Any) -> Any: ...


def _category_ids(predictor: Any, dataset: CocoDataset) -> list[int]:
    """COCO category id of each of the predictor's classes (see ``match_class_names``)."""
    names = getattr(predictor, "class_names", None)
    if names is None:
        raise ValueError(f"{type(predictor).__name__} has no 'class_names'; cannot map its labels")
    return match_class_names(list(names), dataset.categories, str(dataset.annotation_file))


def results_path_for(report: PathLike) -> Path:
    """Where :func:`evaluate` writes the COCO result records next to a report: ``<stem>_results.json``."""
    report = Path(report)
    return report.with_name(f"{report.stem}_results.json")


def records_path_for(report: PathLike) -> Path:
    """Where :func:`evaluate` streams the per-image records: ``<stem>_records.jsonl`` (``.partial`` until done)."""
    report = Path(report)
    return report.with_name(f"{report.stem}_records.jsonl")


def analysis_dir_for(report: PathLike) -> Path:
    """Where the per-class table, curves, confusion matrix and ``report.html`` go: ``<stem>_analysis/``."""
    report = Path(report)
    return report.with_name(f"{report.stem}_analysis")


def _record(det: Any, info: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
    has_masks = getattr(det, "masks", None) is not None
    record = detections_record(det, info["file_name"], image_id=int(info["id"]), masks=has_masks)
    record["height"], record["width"] = int(image_shape[0]), int(image_shape[1])
    return record


def evaluate(
    predictor: SupportsPredict,
    annotation_json: PathLike,
    image_dir: PathLike,
    output: PathLike | None = None,
    max_images: int | None = None,
    progress: bool = True,
    analysis: bool = True,
    score_threshold: float = 0.5,
) -> dict[str, Any]:
    """Predict every image of ``annotation_json`` (the first ``max_images``) and score it with COCO AP.

    ``predictor.predict(image_bgr_uint8) -> Detections`` and ``predictor.class_names``; its classes are
    matched to the file's categories by name (generic ``class_i`` names by index when the counts agree).
    Returns ``coco_eval``'s ``{"bbox": {...}, "segm": {...}}`` (``segm`` only if the predictor gives
    masks) plus ``images`` (number evaluated), ``missing_images`` (``{"image_id", "file_name",
    "reason"}`` of images that could not be read; they are left out of the AP, not fatal),
    ``seconds_per_image`` (mean ``predict`` time) and ``confidence_threshold`` (:mod:`isseg.engine.threshold`).
    With ``output``: the report as JSON there, the per-image records streamed to :func:`records_path_for`, the
    COCO results to :func:`results_path_for` and, with ``analysis``, the per-class table, PR curves, confusion
    matrix (detections >= ``score_threshold``) and ``report.html`` to :func:`analysis_dir_for`.
    """
    from tqdm import tqdm

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    dataset = CocoDataset(annotation_json, image_dir)
    category_ids = _category_ids(predictor, dataset)
    n = len(dataset) if max_images is None else min(int(max_images), len(dataset))

    writer = RecordWriter(records_path_for(output)) if output is not None else None
    records: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    seconds = 0.0
    with_masks: bool | None = None
    try:
        for i in tqdm(range(n), desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True):
            info = dataset.image_info(i)
            image, reason = dataset.try_load_image(i)
            if image is None:
                missing.append({"image_id": info["id"], "file_name": info["file_name"], "reason": reason})
                record = error_record(info["file_name"], str(reason), image_id=int(info["id"]))
            else:
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
                record = _record(det, info, image.shape)
            records.append(record)
            if writer is not None:
                writer.write(record)
    except BaseException:
        if writer is not None:
            writer.close(finalize=False)  # keep <stem>_records.jsonl.partial: what was done so far
        raise
    if writer is not None:
        writer.close()

    results, evaluated = records_to_coco(records, category_ids)
    if n and not evaluated:
        raise FileNotFoundError(
            f"none of the {n} images of {annotation_json} could be read from {image_dir}; "
            f"first: {missing[0]['reason']}"
        )
    extra = {
        "images": len(evaluated), "missing_images": missing,
        "seconds_per_image": seconds / len(evaluated) if evaluated else 0.0,
        "annotation_file": str(annotation_json), "image_dir": str(image_dir),
    }  # fmt: skip
    if writer is not None:
        extra["records_file"] = str(records_path_for(output))  # type: ignore[arg-type]
    iou_types = ("bbox",) if with_masks is False else ("bbox", "segm")
    return score_results(annotation_json, results, evaluated, iou_types, output, extra, analysis, score_threshold)


def score_results(
    annotation_json: PathLike,
    results: list[dict[str, Any]],
    image_ids: Sequence[int],
    iou_types: Sequence[str] = ("bbox", "segm"),
    output: PathLike | None = None,
    extra: dict[str, Any] | None = None,
    analysis: bool = True,
    score_threshold: float = 0.5,
) -> dict[str, Any]:
    """COCO AP of ``results`` over ``image_ids``, the per-class table from the same COCOeval run, the best-F1
    confidence threshold (``"confidence_threshold"``: :func:`isseg.engine.threshold.best_f1_threshold`), and
    with ``output`` the report, ``<stem>_results.json`` and (``analysis``) the analysis folder."""
    from isseg.engine.analysis import class_counts, per_class_rows, write_analysis
    from isseg.engine.threshold import best_f1_threshold

    gt = load_coco_json(annotation_json)
    evaluators: dict[str, Any] = {}
    report: dict[str, Any] = dict(coco_eval(gt, results, iou_types, image_ids=image_ids, evaluators=evaluators))
    report.update(extra or {})
    report["detections"] = len(results)
    by_id = {c["id"]: c for c in gt["categories"]}
    any_eval = next(iter(evaluators.values()))
    categories = [by_id[int(c)] for c in any_eval.params.catIds]
    instances, detections = class_counts(gt, results, image_ids)
    report["per_class"] = per_class_rows(evaluators, categories, instances, detections)
    report["confidence_threshold"] = best_f1_threshold(gt, results, image_ids)
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        results_file = results_path_for(output)
        results_file.write_text(json.dumps(results))
        report["results_file"] = str(results_file)
        if analysis:
            written = write_analysis(analysis_dir_for(output), report, evaluators, gt, results, image_ids,
                                     score_threshold=score_threshold)
            report["analysis"] = written["files"]
        atomic_write(output, json.dumps(report, indent=2))
    return report


# --------------------------------------------------------------------------------------------------------
# scoring records computed elsewhere
# --------------------------------------------------------------------------------------------------------


def _image_id_resolver(gt: dict[str, Any], image_dir: PathLike | None) -> Any:
    """``file -> image id`` by the COCO ``file_name``: exact, relative to ``image_dir``, by path suffix, or by
    a unique base name; None when nothing matches."""
    by_name = {img["file_name"]: img["id"] for img in gt["images"]}
    by_base: dict[str, list[int]] = {}
    for img in gt["images"]:
        by_base.setdefault(Path(img["file_name"]).name, []).append(img["id"])
    root = Path(image_dir).resolve() if image_dir is not None else None

    def resolve(file: str) -> int | None:
        path = Path(file)
        if path.as_posix() in by_name:
            return by_name[path.as_posix()]
        if root is not None:
            try:
                rel = path.resolve().relative_to(root).as_posix()
                if rel in by_name:
                    return by_name[rel]
            except ValueError:
                pass
        parts = path.parts
        for k in range(1, len(parts)):
            tail = Path(*parts[k:]).as_posix()
            if tail in by_name:
                return by_name[tail]
        ids = by_base.get(path.name, [])
        return ids[0] if len(ids) == 1 else None

    return resolve


def load_records(paths: Iterable[PathLike], gt: dict[str, Any], image_dir: PathLike | None = None
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All records of ``paths`` (JSON Lines files, folders of ``*.jsonl`` shards) with ``image_id`` filled in
    from the file name where it is null; a later record of the same image replaces an earlier one. Returns the
    records and ``{"files", "records", "duplicates", "errors"}``."""
    resolve = _image_id_resolver(gt, image_dir)
    known = {img["id"] for img in gt["images"]}
    by_image: dict[int, dict[str, Any]] = {}
    info = {"files": [], "records": 0, "duplicates": 0, "errors": 0}
    for file in iter_record_files(paths):
        info["files"].append(str(file))
        for number, rec in enumerate(read_records(file), 1):
            where = f"{file}: record {number}"
            if not isinstance(rec, dict) or "detections" not in rec or "file" not in rec:
                raise ValueError(f"{where}: expected an isseg result record with 'file' and 'detections'")
            iid = rec.get("image_id")
            if iid is None:
                iid = resolve(str(rec["file"]))
                if iid is None:
                    raise ValueError(f"{where}: file {rec['file']!r} matches no 'file_name' of the ground truth "
                                     "(or several); give records an image_id")
                rec = {**rec, "image_id": iid}
            elif iid not in known:
                raise ValueError(f"{where}: image_id {iid} is not an image of the ground truth")
            info["records"] += 1
            info["errors"] += rec.get("error") is not None
            if iid in by_image:
                info["duplicates"] += 1
            by_image[int(iid)] = rec
    if not info["files"]:
        raise FileNotFoundError(f"no *.jsonl record files in {[str(p) for p in paths]}")
    return list(by_image.values()), info


def evaluate_records(
    paths: Sequence[PathLike],
    annotation_json: PathLike,
    image_dir: PathLike | None = None,
    output: PathLike | None = None,
    analysis: bool = True,
    score_threshold: float = 0.5,
) -> dict[str, Any]:
    """Score already-computed per-image records against ``annotation_json`` without running a model.

    Detections map to categories by their ``name`` (the model's class name), so shards of any model whose
    classes are among the file's categories can be scored. Images whose record has an ``error`` are listed in
    ``missing_images`` and left out, as in :func:`evaluate`.
    """
    gt = load_coco_json(annotation_json)
    records, info = load_records(paths, gt, image_dir)
    label_names: dict[int, str] = {}
    for rec in records:
        for d in rec["detections"]:
            name = label_names.setdefault(int(d["label"]), str(d.get("name", d["label"])))
            if name != str(d.get("name", d["label"])):
                raise ValueError(f"records of {rec['file']!r}: label {d['label']} is named both {name!r} and "
                                 f"{d.get('name')!r}; records of different models cannot be scored together")
    labels = sorted(label_names)
    ids = match_class_names([label_names[k] for k in labels], gt["categories"], str(annotation_json)) if labels else []
    category_ids = [-1] * (max(labels) + 1 if labels else 0)
    for k, cid in zip(labels, ids):
        category_ids[k] = cid
    results, evaluated = records_to_coco(records, category_ids)
    if not evaluated:
        raise ValueError(f"none of the {len(records)} records in {info['files']} is an image without error")
    with_masks = all(d.get("mask") is not None for rec in records for d in rec["detections"])
    missing = [{"image_id": r["image_id"], "file_name": r["file"], "reason": r["error"]}
               for r in records if r.get("error") is not None]
    extra = {"images": len(evaluated), "missing_images": missing, "records": info,
             "annotation_file": str(annotation_json), "image_dir": None if image_dir is None else str(image_dir)}
    iou_types = ("bbox", "segm") if with_masks else ("bbox",)
    return score_results(annotation_json, results, evaluated, iou_types, output, extra, analysis, score_threshold)
