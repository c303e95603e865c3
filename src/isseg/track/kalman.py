"""The tracker's motion model: a constant-velocity Kalman filter on box centre and size, batched over tracks.

State per track: float64 [8] ``(cx, cy, w, h, vcx, vcy, vw, vh)`` in pixels and pixels per frame, with an
[8, 8] covariance. Process and measurement noise scale with the box's own width (for x) and height (for y),
so a small far-away object and a large near one are equally sure of themselves in relative terms. Every
function takes a stack of T tracks (``means`` [T, 8], ``covs`` [T, 8, 8]) so that one frame costs a few
vectorised numpy calls whatever the number of tracks.
"""

from __future__ import annotations

import numpy as np

# x' = F x with unit time step (one frame); only position and size move, by their velocities.
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)


def xyxy_to_state(boxes: np.ndarray) -> np.ndarray:
    """float [K, 4] (x1, y1, x2, y2) -> float64 [K, 4] (cx, cy, w, h)."""
    b = np.asarray(boxes, np.float64)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def state_to_xyxy(means: np.ndarray) -> np.ndarray:
    """float64 [T, >=4] states -> float32 [T, 4] boxes (x1, y1, x2, y2); sizes below 1 px are kept at 1."""
    w = np.maximum(means[:, 2], 1.0)
    h = np.maximum(means[:, 3], 1.0)
    cx, cy = means[:, 0], means[:, 1]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)


def _size_scale(means: np.ndarray) -> np.ndarray:
    """float64 [T, 4]: the (w, h, w, h) each track's noise is proportional to (at least 1 px)."""
    w = np.maximum(np.abs(means[:, 2]), 1.0)
    h = np.maximum(np.abs(means[:, 3]), 1.0)
    return np.stack([w, h, w, h], 1)


def initiate(boxes: np.ndarray, pos_std: float, vel_std: float) -> tuple[np.ndarray, np.ndarray]:
    """New tracks at ``boxes`` (float [K, 4] xyxy), at rest: means [K, 8] and covariances [K, 8, 8].

    The velocity starts unknown (10x its per-frame noise), the position as sure as two measurements.
    """
    z = xyxy_to_state(boxes)
    means = np.concatenate([z, np.zeros_like(z)], 1)
    scale = _size_scale(means)
    std = np.concatenate([2 * pos_std * scale, 10 * vel_std * scale], 1)
    covs = np.zeros((len(z), 8, 8))
    idx = np.arange(8)
    covs[:, idx, idx] = std**2
    return means, covs


def predict(means: np.ndarray, covs: np.ndarray, pos_std: float, vel_std: float) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead: ``x = F x``, ``P = F P F^T + Q``; returns new arrays (inputs are not changed)."""
    if len(means) == 0:
        return means.copy(), covs.copy()
    new_means = means @ _F.T
    scale = _size_scale(means)
    q = np.concatenate([pos_std * scale, vel_std * scale], 1) ** 2
    new_covs = _F @ covs @ _F.T
    idx = np.arange(8)
    new_covs[:, idx, idx] += q
    return new_means, new_covs


def update(means: np.ndarray, covs: np.ndarray, boxes: np.ndarray, pos_std: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Correct T predicted states with T measured boxes (float [T, 4] xyxy); returns new arrays.

    ``H = [I 0]``, ``S = H P H^T + R``, ``K = P H^T S^-1``, ``x += K (z - H x)``, ``P -= K S K^T``.
    """
    if len(means) == 0:
        return means.copy(), covs.copy()
    z = xyxy_to_state(boxes)
    r = (pos_std * _size_scale(means)) ** 2
    s = covs[:, :4, :4].copy()
    idx = np.arange(4)
    s[:, idx, idx] += r
    pht = covs[:, :, :4]  # P H^T: [T, 8, 4]
    gain = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)  # P H^T S^-1 (S symmetric)
    innovation = z - means[:, :4]
    new_means = means + np.einsum("tij,tj->ti", gain, innovation)
    new_covs = covs - gain @ s @ gain.transpose(0, 2, 1)
    return new_means, new_covs
