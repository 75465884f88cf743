"""The models, built in code from a few settings: the frame CNN and the sequence BiLSTM.

Nothing here touches the disk; deepfake_cli.nets.bundle rebuilds these from a bundle's
config.json and loads only their weights. Keras is imported when a model is built, so
reading a bundle's config needs no backend.
"""

from __future__ import annotations

import numpy as np

HEAD_LAYERS = ("features", "head_dropout", "score")  # the classifier head: trainable even when the backbone is frozen
# The BiLSTM's defaults, declared once: train-lstm's options (train/temporal.py, the CLI) and the
# settings train-cnn records before any LSTM is trained read these.
LSTM_UNITS = 128  # units of each direction
LSTM_DROPOUT = 0.3  # before the Dense(1, sigmoid) head
# Batch-norm momentum while fine-tuning with batch statistics. The Lite checkpoints use 0.99
# (TensorFlow's default): after one CPU epoch of ~100 steps the moving statistics are still
# 37% ImageNet's, so validation runs with statistics the weights were not trained with.
# 0.9 (PyTorch's default) forgets ImageNet's within ~40 steps. Inference is unaffected.
FINE_TUNE_BN_MOMENTUM = 0.9


def build_classifier(backbone: str, input_size: int, weights: str = "none", dropout: float = 0.2):
    """(classifier, feature_model) sharing layers: image -> P(fake), image -> [features, P(fake)]."""
    import keras

    from deepfake_cli.nets.backbones import build_feature_extractor

    extractor = build_feature_extractor(backbone, weights=weights, input_size=input_size)
    image = keras.Input((input_size, input_size, 3), name="face")
    features = keras.layers.Activation("linear", dtype="float32", name="features")(extractor(image))
    hidden = keras.layers.Dropout(dropout, name="head_dropout")(features)
    score = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="score")(hidden)
    classifier = keras.Model(image, score, name="dfd_cnn")
    feature_model = keras.Model(image, [features, score], name="dfd_cnn_features")
    return classifier, feature_model


def iter_layers(model):
    """Every layer of a model, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from iter_layers(layer)


def set_backbone_trainable(model, trainable: bool, freeze_batchnorm: bool = False) -> None:
    """Freeze or unfreeze everything but the classifier head.

    With ``freeze_batchnorm`` an unfrozen backbone keeps its batch-norm layers frozen, which
    in Keras also runs them in inference mode (pretrained statistics stay as they are);
    without it they train with batch statistics and :data:`FINE_TUNE_BN_MOMENTUM`.
    """
    import keras

    for layer in model.layers:
        layer.trainable = trainable or layer.name in HEAD_LAYERS
    if not trainable:
        return
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            if freeze_batchnorm:
                layer.trainable = False
            else:
                layer.momentum = FINE_TUNE_BN_MOMENTUM


def build_lstm_model(seq_len: int, feature_dim: int, units: int = LSTM_UNITS, dropout: float = LSTM_DROPOUT):
    """(seq_len, D) -> Masking(0) -> BiLSTM(units) -> Dropout -> Dense(1, sigmoid)."""
    import keras

    sequence = keras.Input((seq_len, feature_dim), name="features")
    x = keras.layers.Masking(mask_value=0.0, name="mask")(sequence)
    x = keras.layers.Bidirectional(keras.layers.LSTM(units), name="bilstm")(x)
    x = keras.layers.Dropout(dropout, name="lstm_dropout")(x)
    score = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="score")(x)
    return keras.Model(sequence, score, name="dfd_lstm")


def pad_sequence(features: np.ndarray, seq_len: int) -> np.ndarray:
    """(seq_len, D): the first ``seq_len`` rows, zero-padded at the end (masked by the LSTM)."""
    features = np.asarray(features, np.float32)
    out = np.zeros((seq_len, features.shape[-1]), np.float32)
    n = min(seq_len, len(features))
    out[:n] = features[:n]
    return out
