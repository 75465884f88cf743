"""Face crops in, a calibrated video probability out: the one rule every stage shares.

    face crops (any square size)
      -> model input: resized to the bundle's input size (faces.resize_face), float32 in [0, 255]
      -> CNN batches of a few fixed sizes (zero-padded: at most six input shapes, each traced once)
      -> per-frame features (n, D) and scores P(fake) (n,); with the config's test_time_flip,
         the mean of those of the face and of its mirror image
      -> video score: the BiLSTM over the ordered features, else the config's video_aggregation
      -> calibrated probability: temperature scaling, sigmoid(logit(p) / T)

`predict` runs all of it on a clip; `export-features` stores the per-frame part; `calibrate`
fits T on the video scores of the validation videos; `evaluate` reports the video scores and
calibrated probabilities of stored videos. Because they all call this module, the figure
`evaluate` measures is the one `predict` serves (tests/test_scoring.py holds them to it).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from deepfake_cli.nets.bundle import Bundle
from deepfake_cli.errors import EXIT_BAD_SCORE, DfdError
from deepfake_cli.faces.face_crops import resize_face
from deepfake_cli.scoring.metrics import aggregate_video_scores, apply_temperature, called_fake, logit
from deepfake_cli.nets.models import pad_sequence

CNN_BATCH = 32  # faces per CNN call


class NonFiniteScoreError(DfdError):
    """The model gave NaN or inf: no verdict can be drawn from it (damaged weights, a diverged run)."""

    exit_code = EXIT_BAD_SCORE


def require_finite(values, what: str, bundle: Bundle) -> None:
    """Raise NonFiniteScoreError unless every value is finite (a NaN never becomes a verdict)."""
    if not np.all(np.isfinite(values)):
        raise NonFiniteScoreError(f"model {bundle.path} gave a non-finite {what} (NaN or inf): its weights are "
                                  "damaged or its training diverged; restore or retrain the bundle")


def model_input(crops, input_size: int) -> np.ndarray:
    """(n, S, S, 3) float32: face crops resized to the model's input size (pixel values kept)."""
    if not len(crops):
        return np.zeros((0, input_size, input_size, 3), np.float32)
    return np.stack([resize_face(c, input_size) for c in crops]).astype(np.float32)


def padded_rows(count: int, batch_size: int) -> int:
    """Rows of the batch that holds ``count`` faces: ``batch_size``, or for fewer faces the next
    power of two. The backend then sees at most log2(batch_size) + 1 input shapes (traced once
    each per process), and a single image costs one row of work, not ``batch_size``."""
    if count >= batch_size:
        return batch_size
    return min(batch_size, 1 << max(0, count - 1).bit_length())


def fixed_batches(crops: np.ndarray, input_size: int, batch_size: int,
                  pad: bool = True) -> Iterator[tuple[np.ndarray, int]]:
    """(batch, rows used): model inputs in batches of ``batch_size`` rows (fewer faces: the next
    power of two, see :func:`padded_rows`), zero-padded, so the backend sees few input shapes.
    ``pad=False`` (a model that takes any batch size without a new trace, like onnxruntime's)
    leaves the last batch as short as it is."""
    for start in range(0, len(crops), batch_size):
        chunk = crops[start:start + batch_size]
        rows = padded_rows(len(chunk), batch_size) if pad else len(chunk)
        batch = np.zeros((rows, input_size, input_size, 3), np.float32)
        batch[:len(chunk)] = model_input(chunk, input_size)
        yield batch, len(chunk)


