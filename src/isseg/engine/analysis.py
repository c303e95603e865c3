"""What an evaluation says beyond the 12 COCO numbers: per-class AP / AR, precision-recall curves, a confusion
matrix, and one report page that links them.

Per-class numbers and curves are read from the ``eval["precision"]`` / ``eval["recall"]`` arrays of the very
COCOeval run that gave the COCO AP (``coco_eval(..., evaluators=...)``), so there is no second matching and
the mean of the per-class AP over the classes that have ground truth *is* the COCO AP. The confusion matrix
cannot come from COCOeval, which only ever matches a detection with ground truth of its own class: it matches
class-agnostically, by mask IoU (box IoU for a box-only model), detections above a score threshold, greedily
by score, as COCOeval matches within a class; what is left over is confused with background.

Arrays, as COCOeval lays them out: ``precision[T, R, K, A, M]`` (IoU thresholds .50:.05:.95, 101 recall
points, classes in ``params.catIds`` order, areas all/small/medium/large, max detections 1/10/100), ``-1``
where a class has no ground truth; ``recall[T, K, A, M]``.
"""

from __future__ import annotations

import csv
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isseg.data.masks import segmentation_to_rle

PathLike = str | os.PathLike
IOU_NAMES = {"bbox": "box", "segm": "mask"}


# --------------------------------------------------------------------------------------------------------
# per-class numbers from COCOeval's arrays
# --------------------------------------------------------------------------------------------------------


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def per_class_metrics(evaluator: Any, categories: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per category of ``evaluator.params.catIds``: ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``AR``
    (IoU .50:.95, 100 detections), all areas; -1 for a class without ground truth. Same averaging as
    COCOeval's ``summarize``, restricted to one class."""
    precision = np.asarray(evaluator.eval["precision"])
    recall = np.asarray(evaluator.eval["recall"])
    p = evaluator.params
    area_all = list(p.areaRngLbl).index("all")
    last = len(p.maxDets) - 1  # 100 detections
    iou = np.asarray(p.iouThrs)
    t50, t75 = int(np.argmin(abs(iou - 0.5))), int(np.argmin(abs(iou - 0.75)))
    names = {int(c["id"]): c["name"] for c in categories}
    rows = []
    for k, cid in enumerate(p.catIds):
        pk = precision[:, :, k, area_all, last]
        rows.append({
            "class": names.get(int(cid), str(cid)), "category_id": int(cid),
            "AP": _mean_valid(pk), "AP50": _mean_valid(pk[t50]), "AP75": _mean_valid(pk[t75]),
            "AR": _mean_valid(recall[:, k, area_all, last]),
        })  # fmt: skip
    return rows


def class_counts(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], image_ids: Sequence[int]
                 ) -> tuple[dict[int, int], dict[int, int]]:
    """Non-crowd ground-truth instances and detections per category id, over ``image_ids``."""
    ids = set(int(i) for i in image_ids)
    instances: dict[int, int] = {}
    for a in gt["annotations"]:
        if a["image_id"] in ids and not a.get("iscrowd", 0):
            instances[a["category_id"]] = instances.get(a["category_id"], 0) + 1
    detections: dict[int, int] = {}
    for r in results:
        if r["image_id"] in ids:
            detections[r["category_id"]] = detections.get(r["category_id"], 0) + 1
    return instances, detections


