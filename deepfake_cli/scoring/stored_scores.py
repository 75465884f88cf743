"""Scores of stored videos under a bundle, exactly as `predict` would compute them.

Read from the features `export-features` stored when they are current (the same CNN weights,
the same test-time flip), else computed now from the stored faces (or, for a frame model,
frames) through the same :class:`~deepfake_cli.scoring.scorer.Scorer`. Calibration, ensemble fitting
and ensemble evaluation take their scores from here; `evaluate` and `train-lstm`, which read the
stored features themselves, refuse stale ones (:func:`check_features_current`).

A video extracted in several windows (extract --windows) is scored as `predict` scores the
clip: each window's faces on their own, the windows' calibrated probabilities aggregated
(deepfake_cli.scoring.windows, the code predict combines its windows with).
"""

from __future__ import annotations

import numpy as np

from deepfake_cli.errors import DfdError
from deepfake_cli.nets.bundle import Bundle
from deepfake_cli.files import file_sha256
from deepfake_cli.data.inputs import frames_scored, has_images, scored_role, stored_images
from deepfake_cli.scoring.scorer import Scorer
from deepfake_cli.scoring.windows import windowed_probability, windowed_score
from deepfake_cli.data.store import Store


def export_settings(bundle: Bundle) -> dict:
    """What the stored features are (saved with every feature segment)."""
    c = bundle.config
    return {"bundle": c.name, "backbone": c.backbone, "input": c.input, "input_size": c.input_size,
            "feature_dim": c.feature_dim, "feature_layer": c.feature_layer,
            "score": "P(fake), uncalibrated", "cnn_sha256": file_sha256(bundle.cnn_weights),
            "test_time_flip": bool(c.test_time_flip)}


def same_features(stored: dict, wanted: dict) -> bool:
    """Whether stored features were computed by the same CNN weights, scored the same way, on the
    same frames (features stored before the frames were recorded are of the --fpv ones)."""
    return (stored.get("cnn_sha256") == wanted["cnn_sha256"]
            and bool(stored.get("test_time_flip", False)) == wanted["test_time_flip"]
            and stored.get("frames", "sequence") == wanted.get("frames", "sequence"))


def bundle_role(store: Store, video_id: str, bundle: Bundle) -> int:
    """The stored frames (store.ROLE_*) of a video that the bundle scores, as predict samples them."""
    return scored_role(store.entry(video_id), int(bundle.config.fpv or 0), bundle.config.sampling)


def video_export_settings(store: Store, video_id: str, bundle: Bundle, settings: dict | None = None) -> dict:
    """export_settings of the bundle for one video: which of its stored frames are scored."""
    return (settings or export_settings(bundle)) | {"frames": frames_scored(bundle_role(store, video_id, bundle))}


class StoredWindowsError(DfdError):
    """A video's stored faces and its features do not line up window by window."""


def stored_windows(store: Store, video_id: str, rows: int) -> np.ndarray | None:
    """The window of each of a video's ``rows`` scored faces, in the frame order its images and
    features are read in (inputs.stored_images), or None for faces of one window (every store
    made before extract --windows)."""
    found = store.face_windows(video_id) if store.has(video_id, "faces") else None
    if found is None:
        return None
    indices, windows = found
    ordered = windows[np.argsort(indices, kind="stable")]
    if len(ordered) != rows:
        raise StoredWindowsError(f"{store.entry(video_id).path}: {len(ordered)} faces stored in windows but {rows} "
                                 "scored: run `dfd crop --force` and `dfd export-features --force` again")
    return ordered


class StaleFeaturesError(DfdError):
    """Stored features were made by another CNN than the bundle's current one."""


def features_current(bundle: Bundle, stored: dict, wanted: dict | None = None) -> bool:
    """Whether stored features (their ``stored`` settings) are this bundle's: its current CNN
    weights, its test-time flip. A bundle without a CNN file (one trained on features made
    elsewhere) can only use them as they are. ``wanted``: export_settings(bundle), if known."""
    if not bundle.cnn_weights.is_file():
        return True
    return same_features(stored, wanted or export_settings(bundle))