def frame_outputs(feature_model, crops: np.ndarray, input_size: int,
                  batch_size: int = CNN_BATCH, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, D) float32, scores (n,) float32) of ``n`` face crops under a feature model
    (image -> [features, P(fake)], from Bundle.build_feature_model); with ``flip``, the mean
    of the outputs of each face and of its horizontal mirror (test-time augmentation)."""
    if not len(crops):
        raise ValueError("no face crops to score")
    features, scores = [], []
    pad = getattr(feature_model, "needs_fixed_shapes", True)
    for batch, used in fixed_batches(crops, input_size, batch_size, pad):
        if flip:  # faces and mirror images in one call: half the calls, same shapes for every batch
            rows = len(batch)
            f, s = _batch_outputs(feature_model, np.concatenate([batch, batch[:, :, ::-1]]))
            f, s = (f[:rows] + f[rows:]) / 2, (s[:rows] + s[rows:]) / 2
        else:
            f, s = _batch_outputs(feature_model, batch)
        features.append(f[:used])
        scores.append(s[:used])
    return np.concatenate(features), np.concatenate(scores)


def _batch_outputs(feature_model, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f, s = feature_model.predict_on_batch(batch)
    return np.asarray(f, np.float32), np.asarray(s, np.float32).reshape(-1)


def lstm_probability(lstm, features: np.ndarray, seq_len: int) -> float:
    """P(fake) of one ordered (n, D) sequence under a built LSTM model (uncalibrated)."""
    if len(features) == 0:
        raise ValueError("cannot score an empty feature sequence")
    batch = pad_sequence(features, seq_len)[None]
    return float(np.asarray(lstm.predict_on_batch(batch)).reshape(-1)[0])


def calibrate(probability: float, temperature: float) -> float:
    """Temperature scaling of a probability: sigmoid(logit(p) / T)."""
    return float(apply_temperature(logit(probability), temperature))


def verdict(probability: float, threshold: float, uncertain: list | tuple | None = None) -> str:
    """'fake' when the calibrated probability is at or above the threshold, else 'real'; with an
    ``uncertain`` band [lo, hi) (a bundle's, fitted out of fold), 'uncertain' inside it."""
    if uncertain and len(uncertain) == 2 and uncertain[0] <= probability < uncertain[1]:
        return "uncertain"
    return "fake" if called_fake(probability, threshold) else "real"


class Scorer:
    """A bundle's models and the rule that turns faces into its video probability.

    ``cnn=False`` / ``lstm=False`` skip building a model the caller does not need (scoring
    stored features needs no CNN; exporting features needs no LSTM). The LSTM is used when
    the bundle's config says it is trained (a missing or damaged LSTM file is then an error,
    never a fallback to the CNN). Any NaN or inf it computes is a NonFiniteScoreError.
    ``runtime="onnx"`` runs the bundle's ONNX export of the same models with onnxruntime
    (deepfake_cli.scoring.onnx_serving; the caller has checked it is current), everything else alike.
    """

    def __init__(self, bundle: Bundle, *, cnn: bool = True, lstm: bool = True, batch_size: int = CNN_BATCH,
                 runtime: str = "keras"):
        self.bundle = bundle
        self.config = bundle.config
        self.batch_size = batch_size
        self.runtime = runtime
        if runtime == "onnx":
            from deepfake_cli.scoring.onnx_serving import onnx_feature_model, onnx_lstm

            build_cnn, build_lstm = (lambda: onnx_feature_model(bundle)), (lambda: onnx_lstm(bundle))
        else:
            build_cnn, build_lstm = bundle.build_feature_model, bundle.build_lstm
        self.feature_model = build_cnn() if cnn else None
        self.lstm = build_lstm() if lstm and bundle.has_lstm else None

    def frames(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, D), scores (n,)) of face crops of any square size."""
        if self.feature_model is None:
            raise ValueError("this Scorer was made without its CNN (cnn=False)")
        features, scores = frame_outputs(self.feature_model, crops, int(self.config.input_size), self.batch_size,
                                         flip=bool(self.config.test_time_flip))
        require_finite(features, "face feature", self.bundle)
        require_finite(scores, "frame score", self.bundle)
        return features, scores

    def cnn_score(self, scores: np.ndarray) -> float:
        """The CNN's own video score: its frame scores aggregated as the config says."""
        return aggregate_video_scores(scores, self.config.video_aggregation)

    def lstm_score(self, features: np.ndarray) -> float:
        """The BiLSTM's video score of an ordered feature sequence (needs a trained LSTM)."""
        if self.lstm is None:
            raise ValueError(f"bundle {self.bundle.path} has no trained LSTM")
        return lstm_probability(self.lstm, features, self.bundle.seq_len)

    def video_score(self, features: np.ndarray, scores: np.ndarray) -> float:
        """The uncalibrated video score: the LSTM's when there is one, else the CNN's."""
        score = self.lstm_score(features) if self.lstm is not None else self.cnn_score(scores)
        require_finite(score, "video score", self.bundle)
        return score

    def probability(self, features: np.ndarray, scores: np.ndarray) -> float:
        """Calibrated P(fake) of a video: what `predict` reports."""
        return self.calibrated(self.video_score(features, scores))

    def calibrated(self, video_score: float) -> float:
        """A video score under the bundle's temperature."""
        return calibrate(video_score, float(self.config.temperature))