def pr_curve(evaluator: Any, class_index: int | None = None, iou: float | None = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(recall points, precision)`` at IoU ``iou`` (None: mean over .50:.95), one class or (None) the mean
    over classes with ground truth; all areas, 100 detections. Precision is COCOeval's interpolated one."""
    precision = np.asarray(evaluator.eval["precision"])
    p = evaluator.params
    a, m = list(p.areaRngLbl).index("all"), len(p.maxDets) - 1
    sel = precision[:, :, :, a, m]  # [T, R, K]
    if iou is not None:
        sel = sel[[int(np.argmin(abs(np.asarray(p.iouThrs) - iou)))]]
    if class_index is not None:
        sel = sel[:, :, [class_index]]
    valid = (sel > -1).all(axis=1, keepdims=True)  # a class without ground truth is -1 at every recall
    counted = np.where(valid, sel, 0.0).sum(axis=(0, 2))
    n = valid.sum(axis=(0, 2))
    return np.asarray(p.recThrs), counted / np.maximum(n, 1)


# --------------------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------------------


def confusion_matrix(
    gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], image_ids: Sequence[int],
    category_ids: Sequence[int], iou_type: str = "segm", iou_threshold: float = 0.5, score_threshold: float = 0.5,
) -> np.ndarray:
    """``[K+1, K+1]`` counts, rows the ground-truth class, columns the predicted class, the last row / column
    background: a missed object counts in (class, background), a detection of nothing in (background, class).

    Detections scoring below ``score_threshold`` are left out; the others are matched, best score first, to the
    unmatched ground truth of any class with the highest IoU >= ``iou_threshold``. A detection that covers a
    crowd region (IoU with it >= the threshold, crowd IoU as COCO defines it) is neither a hit nor a false
    alarm, as in COCOeval.
    """
    from pycocotools import mask as mask_utils

    index = {int(c): i for i, c in enumerate(category_ids)}
    bg = len(category_ids)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    images = {img["id"]: img for img in gt["images"]}
    gts: dict[int, list[Mapping[str, Any]]] = {}
    for a in gt["annotations"]:
        if a["category_id"] in index:
            gts.setdefault(a["image_id"], []).append(a)
    dts: dict[int, list[Mapping[str, Any]]] = {}
    for r in results:
        if r["score"] >= score_threshold and r["category_id"] in index:
            dts.setdefault(r["image_id"], []).append(r)

    def region(obj: Mapping[str, Any], img: Mapping[str, Any]) -> Any:
        if iou_type == "bbox":
            return list(map(float, obj["bbox"]))
        rle = segmentation_to_rle(obj["segmentation"], img["height"], img["width"])
        return {"size": rle["size"], "counts": rle["counts"]}

    for iid in image_ids:
        img = images[int(iid)]
        g = gts.get(int(iid), [])
        d = sorted(dts.get(int(iid), []), key=lambda r: -r["score"])
        crowd = [bool(a.get("iscrowd", 0)) for a in g]
        if d and g:
            ious = np.asarray(mask_utils.iou([region(r, img) for r in d], [region(a, img) for a in g], crowd))
            ious = ious.reshape(len(d), len(g))
        else:
            ious = np.zeros((len(d), len(g)))
        taken = np.zeros(len(g), bool)
        for i, r in enumerate(d):
            col = index[r["category_id"]]
            candidates = np.where(~taken & ~np.asarray(crowd, bool), ious[i], -1.0) if g else np.zeros(0)
            j = int(np.argmax(candidates)) if len(candidates) else -1
            if j >= 0 and candidates[j] >= iou_threshold:
                taken[j] = True
                matrix[index[g[j]["category_id"]], col] += 1
            elif any(c and ious[i, k] >= iou_threshold for k, c in enumerate(crowd)):
                continue  # on a crowd region: ignored
            else:
                matrix[bg, col] += 1
        for j, a in enumerate(g):
            if not taken[j] and not crowd[j]:
                matrix[index[a["category_id"]], bg] += 1
    return matrix


# --------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    from isseg.atomic import atomic_write

    return atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=90))


