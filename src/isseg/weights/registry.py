"""Named pretrained weights: where to download them, how to verify them, which preset they fit.

Files are cached in ``$ISSEG_CACHE`` (default ``~/.cache/isseg``). Publishers give either a full SHA-256
or, as torchvision and mmdetection do, its first hex digits in the file name; both are checked.
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
    sha256: str  # full digest or its published prefix
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
    "torchvision-v2-coco", "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
    "73cbd019", "torchvision-v2", "torchvision", 47.4, 41.8,
    "torchvision/models/detection/mask_rcnn.py, MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
))  # fmt: skip


def cache_dir() -> Path:
    return Path(os.environ.get("ISSEG_CACHE", Path.home() / ".cache" / "isseg")).expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise ValueError(f"{path}: SHA-256 {actual[:16]}... does not match the published {expected}; "
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
