"""The one place where user images are checked: the model and every deploy backend accept the same inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ImageLike = np.ndarray | str | Path


def read_image(image: ImageLike) -> np.ndarray:
    """An HxWx3 uint8 BGR array from a BGR array, an HxW grayscale array or an image file path.

    Anything else (RGBA, float, empty, wrong ndim, unreadable file) is a ValueError / FileNotFoundError
    that says what was expected.
    """
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        array = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if array is None:
            raise ValueError(f"{path}: not an image OpenCV can read")
        return array
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an HxWx3 uint8 BGR numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (0..255), got dtype {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        raise ValueError("expected an HxWx3 BGR image, got RGBA/BGRA (4 channels): drop alpha first, e.g. img[..., :3]")
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR or HxW grayscale image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    return image
