"""What a frame's masks cost after inference: pasting them (``Predictor.timings["postprocess"]``) and writing the
frame's record with COCO RLE masks (``isseg.engine.records.detections_record``), untiled, at two frame sizes.

    .venv/bin/python benchmarks/mask_output_speed.py --model runs/tiling-proxy/bench/ir/shapes.xml \\
        --image runs/tiling-data/test/000001.jpg

Run it under two trees to compare them (``PYTHONPATH=<tree>/src``), in turn, in one session. The image is used
at its own size and resized to ``--small`` (default 1024x576); each figure is the median of ``--runs`` runs.
``--threshold`` low enough keeps the model's 100 detections (a random-weight model scores them all low).
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an exported model (.xml / .onnx) or checkpoint")
    p.add_argument("--image", required=True, help="a large frame, e.g. a 3840x2160 one of benchmarks/tiling_data.py")
    p.add_argument("--small", default="1024x576", help="the second frame size, WIDTHxHEIGHT (default 1024x576)")
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--threshold", type=float, default=0.05)
    args = p.parse_args()

    from isseg.deploy.predictor import Predictor
    from isseg.engine.records import detections_record

    big = cv2.imread(args.image)
    if big is None:
        raise SystemExit(f"mask_output_speed: cannot read --image {args.image}")
    width, height = (int(v) for v in args.small.lower().split("x"))
    predictor = Predictor(args.model, threshold=args.threshold, tiling=False)
    for image in (cv2.resize(big, (width, height)), big):
        paste, record = [], []
        for _ in range(args.runs):
            det = predictor.predict(image)
            paste.append(predictor.timings["postprocess"])
            t0 = time.perf_counter()
            detections_record(det, "frame.jpg", masks=True)
            record.append(time.perf_counter() - t0)
        h, w = image.shape[:2]
        print(f"{w}x{h}: {len(det)} detections, postprocess {statistics.median(paste) * 1e3:.1f} ms, "
              f"record with RLE masks {statistics.median(record) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
