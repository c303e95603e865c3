"""The result type of every backend: the PyTorch model, OpenVINO, ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from isseg.model.masks import InstanceMasks


@dataclass
class Detections:
    """Instances found in one image, in that image's pixels, sorted by descending score.

    boxes: float32 [N, 4] (x1, y1, x2, y2); scores: float32 [N]; labels: int64 [N], 0-based contiguous
    class index into ``class_names``; masks: bool [N, H, W] at the image's resolution (or None): every isseg
    backend gives an :class:`~isseg.model.masks.InstanceMasks`, which holds each mask as a crop and acts as
    that array (``masks[i]`` is bool [H, W], ``np.asarray(masks)`` the whole array); a dense numpy array
    built by the user works everywhere too;
    track_ids: int64 [N], each >= 1, the identity of each instance across the frames of a video, set by
    :class:`isseg.track.Tracker` (or None for a single image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | InstanceMasks | None
    class_names: tuple[str, ...] = field(default_factory=tuple)
    image_size: tuple[int, int] = (0, 0)  # (height, width)
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def names(self) -> list[str]:
        """Class name of each detection."""
        return [self.class_names[i] if 0 <= i < len(self.class_names) else str(i) for i in self.labels]

    def filter(self, keep: np.ndarray) -> Detections:
        """A subset, by boolean mask or index array."""
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep],
                          None if self.masks is None else self.masks[keep], self.class_names, self.image_size,
                          None if self.track_ids is None else self.track_ids[keep])

    def above(self, threshold: float) -> Detections:
        return self.filter(self.scores >= threshold)

    @staticmethod
    def empty(image_size: tuple[int, int], class_names: tuple[str, ...] = (), tracked: bool = False) -> Detections:
        """No instances; ``tracked`` gives it an empty ``track_ids`` (int64 [0]) instead of None."""
        h, w = image_size
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                          np.zeros((0, h, w), bool), tuple(class_names), image_size,
                          np.zeros(0, np.int64) if tracked else None)

    def __repr__(self) -> str:
        ids = [""] * min(len(self), 5) if self.track_ids is None else [f" #{int(t)}" for t in self.track_ids[:5]]
        head = ", ".join(f"{n}{t} {s:.2f}" for n, t, s in zip(self.names[:5], ids, self.scores[:5]))
        more = f", ... ({len(self)} in all)" if len(self) > 5 else ""
        return f"Detections({head}{more}; image {self.image_size[0]}x{self.image_size[1]})"
