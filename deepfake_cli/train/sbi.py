"""Self-Blended Images: pseudo-fakes made from one real face (Shiohara & Yamasaki, CVPR 2022).

A face swap pastes one face onto another and leaves traces of the pasting: a blending
boundary, colour and sharpness that do not quite match, a face a little out of place. A
self-blended image has those traces and nothing else: a slightly changed copy of the real
face (the *source*) is blended back onto the face itself (the *target*) inside a mask
around the landmarks. A classifier that learns to find them learns traces shared by all
face-swap methods rather than the fingerprints of the few in its training set.

The recipe (numpy / OpenCV, every random choice from the ``numpy.random.Generator`` given):

* source = the crop with a colour change (hue, saturation, value, brightness, contrast,
  sometimes per-channel shifts), then sharpened or blurred (down- and up-scaled), sometimes
  JPEG-compressed, then scaled by 0.95-1/0.95 and moved by up to 3 % (x) and 1.5 % (y);
* mask = convex hull of the 68 landmarks, elastically deformed, eroded or dilated, its
  edge Gaussian-blurred, times a blend ratio from {0.25, 0.5, 0.75, 1, 1, 1};
* fake = source * mask + target * (1 - mask). Outside the mask the fake is the target,
  byte for byte; the mask reaches at most :func:`mask_reach` pixels beyond the hull.

The number and order of random draws depends on the crop's size only (never on its pixels or
landmarks), so faces of one clip blended from the same generator state share every parameter
(deepfake_cli.train.pseudo_clips).
"""

from __future__ import annotations

import cv2
import numpy as np

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
SCALE_RANGE = (0.95, 1 / 0.95)
SHIFT_X, SHIFT_Y = 0.03, 0.015  # of the crop side
# mask deformations, as fractions of the face size (the landmarks' larger extent)
ELASTIC_MAX = 0.03  # largest displacement of the elastic warp
ELASTIC_SMOOTHNESS = 0.1  # Gaussian sigma of the displacement field
MORPH_MAX = 0.06  # largest erosion / dilation radius
BLUR_SIGMA = (0.01, 0.05)  # edge blur sigma; the kernel is cut at 3 sigma


def face_size(landmarks68: np.ndarray) -> float:
    """The larger side of the landmarks' bounding box, in pixels (at least 1)."""
    points = np.asarray(landmarks68, np.float64).reshape(-1, 2)
    return max(1.0, float(np.ptp(points, axis=0).max()))


def mask_reach(landmarks68: np.ndarray) -> float:
    """How far (pixels) the mask may reach beyond the landmarks' convex hull."""
    size = face_size(landmarks68)  # the elastic shift is up to ELASTIC_MAX along x and y at once
    return size * (np.sqrt(2.0) * ELASTIC_MAX + MORPH_MAX) + _blur_radius(BLUR_SIGMA[1] * size) + 2.0


def self_blend(crop: np.ndarray, landmarks68: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(fake_crop, mask): a self-blended pseudo-fake of a real (S, S, 3) uint8 RGB face crop.

    ``landmarks68`` are the crop's (68, 2) landmarks in crop pixels. ``mask`` is (S, S)
    float32 in [0, 1], the weight of the source in each pixel; where it is 0 the fake
    equals ``crop``. The same crop, landmarks and generator state give the same bytes.
    """
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 crop (H, W, 3), got {crop.dtype} {crop.shape}")
    points = np.asarray(landmarks68, np.float32).reshape(68, 2)
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks are not finite")
    target = np.ascontiguousarray(crop)
    source = move(retouch(target, rng), points, rng)
    mask = blend_mask(target.shape[:2], points, rng)
    mask *= float(BLEND_RATIOS[int(rng.integers(len(BLEND_RATIOS)))])
    weight = mask[..., None]
    fake = source.astype(np.float32) * weight + target.astype(np.float32) * (1.0 - weight)
    fake = np.clip(np.rint(fake), 0, 255).astype(np.uint8)
    return fake, mask


# ---------------------------------------------------------------------- source
def retouch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour change, then sharpen or blur, sometimes JPEG: the source's appearance."""
    out = shift_colour(image, rng)
    out = sharpen(out, rng) if rng.random() < 0.5 else downscale_blur(out, rng)
    if rng.random() < 0.3:
        out = jpeg(out, int(rng.integers(50, 96)))
    return out


def shift_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hue ±5 % of the circle, saturation and value ±10 %, brightness and contrast ±10 %,
    and with probability 0.3 per-channel shifts of up to ±20 levels."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)  # H in 0..179
    hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-9.0, 9.0), 180.0)
    hsv[..., 1] *= rng.uniform(0.9, 1.1)
    hsv[..., 2] *= rng.uniform(0.9, 1.1)
    out = cv2.cvtColor(np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    contrast, brightness = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1) * 255
    out = (out - out.mean()) * contrast + out.mean() + brightness
    if rng.random() < 0.3:
        out += rng.uniform(-20, 20, size=3).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def sharpen(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unsharp mask of strength 0.2-0.6."""
    amount = rng.uniform(0.2, 0.6)
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=1.0)
    return cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)


def downscale_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrink by 1.5-3x and enlarge back: the soft look of a generated face pasted in.

    (The authors shrink 2 or 4 times, on 380 px crops; 4 times blurs a 160 px face to a smudge.)
    """
    factor = rng.uniform(1.5, 3.0)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def move(image: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale about the face centre and translate a little (edges reflected)."""
    h, w = image.shape[:2]
    scale = rng.uniform(*SCALE_RANGE)
    centre = points.mean(axis=0)
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), 0.0, scale)
    matrix[:, 2] += (rng.uniform(-SHIFT_X, SHIFT_X) * w, rng.uniform(-SHIFT_Y, SHIFT_Y) * h)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


# ---------------------------------------------------------------------- mask
def blend_mask(shape: tuple[int, int], points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 in [0, 1]: deformed, soft-edged convex hull of the landmarks."""
    size = face_size(points)
    hull = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.rint(points).astype(np.int32)), 255)
    mask = elastic(hull, rng.uniform(0.0, ELASTIC_MAX) * size, ELASTIC_SMOOTHNESS * size, rng)
    radius = int(round(rng.uniform(0.0, MORPH_MAX) * size))
    erode = rng.random() < 0.5  # drawn even for radius 0, so later draws never depend on the face's size
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.erode(mask, kernel) if erode else cv2.dilate(mask, kernel)
    mask = mask.astype(np.float32) / 255.0
    sigma = rng.uniform(*BLUR_SIGMA) * size
    k = 2 * _blur_radius(sigma) + 1
    mask = cv2.GaussianBlur(mask, (k, k), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT)
    peak = float(mask.max())
    return (mask / peak if peak > 0 else mask).astype(np.float32)


def elastic(mask: np.ndarray, amplitude: float, smoothness: float, rng: np.random.Generator) -> np.ndarray:
    """Warp by a smooth random displacement field whose largest shift is ``amplitude`` px."""
    h, w = mask.shape
    fields = []
    for _ in range(2):
        noise = rng.uniform(-1.0, 1.0, size=(h, w)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(smoothness, 0.5))
        fields.append(noise)
    peak = max(float(np.abs(f).max()) for f in fields)
    if peak == 0.0 or amplitude <= 0.0:
        return mask
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x + fields[0] * (amplitude / peak)
    map_y = grid_y + fields[1] * (amplitude / peak)
    return cv2.remap(mask, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _blur_radius(sigma: float) -> int:
    return max(1, int(np.ceil(3.0 * sigma)))
