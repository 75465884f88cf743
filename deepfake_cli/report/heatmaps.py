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


class OnnxActivationMapper:
    """The same maps from the bundle's ``cam.onnx`` (`dfd export-onnx` writes it: the backbone up
    to its last feature maps, then the head's unit at every position), on onnxruntime: no
    TensorFlow. :func:`activation_mapper` picks it when the file is current."""

    def __init__(self, path: Path, input_size: int):
        from deepfake_cli.scoring.onnx_serving import OnnxModel

        self.model, self.input_size = OnnxModel(path), int(input_size)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        cams = np.asarray(self.model.predict_on_batch(model_input(crops, self.input_size)), np.float32)
        cams = cams.reshape(cams.shape[:3])  # (n, h, w, 1) -> (n, h, w)
        size = crops.shape[1]
        return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in cams])


def activation_mapper(bundle, keras_model=None):
    """The bundle's class activation mapper: on onnxruntime when its ``cam.onnx`` is current, else
    from its Keras model (``keras_model``, or built from the bundle: loads TensorFlow)."""
    from deepfake_cli.scoring.onnx_serving import CAM_ONNX, onnx_problem

    if not onnx_problem(bundle, [CAM_ONNX]):
        return OnnxActivationMapper(bundle.path / CAM_ONNX, int(bundle.config.input_size))
    return ActivationMapper(keras_model if keras_model is not None else bundle.build_feature_model(),
                            int(bundle.config.input_size))


def diverging_colours(level: np.ndarray) -> np.ndarray:
    """RGB uint8 of ``level`` in [0, 1]: blue (0, towards real) through white (0.5) to red (1, towards fake)."""
    t = np.clip(level, 0, 1)[..., None] * 2 - 1  # -1 .. 1
    blue, white, red = np.array([33, 102, 172.]), np.array([247, 247, 247.]), np.array([178, 24, 43.])
    colours = np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t)
    return colours.astype(np.uint8)


def overlay(crop: np.ndarray, cam: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """RGB uint8: the crop under its map in a diverging scale (red: towards fake, blue: towards
    real), each pixel tinted in proportion to how much it pushes the score: where the map is
    near 0 (background, most of a face) the crop shows as it is."""
    signed = np.clip(cam / CAM_RANGE, -1, 1)
    colours = diverging_colours((signed + 1) / 2).astype(np.float32)
    weight = (alpha * np.abs(signed))[..., None]
    return (crop.astype(np.float32) * (1 - weight) + colours * weight).round().astype(np.uint8)


def colour_bar(width: int = 360, height: int = 14) -> np.ndarray:
    """RGB uint8 strip of the overlays' scale, from -CAM_RANGE (blue, left) to +CAM_RANGE (red, right)."""
    level = np.repeat(np.linspace(0, 1, width)[None], height, axis=0)
    return diverging_colours(level)


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
        write_png(path, pair)
        written.append(path)
    strip = out_dir / f"{stem}_heatmaps.png"
    write_png(strip, grid(pairs))
    return written + [strip]


def write_png(path: Path, image_rgb: np.ndarray) -> None:
    """An RGB image as PNG; a HeatmapError naming the file when it cannot be written (OpenCV
    returns False rather than raising)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise HeatmapError(f"cannot write {path} (name too long, folder not writable, or disk full)")


def grid(images: list[np.ndarray], columns: int = 5) -> np.ndarray:
    """Same-sized images in rows of ``columns`` (the last row padded with black)."""
    blank = np.zeros_like(images[0])
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    return np.concatenate([np.concatenate(r + [blank] * (columns - len(r)), axis=1) for r in rows], axis=0)
