"""Throughput of ``isseg predict`` in one process vs the Ray Data pipeline (``--ray``) on the same images, same
machine, same run; and Ray's start-up overhead.

    .venv/bin/python benchmarks/ray_predict.py --images 24                      # small 320x416 IR (exported here)
    .venv/bin/python benchmarks/ray_predict.py --images 40 --input-size 768 1024  # the seed's size (exported here)
    .venv/bin/python benchmarks/ray_predict.py --model exported/security-0002.xml --images 24 --rounds 2

Configurations (2 CPUs): ``isseg predict`` (one process, OpenVINO on both cores); Ray, 1 actor x 2 CPUs; Ray,
2 actors x 1 CPU (and, with ``--compare-batch-size N``, 1 actor x 2 CPUs with batches of N). Each
round runs them all, in that order, so a machine shared with other jobs slows them
alike (Ray's workers at normal priority, as a Ray started by ``isseg.cluster`` runs them, not Ray's default
nice 15, which on a shared machine hands their CPU time to the other jobs); each round's figures are compared
with that round's ``isseg predict``. Figures:

- end-to-end images/s: images / (process or ``predict_ray`` wall time, model loading included; Ray's start
  excluded, reported on its own);
- steady images/s: the rate once the model is loaded (``isseg predict``: its own loop rate, printed at its end;
  Ray: images / (last image done - first image started), timed inside the actors);
- Ray start: ``ray.init`` of a local 2-CPU Ray; first image started: seconds from the pipeline's start until an
  actor (started, model loaded) begins the first image.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def small_model(folder: Path, input_size: tuple[int, int] = (320, 416)) -> Path:
    """The tests' small export: seeded realistic random weights, 320x416 (or ``input_size``), raised background
    logit."""
    import torch

    from isseg.deploy.export import export
    from isseg.testing.random_weights import realistic_random_model

    model = realistic_random_model("security-0002", seed=1)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[-1] += 11.0
    return export(model, folder, "openvino", "fp32", input_size=input_size)


def run_predict(images: Path, model: Path, out: Path, threshold: float) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "isseg", "predict", str(images), "--model", str(model), "--output",
                           str(out), "--threshold", str(threshold), "--no-images", "--quiet"],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"isseg predict failed: {proc.stderr.strip()[-500:]}")
    m = re.search(r"=\s*([0-9.]+) images/s", proc.stdout)
    n = sum(1 for line in (out / "results.jsonl").read_text().splitlines() if line.strip())
    return {"images": n, "wall_s": wall, "end_to_end": n / wall, "steady": float(m.group(1)) if m else float("nan")}


def run_ray(images: Path, model: Path, out: Path, threshold: float, actors: int, cpus: float,
            batch_size: int | None = None) -> dict[str, float]:
    from isseg.cluster import predict_ray

    s = predict_ray([str(images)], str(model), out, threshold=threshold, actors=actors, cpus_per_actor=cpus,
                    shard_size=32, batch_size=batch_size)
    n, sec = s["images_computed"], s["seconds"]
    return {"images": n, "wall_s": sec["pipeline"], "end_to_end": n / sec["pipeline"],
            "steady": s["steady_images_per_s"], "first_image_started_s": sec["first_image_started"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="OpenVINO IR (default: the small 320x416 test export, made here)")
    ap.add_argument("--input-size", type=int, nargs=2, default=[320, 416], metavar=("H", "W"),
                    help="input size of the export made here (default 320 416; 768 1024 is the seed's contract)")
    ap.add_argument("--images", type=int, default=24, help="coco-mini images, val2017 then train2017 (159 in all; "
                    "more are copies of those) (default 24)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, help="images per Ray Data batch (default: predict_ray's, 16 in "
                    "throughput mode)")
    ap.add_argument("--compare-batch-size", type=int, help="also run 1 actor x 2 CPUs with this batch size")
    ap.add_argument("--coco-mini", default=str(ROOT.parent / "shared/datasets/coco-mini"))
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="isseg-ray-bench-"))
    try:
        found = [f for split in ("val2017", "train2017") for f in sorted((Path(args.coco_mini) / split).glob("*.jpg"))]
        if not found:
            raise SystemExit(f"{args.coco_mini}: no val2017/ or train2017/ images")
        files = [found[i % len(found)] for i in range(args.images)]
        images = work / "images"
        images.mkdir()
        for i, f in enumerate(files):  # past the 159 images, copies under new names (a larger collection)
            shutil.copy(f, images / (f.name if i < len(found) else f"{f.stem}-copy{i // len(found)}{f.suffix}"))
        model = Path(args.model) if args.model else small_model(work / "model", tuple(args.input_size))
        os.environ.setdefault("RAY_worker_niceness", "0")  # as isseg.cluster.connect: workers at normal priority
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        configs = {"isseg predict (1 process, 2 threads)": None, "Ray, 1 actor x 2 CPUs": (1, 2.0, args.batch_size),
                   "Ray, 2 actors x 1 CPU": (2, 1.0, args.batch_size)}
        if args.compare_batch_size:
            configs[f"Ray, 1 actor x 2 CPUs, batches of {args.compare_batch_size}"] = (1, 2.0, args.compare_batch_size)
        rounds: list[dict[str, dict[str, float]]] = []
        for r in range(args.rounds):
            rounds.append({})
            for i, (name, cfg) in enumerate(configs.items()):
                out = work / f"out-{r}-{i}"
                res = run_predict(images, model, out, args.threshold) if cfg is None else \
                    run_ray(images, model, out, args.threshold, *cfg)
                rounds[-1][name] = res
                print(f"round {r + 1}: {name}: {json.dumps({k: round(v, 3) for k, v in res.items()})}", flush=True)
        ray.shutdown()
        base_name = next(iter(configs))
        print(f"\n{len(files)} images, model {model.name}, Ray start {ray_start:.2f} s (local, 2 CPUs); ratios are "
              "to isseg predict in the same round\n")
        print("| round | configuration | end-to-end img/s | x isseg predict | steady img/s | x isseg predict | "
              "first image started s |")
        print("|---|---|---|---|---|---|---|")
        for r, results in enumerate(rounds, 1):
            base = results[base_name]
            for name, res in results.items():
                first = res.get("first_image_started_s")
                print(f"| {r} | {name} | {res['end_to_end']:.3f} | {res['end_to_end'] / base['end_to_end']:.2f} | "
                      f"{res['steady']:.3f} | {res['steady'] / base['steady']:.2f} | "
                      f"{'' if first is None else f'{first:.1f}'} |")
        if args.json:
            Path(args.json).write_text(json.dumps({"images": len(files), "model": str(model),
                                                   "ray_start_s": ray_start, "rounds": rounds}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
