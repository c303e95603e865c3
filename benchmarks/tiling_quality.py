"""Tiled inference on 4K frames with small objects: isseg's tiling against untiled inference, SAHI and OpenVINO
Model API's tiler, with one model and one IR.

    .venv/bin/python benchmarks/tiling_train.py --output runs/tiling-model          # the model (once)
    .venv/bin/python benchmarks/tiling_quality.py --model runs/tiling-model/final.pth --output runs/tiling-bench

SAHI is not an isseg extra. Install it without its ``opencv-python`` requirement, which would put a second OpenCV
(5.x, with a GUI) over the pinned ``opencv-python-headless``::

    .venv/bin/pip install --no-deps sahi==0.12.8 pybboxes terminaltables fire

1. the test set: ``--frames`` 3840x2160 frames of ``benchmarks/tiling_data.py`` (40 to 80 objects each, 80 % of
   them 10..60 px across) in ``--data``;
2. the IR: the model exported at a 768x1024 canvas with ``isseg export --tile 768 --tile-overlap 0.2`` (Model
   API's tiler reads its tile_size, tiles_overlap, tile_with_full_img, iou_threshold 0.45 and max_pred_number
   100 from it);
3. each method runs in a process of its own (with ``MALLOC_ARENA_MAX=2``, the same for all, so that resident
   memory is not dominated by the slack of per-thread malloc arenas), frame after frame (each frame decoded
   before its clock starts), after one warm-up frame: the median seconds per frame; the process's peak
   resident memory; the peak above the loaded model (peak minus the resident memory once the model is loaded
   and compiled, before the first frame: what inference of 4K frames adds); and the working memory (the
   highest resident memory while predicting, sampled every 5 ms, minus the resident memory after the warm-up
   frame). Detections are turned into COCO records one at a time, outside the clock. The methods run in turn,
   ``--rounds`` times: the fastest round's median time and the largest memory are reported (the load of a
   shared machine drifts over minutes);
4. box and mask AP, AP-small (area < 32^2) and AP-large (> 96^2) by isseg's COCO evaluation, all detections
   with score >= ``--threshold`` (the same for every method; COCO keeps the 100 best per frame).

Methods: ``untiled`` (the IR on the whole frame); ``isseg-nms`` / ``isseg-nmm`` (isseg's tiling, 768x1024 tiles
= the canvas, overlap 0.2, the whole frame as one more tile, class-wise NMS at IoU 0.45 / NMM at IOS 0.5, in
OpenVINO's throughput mode); ``isseg-nmm-latency`` (the same in latency mode: one request at a time, as SAHI
runs); ``isseg-ir`` (the IR's own tiling, as ``Predictor(ir)`` runs it: Model API's square 768 tiles, NMM);
``sahi`` (SAHI 0.12 ``get_sliced_prediction`` with 768x1024 slices, overlap 0.2, its standard whole-frame
prediction and its GREEDYNMM / IOS 0.5 merge, through its custom-model interface around ``Predictor(ir,
tiling=False)``, latency mode); ``sahi-nms`` (the same with SAHI's NMS at IoU 0.45); ``model_api``
(``InstanceSegmentationTiler`` on the IR, configured by its rt_info, 2 OpenVINO streams like isseg's throughput
mode). Results: ``<output>/results.json`` and a Markdown table in ``<output>/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = ("untiled", "isseg-nms", "isseg-nmm", "isseg-nmm-latency", "isseg-ir", "sahi", "sahi-nms", "model_api")
CATEGORY_IDS = [1, 2, 3, 4, 5]  # tiling_data's categories, in the model's class order


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    """Highest resident memory while ``active``, sampled every 5 ms by a thread."""

    def __init__(self) -> None:
        self.active, self.peak, self._stop = False, 0.0, False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            if self.active:
                self.peak = max(self.peak, _rss_mb())
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop = True
        self._thread.join()


# ------------------------------------------------------------------------------------------------ methods
def isseg_method(ir: str, threshold: float, tiling: Any, mode: str) -> Any:
    from isseg.deploy.predictor import Predictor
    from isseg.engine.coco_eval import detections_to_coco

    predictor = Predictor(ir, threshold=threshold, tiling=tiling, mode=mode)
    return predictor.predict, lambda det, image_id: one_by_one(det, image_id, detections_to_coco)


def one_by_one(det: Any, image_id: int, convert: Any) -> list[dict]:
    """COCO records of a frame's detections, one mask at a time (Model API's masks are a dense array: encoding
    a stack of 4K masks at once would allocate another, the benchmark's cost, not the method's)."""
    return [r for k in range(len(det)) for r in convert(det.filter(np.array([k])), image_id, CATEGORY_IDS)]


def model_api_method(ir: str, threshold: float) -> Any:
    from model_api.models import Model
    from model_api.tilers import InstanceSegmentationTiler

    from isseg.engine.coco_eval import detections_to_coco
    from isseg.model.detections import Detections

    tiler = InstanceSegmentationTiler(Model.create_model(ir, configuration={"confidence_threshold": threshold},
                                                         device="CPU", nstreams="2"))

    def records(r: Any, image_id: int) -> list[dict]:
        masks = np.asarray(r.masks, bool)
        det = Detections(np.asarray(r.bboxes, np.float32).reshape(-1, 4), np.asarray(r.scores, np.float32).reshape(-1),
                         np.asarray(r.labels, np.int64).reshape(-1) - 1, masks, (), masks.shape[1:])
        return one_by_one(det, image_id, detections_to_coco)

    return tiler, records


def sahi_method(ir: str, threshold: float, merge: tuple[str, str, float] = ("GREEDYNMM", "IOS", 0.5),
                masks: bool = True) -> Any:
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask

    from isseg.data.masks import polygons_to_rle
    from isseg.deploy.predictor import Predictor

    class IssegSahiModel(DetectionModel):
        """SAHI's custom-model interface around an isseg Predictor (untiled: SAHI slices)."""

        def load_model(self) -> None:
            self.model = Predictor(self.model_path, threshold=self.confidence_threshold, tiling=False)
            self.category_mapping = {str(i): n for i, n in enumerate(self.model.class_names)}

        def perform_inference(self, image: np.ndarray) -> None:
            self._original_predictions = self.model.predict(image)

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=None,
                                                                      full_shape_list=None) -> None:
            det = self._original_predictions
            if shift_amount_list and isinstance(shift_amount_list[0], int | float):  # SAHI passes both forms
                shift_amount_list = [shift_amount_list]
            if full_shape_list and isinstance(full_shape_list[0], int | float):
                full_shape_list = [full_shape_list]
            shift = shift_amount_list[0] if shift_amount_list else [0, 0]
            full = full_shape_list[0] if full_shape_list else None
            segmentations = [get_coco_segmentation_from_bool_mask(det.masks[k]) if masks else None
                             for k in range(len(det))]
            # SAHI refuses a prediction whose mask has no polygon (an empty mask): such detections are left out
            preds = [ObjectPrediction(bbox=det.boxes[k].tolist(), category_id=int(det.labels[k]),
                                      category_name=self.category_mapping[str(int(det.labels[k]))],
                                      segmentation=seg, score=float(det.scores[k]), shift_amount=shift,
                                      full_shape=full)
                     for k, seg in enumerate(segmentations) if seg is None or seg]
            self._object_prediction_list_per_image = [preds]

    model = IssegSahiModel(model_path=ir, confidence_threshold=threshold, device="cpu")

    def predict(frame: np.ndarray) -> Any:
        return get_sliced_prediction(frame, model, slice_height=768, slice_width=1024, overlap_height_ratio=0.2,
                                     overlap_width_ratio=0.2, perform_standard_pred=True,
                                     postprocess_type=merge[0], postprocess_match_metric=merge[1],
                                     postprocess_match_threshold=merge[2], verbose=0)

    def records(result: Any, image_id: int) -> list[dict]:
        h, w = result.image_height, result.image_width
        out = []
        for p in result.object_prediction_list:
            x1, y1, x2, y2 = p.bbox.to_xyxy()
            polygons = [s for s in (p.mask.segmentation if p.mask is not None else []) if len(s) >= 6]
            rle = polygons_to_rle(polygons, h, w) if polygons else polygons_to_rle([[0, 0, 0, 0, 0, 0]], h, w)
            record = {"image_id": image_id, "category_id": CATEGORY_IDS[int(p.category.id)],
                      "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(p.score.value)}
            if masks:
                record["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            out.append(record)
        return out

    return predict, records


def build(method: str, ir: str, threshold: float) -> Any:
    from isseg.tiling.options import TilingOptions

    if method == "untiled":
        return isseg_method(ir, threshold, False, "latency")
    if method == "isseg-nms":
        return isseg_method(ir, threshold, TilingOptions(merge="nms", match_metric="iou", match_threshold=0.45),
                            "throughput")
    if method == "isseg-nmm":
        return isseg_method(ir, threshold, TilingOptions(merge="nmm", match_metric="ios", match_threshold=0.5),
                            "throughput")
    if method == "isseg-nmm-latency":
        return isseg_method(ir, threshold, TilingOptions(merge="nmm", match_metric="ios", match_threshold=0.5),
                            "latency")
    if method == "isseg-ir":
        return isseg_method(ir, threshold, None, "throughput")
    if method == "sahi":
        return sahi_method(ir, threshold)
    if method == "sahi-nms":
        return sahi_method(ir, threshold, ("NMS", "IOU", 0.45))
    if method == "model_api":
        return model_api_method(ir, threshold)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def worker(args: argparse.Namespace) -> int:
    import cv2

    predict, to_records = build(args.worker, args.ir, args.threshold)
    loaded = _rss_mb()  # the model loaded and compiled
    files = [Path(args.data) / "test" / f"{i:06d}.jpg" for i in range(args.frames)]
    predict(cv2.imread(str(files[0])))  # warm-up: first allocations
    sampler, baseline = PeakSampler(), _rss_mb()
    seconds, records = [], []
    for i, file in enumerate(files):
        frame = cv2.imread(str(file))
        sampler.active = True
        t0 = time.perf_counter()
        out = predict(frame)
        seconds.append(time.perf_counter() - t0)
        sampler.active = False
        records += to_records(out, i + 1)
        del out, frame
    sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {"method": args.worker, "seconds": seconds, "loaded_mb": loaded, "baseline_mb": baseline,
              "working_mb": sampler.peak - baseline, "peak_rss_mb": peak, "above_model_mb": peak - loaded,
              "records": records}
    Path(args.result).write_text(json.dumps(report))
    return 0


# ------------------------------------------------------------------------------------------------ driver
def prepare(args: argparse.Namespace) -> Path:
    """The test frames and the IR (made once)."""
    from tiling_data import write_split

    data = Path(args.data)
    if not (data / "test.json").is_file() or len(json.loads((data / "test.json").read_text())["images"]) < args.frames:
        write_split(data / "test", data / "test.json", args.frames, (2160, 3840), (40, 80), args.seed, 1)
    ir = Path(args.output) / "ir" / "shapes.xml"
    if not ir.is_file():
        code = subprocess.call([sys.executable, "-m", "isseg", "export", args.model, "--output", str(ir.parent),
                                "--name", "shapes", "--input-size", "768", "1024", "--tile", "768",
                                "--tile-overlap", "0.2"])
        if code:
            raise SystemExit(f"export failed ({code})")
    return ir


def split_objects(gt: dict, records: list[dict], frames: int, min_score: float = 0.3) -> int:
    """Objects that come out as several detections: ground-truth objects with two or more detections of their
    class (score >= ``min_score``) that lie at least half inside the object's mask and cover a tenth of it
    (fragments of an object cut by tile borders, or duplicates)."""
    from pycocotools import mask as mask_utils

    from isseg.data.masks import rle_to_compressed

    count = 0
    for image_id in range(1, frames + 1):
        dets = [r for r in records if r["image_id"] == image_id and r["score"] >= min_score]
        det_rles = [rle_to_compressed(r["segmentation"]) for r in dets]
        det_areas = [float(mask_utils.area(r)) for r in det_rles]  # one by one: area() of a list of 256+ fails
        for ann in (a for a in gt["annotations"] if a["image_id"] == image_id and not a.get("iscrowd")):
            g = rle_to_compressed(ann["segmentation"])
            parts = 0
            for r, rle, area in zip(dets, det_rles, det_areas):
                if r["category_id"] != ann["category_id"] or area == 0:
                    continue
                inter = float(mask_utils.area(mask_utils.merge([rle, g], intersect=True)))
                parts += inter >= 0.5 * area and inter >= 0.1 * ann["area"]
            count += int(parts >= 2)
    return count


def evaluate(gt: dict, report: dict, frames: int) -> dict:
    from isseg.engine.coco_eval import coco_eval

    stats = coco_eval(gt, report["records"], image_ids=range(1, frames + 1))
    return {"box_AP": stats["bbox"]["AP"], "box_APs": stats["bbox"]["APs"], "box_APl": stats["bbox"]["APl"],
            "mask_AP": stats["segm"]["AP"], "mask_APs": stats["segm"]["APs"], "mask_APm": stats["segm"]["APm"],
            "mask_APl": stats["segm"]["APl"], "seconds_per_frame": float(np.median(report["seconds"])),
            "peak_rss_mb": report["peak_rss_mb"], "above_model_mb": report["above_model_mb"],
            "working_mb": report["working_mb"], "detections": len(report["records"]),
            "split_objects": split_objects(gt, report["records"], frames)}


def table(results: dict[str, dict]) -> str:
    head = ("| method | mask AP | mask AP-small | mask AP-large | box AP | box AP-small | objects split | s / frame | "
            "peak RSS (MB) | peak above the loaded model (MB) | working memory (MB) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = [f"| {m} | {r['mask_AP']:.3f} | {r['mask_APs']:.3f} | {r['mask_APl']:.3f} | {r['box_AP']:.3f} | "
            f"{r['box_APs']:.3f} | {r.get('split_objects', '')} | {r['seconds_per_frame']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['above_model_mb']:.0f} | {r['working_mb']:.0f} |" for m, r in results.items()]
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/tiling-model/final.pth", help="checkpoint (benchmarks/tiling_train.py)")
    p.add_argument("--data", default="runs/tiling-data", help="folder of the test frames (made if missing)")
    p.add_argument("--output", default="runs/tiling-bench")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.1, help="score threshold of every method (default 0.1)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--rounds", type=int, default=2,
                   help="runs of every method, in turn; the fastest round's time is reported (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    ir = prepare(args)
    gt = json.loads((Path(args.data) / "test.json").read_text())
    results: dict[str, dict] = {}
    saved = out / "results.json"
    if saved.is_file():
        results = {m: r for m, r in json.loads(saved.read_text())["results"].items() if m not in args.methods}
    for round_ in range(args.rounds):  # methods in turn, round after round: load on a shared machine drifts
        for method in args.methods:
            result = out / f"{method}-{round_}.json"
            cmd = [sys.executable, __file__, "--worker", method, "--ir", str(ir), "--data", args.data,
                   "--frames", str(args.frames), "--threshold", str(args.threshold), "--result", str(result)]
            t0 = time.perf_counter()
            env = dict(os.environ, MALLOC_ARENA_MAX="2")  # resident memory without per-thread arenas' slack
            if subprocess.call(cmd, env=env):
                raise SystemExit(f"{method}: worker failed")
            report = json.loads(result.read_text())
            if round_ == 0:
                results[method] = evaluate(gt, report, args.frames)
            else:  # the fastest round's time, the largest memory
                r = results[method]
                r["seconds_per_frame"] = min(r["seconds_per_frame"], float(np.median(report["seconds"])))
                for key in ("peak_rss_mb", "above_model_mb", "working_mb"):
                    r[key] = max(r[key], report[key])
            print(f"round {round_ + 1}, {method}: {json.dumps({k: round(v, 3) for k, v in results[method].items()})} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    order = {m: i for i, m in enumerate(METHODS)}
    results = dict(sorted(results.items(), key=lambda kv: order[kv[0]]))
    saved.write_text(json.dumps({"frames": args.frames, "threshold": args.threshold, "results": results}, indent=2))
    (out / "results.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
