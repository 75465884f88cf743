"""Where the CNN looked: class activation maps (CAM) of its fake score, drawn over the faces.

Every dfd CNN is a backbone ending in global average pooling, then one linear unit (the
"score" layer, sigmoid). Its logit is therefore the spatial mean of ``maps @ w + b``, where
``maps`` are the backbone's last feature maps (before pooling) and ``w``, ``b`` the head's
weights: that map (Zhou et al., CVPR 2016) decomposes the logit exactly, needs no gradient,
and runs on every Keras backend. Positive values push towards "fake", negative towards
"real". Grad-CAM is not needed for these heads; a model of another shape is refused.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deepfake_cli.errors import DfdError
from deepfake_cli.scoring.scorer import model_input

HEAD_LAYER = "score"
# Colour scale of the overlays, in logit units: +-CAM_RANGE maps to the ends of the colour map
# (P(fake) 0.05 .. 0.95 for one position), so the maps of two faces or clips compare directly.
CAM_RANGE = 3.0


class HeatmapError(DfdError):
    """The model's shape has no class activation map (no pooled backbone under a linear head)."""


class ActivationMapper:
    """Face crops -> (n, S, S) CAM logit maps, from a classifier or feature model of a bundle."""

    def __init__(self, model, input_size: int):
        import keras

        self.input_size = int(input_size)
        extractors = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        pools = [layer for layer in (extractors[-1].layers if extractors else [])
                 if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
        try:
            head = model.get_layer(HEAD_LAYER)
        except ValueError:
            head = None
        if not pools or head is None or len(head.get_weights()) != 2:
            raise HeatmapError(f"model {model.name!r} is not a pooled backbone under one linear '{HEAD_LAYER}' "
                               "unit: class activation maps do not apply to it")
        self.maps = keras.Model(extractors[-1].inputs, pools[-1].input, name="cam_maps")
        kernel, bias = head.get_weights()
        self.weights, self.bias = kernel[:, 0].astype(np.float32), float(bias[0])

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """(n, S, S) float32: per-pixel logit contributions, S the crops' size (mean = the face's logit)."""
        x = model_input(crops, self.input_size)
        maps = np.asarray(self.maps.predict_on_batch(x), np.float32)  # (n, h, w, C)
        cams = maps @ self.weights + self.bias  # (n, h, w)
        size = crops.shape[1]
        return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in cams])


def overlay(crop: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the crop under its map in the JET colours (red: towards fake, blue: towards real)."""
    level = np.clip((cam / CAM_RANGE + 1) / 2, 0, 1)
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return cv2.addWeighted(crop.astype(np.uint8), 1 - alpha, colours, alpha, 0)


def write_heatmaps(out_dir: Path, stem: str, crops: np.ndarray, cams: np.ndarray, frame_indices,
                   scores) -> list[Path]:
    """One PNG per face (crop beside its overlay, frame and score in the name) and a strip of all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    pairs = []
    for crop, cam, frame, score in zip(crops, cams, frame_indices, scores):
        pair = np.concatenate([crop, overlay(crop, cam)], axis=1)
        pairs.append(pair)
        path = out_dir / f"{stem}_frame{int(frame):05d}_p{float(score):.2f}.png"
        cv2.imwrite(str(path), cv2.cvtColor(pair, cv2.COLOR_RGB2BGR))
        written.append(path)
    strip = out_dir / f"{stem}_heatmaps.png"
    cv2.imwrite(str(strip), cv2.cvtColor(grid(pairs), cv2.COLOR_RGB2BGR))
    return written + [strip]


def grid(images: list[np.ndarray], columns: int = 5) -> np.ndarray:
    """Same-sized images in rows of ``columns`` (the last row padded with black)."""
    blank = np.zeros_like(images[0])
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    return np.concatenate([np.concatenate(r + [blank] * (columns - len(r)), axis=1) for r in rows], axis=0)
