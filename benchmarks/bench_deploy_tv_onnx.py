"""torchvision's own ONNX export of ``maskrcnn_resnet50_fpn`` in ONNX Runtime, for comparison with isseg's.

    python benchmarks/bench_deploy_tv_onnx.py [--images 4] [--model /tmp/tv_maskrcnn.onnx]

torchvision's recipe (``torch.onnx.export`` of the model on a list of images, opset 11, TorchScript
exporter) gives a graph with ``Loop`` ops (the per-class NMS / mask pasting), which OpenVINO cannot load;
this script checks that and times it in ONNX Runtime on the same letterboxed 768x1024 images, with the
same biased random weights as ``isseg benchmark``'s torchvision baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--model", default="/tmp/isseg_tv_maskrcnn.onnx", help="where the ONNX file goes")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort

    from isseg.sources.decode import read_image_file
    from isseg.testing.datasets import coco_images
    from isseg.testing.torchvision_baseline import letterboxed, torchvision_model

    model = torchvision_model()
    paths = coco_images(args.images)

    def prep(path: Path) -> torch.Tensor:
        canvas = letterboxed(read_image_file(path), (768, 1024))
        return torch.from_numpy(canvas[:, :, ::-1].copy()).permute(2, 0, 1).float().div_(255.0)

    out = Path(args.model)
    if not out.is_file():
        t0 = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, ([prep(paths[0])],), str(out), opset_version=11, dynamo=False,
                              input_names=["images"], output_names=["boxes", "labels", "scores", "masks"])
        print(f"exported torchvision ONNX in {time.perf_counter() - t0:.1f} s")
    ops = {n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node}
    print(f"control-flow ops in torchvision's graph: {sorted(ops & {'Loop', 'If', 'Scan'}) or 'none'}")
    try:
        import openvino as ov

        ov.Core().compile_model(str(out), "CPU")
        print("OpenVINO: loads")
    except Exception as exc:  # noqa: BLE001
        print(f"OpenVINO: cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: prep(paths[0]).numpy()})
    times = []
    for path in paths:
        x = prep(path).numpy()
        t0 = time.perf_counter()
        result = session.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    print(f"torchvision ONNX in ONNX Runtime: median {1000 * statistics.median(times):.0f} ms/image over "
          f"{len(paths)} images ({len(result[0])} detections on the last)")


if __name__ == "__main__":
    main()
