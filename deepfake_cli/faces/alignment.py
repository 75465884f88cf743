"""The 5-point face template and the similarity transform that aligns a face onto it.

A crop of ``size`` pixels holds a central "face square" of ``size / (1 + 2 * margin)`` pixels
plus ``margin`` times that square of context on each side; the 112x112 ArcFace template fills
the face square. deepfake_cli.faces.face_crops warps faces with it; deepfake_cli.faces.landmarks uses the same
geometry to place dlib's face box inside a crop. Pure numpy, no detector.
"""

from __future__ import annotations

import numpy as np

# The standard ArcFace 5-point template on a 112x112 crop: left eye, right eye, nose,
# left mouth corner, right mouth corner ("left" = image left).
ARCFACE_5PTS = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_SIZE = 112.0



def inner_size(size: int, margin: float) -> float:
    """Side of the central face square inside a ``size`` crop with ``margin``."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return size / (1.0 + 2.0 * margin)


def template_points(size: int = 160, margin: float = 0.2) -> np.ndarray:
    """ARCFACE_5PTS placed in a ``size`` crop: the 112 template fills the face square."""
    inner = inner_size(size, margin)
    return (ARCFACE_5PTS / ARCFACE_SIZE * inner + margin * inner).astype(np.float32)


def similarity_matrix(landmarks: np.ndarray, size: int = 160, margin: float = 0.2) -> np.ndarray:
    """(2, 3) least-squares similarity transform (Umeyama) of the 5 landmarks onto
    :func:`template_points`. Raises ValueError for degenerate landmarks."""
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    dst = template_points(size, margin).astype(np.float64)
    if not np.all(np.isfinite(src)):
        raise ValueError("landmarks are not finite")
    src_c, dst_c = src - src.mean(0), dst - dst.mean(0)
    var = (src_c**2).sum() / len(src)
    if var < 1e-6:
        raise ValueError("landmarks are degenerate (all at one point)")
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst.mean(0) - scale * rot @ src.mean(0)
    return matrix