def check_features_current(store: Store, bundle: Bundle, video_ids: list[str], model_name: str) -> None:
    """Raise StaleFeaturesError, in one line naming `dfd export-features`, when any of
    ``video_ids``' stored features of ``model_name`` were made by another CNN than the bundle's
    (retrained since): figures from them would be the old model's. Features stored under
    another name than the bundle's own are features made elsewhere on purpose: not checked."""
    if model_name != bundle.feature_model_name or not bundle.cnn_weights.is_file():
        return
    wanted = export_settings(bundle)
    stage = f"features.{model_name}"
    stale = [v for v in video_ids if store.has(v, stage)
             and not features_current(bundle, store.features_settings(v, model_name),
                                      video_export_settings(store, v, bundle, wanted))]
    if stale:
        raise StaleFeaturesError(
            f"{len(stale)} of {len(video_ids)} videos' features of {model_name!r} in {store.path} were made by "
            f"another CNN than the current {bundle.cnn_weights} (or with another test-time flip): run "
            f"`dfd export-features --model {bundle.path.name}` first")


class StoredScores:
    """Per-video scores of one bundle over a store; its models are built on first need."""

    def __init__(self, store: Store, bundle: Bundle):
        self.store, self.bundle = store, bundle
        self._settings: dict | None = None
        self._sequence: Scorer | None = None  # scores feature sequences (no CNN built)
        self._frames: Scorer | None = None  # computes features from images (no LSTM built)

    def frame_outputs(self, video_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(features (n, D), frame scores (n,)) of a video, or None when it has nothing to score."""
        name = self.bundle.feature_model_name
        store = self.store
        if store.has(video_id, f"features.{name}") and self._current(video_id, store.features_settings(video_id, name)):
            stored = store.read_features(video_id, name)
            return (stored.features, stored.scores) if len(stored.scores) else None
        kind = self.bundle.config.input
        if not has_images(store, video_id, kind):
            return None
        _, images = stored_images(store, video_id, kind, int(self.bundle.config.input_size),
                                  role=bundle_role(store, video_id, self.bundle))
        if not len(images):
            return None
        if self._frames is None:
            self._frames = Scorer(self.bundle, lstm=False)
        return self._frames.frames(images)

    def _current(self, video_id: str, stored: dict) -> bool:
        """Whether stored features are this bundle's (see :func:`features_current`)."""
        if self._settings is None and self.bundle.cnn_weights.is_file():
            self._settings = export_settings(self.bundle)
        wanted = None if self._settings is None else video_export_settings(self.store, video_id, self.bundle,
                                                                           self._settings)
        return features_current(self.bundle, stored, wanted)

    def _scorer(self) -> Scorer:
        if self._sequence is None:
            self._sequence = Scorer(self.bundle, cnn=False)
        return self._sequence

    def _windows(self, video_id: str, outputs: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:
        """The window of each scored face (a face model's faces cropped in windows), else None."""
        if self.bundle.config.input != "face":
            return None
        return stored_windows(self.store, video_id, len(outputs[1]))

    def video_score(self, video_id: str) -> float | None:
        """The uncalibrated video score (LSTM when trained, else the CNN's; a video stored in
        windows: its windows' scores aggregated), or None."""
        outputs = self.frame_outputs(video_id)
        return None if outputs is None else windowed_score(self._scorer(), *outputs, self._windows(video_id, outputs))

    def probability(self, video_id: str) -> float | None:
        """The calibrated P(fake) `predict` reports for the video, or None: its face sequence's,
        or (stored in windows) its windows' calibrated probabilities aggregated."""
        outputs = self.frame_outputs(video_id)
        if outputs is None:
            return None
        return windowed_probability(self._scorer(), *outputs, self._windows(video_id, outputs))
