"""isseg's PyTorch path on a CUDA GPU against torchvision's ``maskrcnn_resnet50_fpn`` on the same GPU, in one run.

    PYTHONPATH=src python3 benchmarks/gpu_torch.py --images 20          # on a machine with a CUDA GPU

Both models have seeded random weights that pass ~100 detections per image (``isseg.testing.random_weights``,
``isseg.testing.torchvision_baseline.torchvision_model``), at the seed's 768x1024 input, batch 1, each image a
deterministic 768x1024 picture. Timed per image, after warm-up, with ``torch.cuda.synchronize``: "end to end" is
``Predictor.predict`` (pre-processing, the network, detections back to the image, masks pasted at full size), and
torchvision's whole ``forward`` plus mask thresholding. fp32 (TF32 off) and bf16 autocast. Prints a Markdown table.
OpenVINO's GPU plugin runs on Intel GPUs only, so it is not measured on an NVIDIA card.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _images(n: int) -> list[np.ndarray]:
    from isseg.testing.random_weights import demo_image

    return [demo_image(100 + i) for i in range(n)]


def _time(fn, images: list[np.ndarray], warmup: int) -> tuple[float, float]:
    for image in images[:warmup]:
        fn(image)
    torch.cuda.synchronize()
    times = []
    for image in images:
        t0 = time.perf_counter()
        fn(image)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), 1000 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from isseg.deploy.predictor import Predictor
    from isseg.testing.random_weights import realistic_random_model
    from isseg.testing.torchvision_baseline import torchvision_model

    images = _images(args.images)
    isseg_model = realistic_random_model("security-0002", seed=0)
    predictor = Predictor(isseg_model, backend="torch", device="cuda")
    tv = torchvision_model(input_size=(768, 1024)).cuda().eval()

    def tv_predict(image: np.ndarray) -> int:
        x = torch.from_numpy(image[:, :, ::-1].copy()).cuda().permute(2, 0, 1).float().div_(255.0)
        with torch.inference_mode():
            out = tv([x])[0]
        return int((out["masks"][:, 0] > 0.5).sum().item() >= 0) * len(out["scores"])

    counts = {"isseg": len(predictor.predict(images[0])), "torchvision": tv_predict(images[0])}
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; detections on the first image: {counts}")
    rows = []
    for precision in ("fp32", "bf16"):
        ctx = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
        with ctx:
            tv_ms = _time(tv_predict, images, args.warmup)
            is_ms = _time(predictor.predict, images, args.warmup)
        rows.append((f"torchvision eager {precision}", tv_ms, 1.0))
        rows.append((f"isseg Predictor (torch, cuda) {precision}", is_ms, tv_ms[0] / is_ms[0]))
    print("| configuration | median ms | min ms | x torchvision (same precision) |\n|---|---|---|---|")
    for name, (med, best), ratio in rows:
        print(f"| {name} | {med:.1f} | {best:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
