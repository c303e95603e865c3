"""Where the test / benchmark images are: coco-mini (``$ISSEG_COCO_MINI``, else ``../shared/datasets/coco-mini``
next to the repository checkout)."""

from __future__ import annotations

import os
from pathlib import Path


def coco_mini_dir() -> Path:
    """The coco-mini folder (``annotations/``, ``train2017/``, ``val2017/``); it may not exist."""
    env = os.environ.get("ISSEG_COCO_MINI")
    return Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared/datasets/coco-mini"
