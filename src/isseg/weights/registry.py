"""Named pretrained weights: where to download them, how to verify them, which preset they fit.

Files are cached in ``$ISSEG_CACHE`` (default ``~/.cache/isseg``). Publishers give either a full SHA-256
or, as torchvision and mmdetection do, its first hex digits in the file name; detectron2 puts the first
digits of an MD5 in its file names. Whatever was published is checked.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    url: str
    sha256: str  # full digest or its published prefix; "md5:<prefix>" where only an MD5 prefix is published
    preset: str
    layout: str  # torchvision | detectron2 | mmdet | isseg
    box_ap: float | None = None  # published COCO val2017 AP, at the library's own test size
    mask_ap: float | None = None
    source: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


REGISTRY: dict[str, WeightsEntry] = {}


def register(entry: WeightsEntry) -> None:
    REGISTRY[entry.name] = entry


register(WeightsEntry(
    "torchvision-v1-coco", "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
    "bf2d0c1e", "torchvision-v1", "torchvision", 37.9, 34.6,
    "torchvision/models/detection/mask_rcnn.py, MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
))  # fmt: skip
register(WeightsEntry(
    "detectron2-r50-fpn-3x-coco",
    "https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/"
    "model_final_f10217.pkl",
    "md5:f10217", "detectron2-r50-fpn", "detectron2", 41.0, 37.2,
    "detectron2 MODEL_ZOO.md, COCO Instance Segmentation, R50-FPN 3x (model id 137849600; MD5 prefix in the name)",
))  # fmt: skip
register(WeightsEntry(
    "mmdet-r50-caffe-fpn-mstrain-poly-3x-coco",
    "https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco/"
    "mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco_bbox_mAP-0.408__segm_mAP-0.37_20200504_163245-42aa3d00.pth",
    "42aa3d0009d2ed454406c1270bba9da70f6e5c7a6a96fa447fd568302bf700d1", "mmdet-r50-caffe-fpn", "mmdet", 40.8, 37.0,
    "mmdetection configs/mask_rcnn/metafile.yml; full SHA-256 from OpenVINO Training Extensions "
    "instance-segmentation-0002/template.yaml (the same file)",
))  # fmt: skip
register(WeightsEntry(
    "security-0002-snapshot",
    "https://download.01.org/opencv/openvino_training_extensions/models/instance_segmentation/v2/"
    "instance-segmentation-0002.pth",
    "42aa3d0009d2ed454406c1270bba9da70f6e5c7a6a96fa447fd568302bf700d1", "security-0002", "mmdet", 40.8, 36.9,
    "OpenVINO Training Extensions coco-instance-segmentation/instance-segmentation-0002/template.yaml: the seed's "
    "PyTorch snapshot, byte-identical to mmdetection's checkpoint above (AP as the seed card reports at 768x1024)",
))  # fmt: skip
register(WeightsEntry(
    "torchvision-v2-coco", "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
    "73cbd019", "torchvision-v2", "torchvision", 47.4, 41.8,
    "torchvision/models/detection/mask_rcnn.py, MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
))  # fmt: skip


def cache_dir() -> Path:
    return Path(os.environ.get("ISSEG_CACHE", Path.home() / ".cache" / "isseg")).expanduser()


def digest_of(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    algorithm, _, value = expected.rpartition(":")
    algorithm = algorithm or "sha256"
    actual = digest_of(path, algorithm)
    if not actual.startswith(value.lower()):
        raise ValueError(f"{path}: {algorithm.upper()} {actual[:16]}... does not match the published {value}; "
                         "the file is corrupt or not the published one: delete it and download again")


def resolve(name: str, download: bool = True) -> Path:
    """Local path of registry weights ``name``: from the cache, else downloaded and verified."""
    if name not in REGISTRY:
        raise ValueError(f"unknown weights {name!r}; registry names: {sorted(REGISTRY)}")
    entry = REGISTRY[name]
    target = cache_dir() / entry.filename
    if target.is_file():
        verify(target, entry.sha256)
        return target
    if not download:
        raise FileNotFoundError(_manual_hint(entry, target, "downloads are disabled"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        verify(Path(tmp), entry.sha256)
        os.replace(tmp, target)
    except OSError as exc:  # no network, DNS failure, HTTP error, disk full
        raise FileNotFoundError(_manual_hint(entry, target, f"download failed: {exc}")) from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _manual_hint(entry: WeightsEntry, target: Path, why: str) -> str:
    return (f"weights {entry.name!r} are not in the cache and {why}. Download {entry.url} and save it as "
            f"{target} (or set ISSEG_CACHE to the folder that holds {entry.filename})")
