"""How train-cnn validates an epoch, whichever engine trains: frame-level AUC and loss, and the
video-level AUC of the mean frame score, of the validation faces scored as the bundle serves them."""

from __future__ import annotations

import keras
import numpy as np

from deepfake_cli.scoring.metrics import log_loss, safe_auc
from deepfake_cli.train.face_dataset import FaceDataset


def video_means(video_ids: list[str], scores: np.ndarray) -> dict[str, float]:
    """Mean frame score per video."""
    sums: dict[str, list[float]] = {}
    for vid, s in zip(video_ids, scores):
        sums.setdefault(vid, []).append(float(s))
    return {vid: float(np.mean(v)) for vid, v in sums.items()}


def face_scores(model, dataset: FaceDataset, flip: bool = False) -> np.ndarray:
    """P(fake) of every face of ``dataset``, in its order; with ``flip``, the mean over each face and
    its mirror image, as the bundle serves it (scoring.frame_outputs with test_time_flip), in one
    pass over the faces."""
    if flip:
        images = keras.Input(model.input_shape[1:])
        model = keras.Model(images, (model(images) + model(keras.ops.flip(images, axis=2))) / 2)
    return np.asarray(model.predict(dataset, verbose=0), np.float32).reshape(-1)


def evaluate_faces(model, dataset: FaceDataset, flip: bool = False) -> dict:
    """Frame-level val AUC and loss, and video-level AUC of the mean frame score; the faces are
    scored as the bundle will serve them (``flip``: with their mirror images)."""
    return face_metrics(dataset, face_scores(model, dataset, flip))


def face_metrics(dataset: FaceDataset, scores: np.ndarray) -> dict:
    """evaluate_faces' metrics from the scores of ``dataset``'s faces in its order (either engine)."""
    items = dataset.ordered_items()
    labels = np.array([dataset.labels[vid] for vid, _ in items], np.float32)
    per_video = video_means([vid for vid, _ in items], scores)
    video_labels = np.array([dataset.labels[v] for v in per_video], np.float32)
    return {"val_auc": safe_auc(labels, scores), "val_loss": log_loss(labels, scores),
            "val_video_auc": safe_auc(video_labels, np.array(list(per_video.values())))}