def plot_pr_curves(evaluator: Any, class_names: Sequence[str], path: PathLike, title: str) -> Path:
    """Left: mean over classes at IoU .50, .75 and .50:.95; right: each class at IoU .50 (with its AP50)."""
    plt = _pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4.2))
    for iou, label in ((0.5, "IoU .50"), (0.75, "IoU .75"), (None, "IoU .50:.95")):
        r, p = pr_curve(evaluator, None, iou)
        ax0.plot(r, p, label=f"{label} (AP {p.mean():.3f})")
    ax0.set_title(f"{title}: all classes")
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for k, name in enumerate(class_names):
        if (np.asarray(evaluator.eval["precision"])[:, :, k] > -1).any():
            r, p = pr_curve(evaluator, k, 0.5)
            ax1.plot(r, p, color=cmap(k % 20), label=f"{name} ({p.mean():.3f})")
    ax1.set_title(f"{title}: per class, IoU .50")
    for ax in (ax0, ax1):
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: PathLike, title: str) -> Path:
    """Rows normalized to 1 (colour), counts written in the cells."""
    plt = _pyplot()
    labels = [*class_names, "background"]
    n = len(labels)
    size = min(16.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the row")
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def write_confusion_csv(matrix: np.ndarray, class_names: Sequence[str], path: PathLike) -> Path:
    labels = [*class_names, "background"]
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ground truth \\ predicted", *labels])
        for name, row in zip(labels, matrix):
            w.writerow([name, *map(int, row)])
    return path


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v < 0) else (f"{v:.3f}" if isinstance(v, float) else str(v))


