"""What the explanations cost, and whether the per-detection maps point at what the detection depends on.

    .venv/bin/python benchmarks/explain_cost.py --weights runs/recipes/fast-cpu/train/last.pth \\
        --images runs/recipes/synth/val --count 20 --masks 200 --output runs/explain-bench.json
    .venv/bin/python benchmarks/explain_cost.py --count 2 --masks 4 --no-deletion   # the seed's size (random weights)

For each image: the forward pass with the explain outputs (class maps, feature vector), the gradient maps
(``--layers``, one backward pass per detection) and D-RISE (``--masks`` inferences), each timed.

Faithfulness (``--deletion``, on by default): for each explained detection and method, the ``--fraction`` most
salient pixels of its map are hidden (filled with the image's mean colour) and the model run again; the
detection's survival (best IoU x score of a same-class detection, :func:`isseg.explain.drise.survival`) relative
to its original score is compared with hiding a region of the same shape moved away (the map rolled by half the
image). A map that shows what the detection depends on makes the first drop much more than the second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def hide(image: np.ndarray, saliency: np.ndarray, fraction: float, shift: bool) -> np.ndarray:
    """``image`` with the ``fraction`` most salient pixels (of the map, or of the map rolled by half the image)
    filled with the image's mean colour."""
    m = np.roll(saliency, (saliency.shape[0] // 2, saliency.shape[1] // 2), axis=(0, 1)) if shift else saliency
    k = max(1, int(fraction * m.size))
    cut = np.partition(m.ravel(), -k)[-k]
    out = image.copy()
    out[m >= cut] = image.reshape(-1, 3).mean(0).astype(np.uint8)
    return out


def deletion(model, image: np.ndarray, det, maps: np.ndarray, fraction: float) -> tuple[list[float], list[float]]:
    """Survival ratios of each detection with its salient region hidden, and with the rolled region hidden."""
    from isseg.explain.drise import survival

    salient, moved = [], []
    for i in range(len(det)):
        one = det.filter(np.array([i]))
        for shift, out in ((False, salient), (True, moved)):
            found = model.predict(hide(image, maps[i], fraction, shift))
            out.append(float(survival(one, found)[0] / max(float(det.scores[i]), 1e-9)))
    return salient, moved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="checkpoint (default: the seed's preset with realistic random weights)")
    p.add_argument("--images", help="image folder (default: coco-mini val2017)")
    p.add_argument("--count", type=int, default=5, help="images (default 5)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--max-detections", type=int, default=5)
    p.add_argument("--layers", nargs="+", default=["c4"], choices=("c2", "c3", "c4", "c5"))
    p.add_argument("--masks", type=int, default=100, help="D-RISE masks per image (0: skip D-RISE)")
    p.add_argument("--fraction", type=float, default=0.05, help="share of the image hidden by the deletion test")
    p.add_argument("--no-deletion", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", help="write the report (JSON) here")
    args = p.parse_args(argv)

    import cv2
    import torch

    from isseg.explain.api import explain_image

    torch.set_num_threads(args.threads)
    if args.weights:
        from isseg.weights.loading import load_model

        model = load_model(args.weights).eval()
    else:
        from isseg.testing.random_weights import realistic_random_model

        model = realistic_random_model("security-0002", seed=0).eval()
    if args.images:
        folder = Path(args.images)
    else:
        from isseg.testing.datasets import coco_mini_dir

        folder = coco_mini_dir() / "val2017"
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".png"))[: args.count]
    methods = [("grad", layer) for layer in args.layers] + ([("drise", None)] if args.masks else [])
    rows: dict[str, list[float]] = {}
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        for method, layer in methods:
            name = f"grad-{layer}" if method == "grad" else f"drise-{args.masks}"
            e = explain_image(model, image, method, args.threshold, args.max_detections, layer or "c4",
                              num_masks=args.masks, seed=1)
            n = len(e.detections)
            rows.setdefault("forward_s", []).append(e.seconds["forward"])
            if n:
                rows.setdefault(f"{name}_s_per_detection", []).append(e.seconds[method] / n)
            rows.setdefault(f"{name}_s_per_image", []).append(e.seconds[method])
            if not args.no_deletion and n:
                salient, moved = deletion(model, image, e.detections, e.detection_maps, args.fraction)
                rows.setdefault(f"{name}_survival_salient_hidden", []).extend(salient)
                rows.setdefault(f"{name}_survival_moved_hidden", []).extend(moved)
        print(f"{file.name}: done", flush=True)
    report = {k: {"mean": float(np.mean(v)), "median": float(np.median(v)), "n": len(v)} for k, v in rows.items()}
    report["setup"] = {"weights": args.weights or "security-0002 realistic random", "images": str(folder),
                       "count": len(files), "input": list(model.config.input.size), "threads": args.threads,
                       "masks": args.masks, "fraction_hidden": args.fraction, "threshold": args.threshold,
                       "load_average": os.getloadavg()[0], "time": time.strftime("%Y-%m-%d %H:%M")}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
