"""``isseg explain INPUT...``: pictures of what the model looked at, per class and per detection (docs/explain.md).

    isseg explain photos/ --weights runs/exp/best.pth --output explained/             # gradients (fast)
    isseg explain photo.jpg --weights runs/exp/best.pth --method drise --masks 300     # masking (slow, black box)

Writes into ``--output``, per image: ``<name>.detections.jpg``, ``<name>.class-<class>.jpg`` (the class's
score-weighted masks: the exported ``saliency_map``), ``<name>.det<i>-<class>.jpg`` (which places raised that
detection's score); and ``explain.json`` (files, detections, timings) and ``features.npz`` (each image's feature
vector). A bad input is one line; the others still run (exit code 1 when any failed).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs or manifests (.txt)")
    p.add_argument("--weights", "-w", required=True,
                   help="checkpoint path or registry name (explanations need the PyTorch model)")
    p.add_argument("--preset", help="preset of a foreign checkpoint (torchvision / detectron2 / mmdetection)")
    p.add_argument("--output", "-o", default="isseg_explain", help="output folder (default: %(default)s)")
    p.add_argument("--method", choices=("grad", "drise", "none"), default="grad",
                   help="per-detection maps: grad (gradients x activations, one backward pass per detection; "
                        "default), drise (random masking, --masks inferences per image), none (class maps only)")
    p.add_argument("--layer", choices=("c2", "c3", "c4", "c5"), default="c4",
                   help="grad: the backbone stage the gradients are taken at (c2 finest .. c5 coarsest; default c4)")
    p.add_argument("--masks", type=int, default=500, help="drise: masked inferences per image (default 500)")
    p.add_argument("--cells", type=int, default=16, help="drise: mask grid cells per side (default 16)")
    p.add_argument("--threshold", "-t", type=float, default=None,
                   help="explain detections scoring at least this (default: the model's threshold, else 0.5)")
    p.add_argument("--max-detections", type=int, default=10,
                   help="per-detection maps per image, for the best detections (default 10)")
    p.add_argument("--alpha", type=float, default=0.5, help="heat map opacity over the image (default 0.5)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--recursive", "-r", action="store_true", help="look for images in sub-folders too")


def _check(args: argparse.Namespace) -> None:
    from isseg.cli import checks

    checks.in_range(args.threshold, "--threshold", 0.0, 1.0)
    checks.in_range(args.alpha, "--alpha", 0.0, 1.0)
    checks.at_least(args.max_detections, "--max-detections", 1)
    checks.at_least(args.masks, "--masks", 1)
    checks.at_least(args.cells, "--cells", 1)
    checks.output_dir(args.output, "--output")


def run(args: argparse.Namespace) -> int:
    from isseg.deploy.contract import DEFAULT_CONFIDENCE_THRESHOLD
    from isseg.engine.threshold import checkpoint_threshold
    from isseg.explain.api import explain_image
    from isseg.explain.pictures import save_explanation, write_index
    from isseg.sources.inputs import expand_inputs
    from isseg.weights.loading import load_model

    _check(args)
    sources, errors = expand_inputs(args.inputs, args.recursive)
    errors += [(s.location, f"a {s.kind}, not an image") for s in sources if s.kind != "image"]
    images = [s for s in sources if s.kind == "image"]
    model = load_model(args.weights, preset=args.preset).to(args.device.lower()).eval()
    threshold = args.threshold if args.threshold is not None else checkpoint_threshold(args.weights)
    threshold = DEFAULT_CONFIDENCE_THRESHOLD if threshold is None else threshold
    entries, features = {}, {}
    for i, source in enumerate(images):
        stem = f"{i:04d}-{source.name.rsplit('.', 1)[0]}"
        try:
            expl = explain_image(model, source.location, args.method, threshold, args.max_detections, args.layer,
                                 args.masks, args.cells)
            entries[source.location] = save_explanation(expl, source.location, args.output, stem, args.alpha)
        except (ValueError, OSError) as exc:
            errors.append((source.location, str(exc)))
            continue
        features[source.location] = expl.feature_vector
        took = ", ".join(f"{k} {v:.2f} s" for k, v in expl.seconds.items())
        mapped = 0 if expl.detection_maps is None else len(expl.detection_maps)
        print(f"isseg explain: {source.location}: {len(expl.detections)} detection(s) >= {threshold:g}, {mapped} "
              f"with a map ({took})")
    for raw, problem in errors:
        print(f"isseg explain: {raw}: {problem}", file=sys.stderr)
    index, npz = write_index(args.output, entries, features)
    print(f"isseg explain: {len(entries)} image(s) explained, {len(errors)} failed; pictures in {args.output}, "
          f"index {index}, feature vectors {npz}")
    return 1 if errors or not entries else 0