def per_class_rows(evaluators: Mapping[str, Any], categories: Sequence[Mapping[str, Any]],
                   instances: Mapping[int, int], detections: Mapping[int, int]) -> list[dict[str, Any]]:
    """Rows ``class, category_id, instances, detections, box_AP, box_AP50, box_AR, mask_AP, ...``."""
    merged: dict[int, dict[str, Any]] = {}
    for iou_type, evaluator in evaluators.items():
        prefix = IOU_NAMES[iou_type]
        for row in per_class_metrics(evaluator, categories):
            out = merged.setdefault(row["category_id"], {
                "class": row["class"], "category_id": row["category_id"],
                "instances": instances.get(row["category_id"], 0), "detections": detections.get(row["category_id"], 0),
            })  # fmt: skip
            for key in ("AP", "AP50", "AP75", "AR"):
                out[f"{prefix}_{key}"] = row[key]
    return list(merged.values())


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-class table for a terminal."""
    if not rows:
        return ""
    keys = [k for k in rows[0] if k != "category_id"]
    width = max([len(str(r["class"])) for r in rows] + [5])
    cols = {k: max(9, len(k)) + 1 for k in keys[1:]}
    head = f"{'class':<{width}}" + "".join(f"{k:>{cols[k]}}" for k in keys[1:])
    body = [f"{str(r['class']):<{width}}" + "".join(f"{_fmt(r[k]):>{cols[k]}}" for k in keys[1:]) for r in rows]
    return "\n".join([head, *body])


def write_analysis(
    out_dir: PathLike, report: Mapping[str, Any], evaluators: Mapping[str, Any], gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]], image_ids: Sequence[int], score_threshold: float = 0.5,
    iou_threshold: float = 0.5, title: str = "isseg evaluation",
) -> dict[str, Any]:
    """Write ``per_class.csv``, ``pr_<box|mask>.png``, ``confusion_<mask|box>.png/.csv`` and ``report.html`` /
    ``report.md`` (linking them) into ``out_dir``; return the per-class rows and the file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    any_eval = next(iter(evaluators.values()))
    cat_ids = [int(c) for c in any_eval.params.catIds]
    by_id = {int(c["id"]): c for c in gt["categories"]}
    categories = [by_id[c] for c in cat_ids]
    names = [c["name"] for c in categories]
    instances, detections = class_counts(gt, results, image_ids)
    rows = per_class_rows(evaluators, categories, instances, detections)
    files: dict[str, str] = {}
    with open(out / "per_class.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["class"])
        w.writeheader()
        w.writerows(rows)
    files["per_class"] = "per_class.csv"
    for iou_type, evaluator in evaluators.items():
        kind = IOU_NAMES[iou_type]
        plot_pr_curves(evaluator, names, out / f"pr_{kind}.png", f"{kind} precision-recall")
        files[f"pr_{kind}"] = f"pr_{kind}.png"
    cm_type = "segm" if "segm" in evaluators else "bbox"
    kind = IOU_NAMES[cm_type]
    matrix = confusion_matrix(gt, results, image_ids, cat_ids, cm_type, iou_threshold, score_threshold)
    plot_confusion(matrix, names, out / f"confusion_{kind}.png",
                   f"confusion ({kind} IoU >= {iou_threshold:g}, score >= {score_threshold:g})")
    write_confusion_csv(matrix, names, out / f"confusion_{kind}.csv")
    files.update({"confusion_png": f"confusion_{kind}.png", "confusion_csv": f"confusion_{kind}.csv"})
    _write_pages(out, report, rows, files, evaluators, title, kind, score_threshold, iou_threshold)
    files.update(html="report.html", markdown="report.md")
    return {"per_class": rows, "files": {k: str(out / v) for k, v in files.items()},
            "confusion_matrix": matrix.tolist()}


def _coco_rows(report: Mapping[str, Any], evaluators: Mapping[str, Any]) -> list[dict[str, Any]]:
    from isseg.engine.coco_eval import STAT_NAMES

    return [{"metric": name, **{IOU_NAMES[t]: report[t][name] for t in evaluators if t in report}}
            for name in STAT_NAMES]


def _write_pages(out: Path, report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], files: Mapping[str, str],
                 evaluators: Mapping[str, Any], title: str, cm_kind: str, score_thr: float, iou_thr: float) -> None:
    coco_rows = _coco_rows(report, evaluators)
    facts = (f"{report.get('images', '?')} images, {report.get('detections', '?')} detections; ground truth "
             f"{report.get('annotation_file', '?')}")
    best = report.get("confidence_threshold") or {}
    if best.get("threshold") is not None:
        facts += (f". Best-F1 confidence threshold {best['threshold']:.3f} (F1 {best['f1']:.3f} at box IoU >= "
                  f"{best['iou']:g}; per class in the JSON report)")
    cm_note = (f"Confusion matrix: detections scoring >= {score_thr:g}, matched class-agnostically by {cm_kind} "
               f"IoU >= {iou_thr:g}; rows are the true class, the last row and column background "
               f"([CSV]({files['confusion_csv']})).")
    pr = [f"![{k}]({v})" for k, v in files.items() if k.startswith("pr_")]
    md = [f"# {title}", "", facts, "", "## COCO", "", markdown_table(coco_rows), "",
          "## Per class", "", "From the same COCOeval run (mean of the per-class AP = the COCO AP); "
          f"[CSV]({files['per_class']}).", "", markdown_table(rows), "", "## Precision-recall", "", *pr, "",
          "## Confusion matrix", "", cm_note, "", f"![confusion]({files['confusion_png']})", ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")

    def table(rs: Sequence[Mapping[str, Any]]) -> str:
        if not rs:
            return ""
        keys = list(rs[0])
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[k]))}</td>" for k in keys) + "</tr>" for r in rs)
        return f"<table><tr>{head}</tr>{body}</table>"

    imgs = "".join(f'<p><img src="{v}" alt="{k}"></p>' for k, v in files.items() if k.startswith("pr_"))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(facts)}</p><h2>COCO</h2>{table(coco_rows)}"
        "<h2>Per class</h2><p>From the same COCOeval run (mean of the per-class AP = the COCO AP); "
        f"<a href='{files['per_class']}'>CSV</a>.</p>{table(rows)}<h2>Precision-recall</h2>{imgs}"
        f"<h2>Confusion matrix</h2><p>{html.escape(cm_note.split(' ([CSV]')[0])} "
        f"<a href='{files['confusion_csv']}'>CSV</a>.</p><p><img src='{files['confusion_png']}' alt='confusion'></p>"
        "</body></html>"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
