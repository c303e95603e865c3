"""Where the test / benchmark images are: coco-mini (``$ISSEG_COCO_MINI``, else ``../shared/datasets/coco-mini``
next to the repository checkout), and its image files."""

from __future__ import annotations

import os
from pathlib import Path


def coco_mini_dir() -> Path:
    """The coco-mini folder (``annotations/``, ``train2017/``, ``val2017/``); it may not exist."""
    env = os.environ.get("ISSEG_COCO_MINI")
    return Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared/datasets/coco-mini"


def coco_images(count: int, split: str = "val2017") -> list[Path]:
    """The first ``count`` image files (sorted names, :data:`isseg.sources.decode.IMAGE_SUFFIXES`) of a
    coco-mini split; FileNotFoundError saying how to point at coco-mini when it is absent."""
    from isseg.sources.decode import IMAGE_SUFFIXES

    folder = coco_mini_dir() / split
    if not folder.is_dir():
        raise FileNotFoundError(f"coco-mini not found at {folder.parent}; set ISSEG_COCO_MINI")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:count]
