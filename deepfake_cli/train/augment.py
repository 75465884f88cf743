"""Real-world degradations for face crops (numpy / OpenCV), applied per sample in training.

Every random choice comes from the ``numpy.random.Generator`` passed in, so a crop and a
generator in the same state always give the same result.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_ROTATION_DEG = 10.0
SCALE_RANGE = (0.9, 1.1)
JPEG_QUALITY_RANGE = (30, 95)


def augment_face(crop: np.ndarray, rng: np.random.Generator, shift: bool = False) -> np.ndarray:
    """One randomly degraded copy of an (S, S, 3) uint8 RGB crop. ``shift`` adds what users' media
    bring beyond re-compression: downscale-upscale (a small face blown up) and sensor noise."""
    out = crop
    if shift and rng.random() < 0.3:
        out = rescale(out, float(rng.uniform(0.35, 0.8)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = random_affine(out, rng)
    out = jitter_brightness_contrast(out, rng)
    if rng.random() < 0.5:
        out = jpeg_recompress(out, int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1)))
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.4, 1.1)))
    if shift and rng.random() < 0.2:
        out = add_noise(out, float(rng.uniform(2.0, 8.0)), rng)
    return np.ascontiguousarray(out, dtype=np.uint8)


def random_affine(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by up to ±10° and scale by 0.9–1.1 about the centre, in one warp."""
    angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    scale = float(rng.uniform(*SCALE_RANGE))
    h, w = crop.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    return cv2.warpAffine(np.ascontiguousarray(crop), matrix, (w, h),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def jitter_brightness_contrast(crop: np.ndarray, rng: np.random.Generator,
                               brightness: float = 20.0, contrast: float = 0.15) -> np.ndarray:
    """Scale the contrast about the mean and shift the brightness."""
    alpha = float(rng.uniform(1.0 - contrast, 1.0 + contrast))
    beta = float(rng.uniform(-brightness, brightness))
    pixels = crop.astype(np.float32)
    mean = float(pixels.mean())
    return np.clip((pixels - mean) * alpha + mean + beta, 0, 255).astype(np.uint8)


def jpeg_recompress(crop: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB crop as JPEG at ``quality`` and decode it again."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(crop[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return crop
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]



def rescale(crop: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` (area) and enlarge back (bilinear): the detail of a smaller face."""
    h, w = crop.shape[:2]
    small = cv2.resize(np.ascontiguousarray(crop), (max(8, round(w * factor)), max(8, round(h * factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def add_noise(crop: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of standard deviation ``sigma`` (grey levels), the same on all channels' grain."""
    noise = rng.normal(0.0, sigma, crop.shape[:2] + (1,)).astype(np.float32)
    return np.clip(crop.astype(np.float32) + noise, 0, 255).astype(np.uint8)
