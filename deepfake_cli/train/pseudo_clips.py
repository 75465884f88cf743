"""Pseudo-fake clips for the LSTM: ``dfd train-lstm --pseudo-fakes sbi --pseudo-ratio R``.

The CNN learns from self-blended faces one at a time (deepfake_cli.train.pseudo). The LSTM reads a
clip's ordered faces, so its pseudo-fakes are whole clips: each real training clip becomes,
with probability R, a fake made of its own faces, every one blended with the *same* blend
(the same colour change, sharpening or blur, JPEG, shift, mask deformation and ratio: each
face's blend starts from one generator state) inside that face's own landmark hull, so the
mask follows the face from frame to frame as a pasted face does. A face image (a one-face
"clip") becomes a one-face pseudo-fake.

Their CNN features come from the bundle's :class:`deepfake_cli.scoring.scorer.Scorer`, the code that
scores faces in export-features, evaluate and predict. They are made once per run, from the
seed and the clip's id only (not from the order of the clips), so a resumed run trains on the
same ones. They are training clips only: validation, calibration and evaluation see real
clips and labelled fakes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from deepfake_cli.progress import Reporter
from deepfake_cli.train.pseudo import require_landmarks68
from deepfake_cli.train.sbi import self_blend
from deepfake_cli.scoring.scorer import Scorer
from deepfake_cli.data.store import ROLE_SEQUENCE, Store

PREFIX = "sbi:"  # a pseudo-fake clip's key: PREFIX + the id of the real clip it was made from


def clip_seed(seed: int, video_id: str) -> int:
    """The generator seed of one clip's draw and blend: from the run's seed and the clip's id."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{video_id}".encode()).digest()[:8], "little")


def blend_clip(crops: np.ndarray, landmarks68: np.ndarray, seed: int) -> np.ndarray:
    """(n, S, S, 3) uint8: every face of a clip self-blended with the same blend parameters."""
    return np.stack([self_blend(crop, points, np.random.default_rng(seed))[0]
                     for crop, points in zip(crops, landmarks68)])


def chosen_clips(video_ids: list[str], labels: dict[str, int], ratio: float, seed: int) -> list[str]:
    """The real clips that become pseudo-fakes: each with probability ``ratio``, by its own seed."""
    return [vid for vid in video_ids
            if labels[vid] == 0 and np.random.default_rng(clip_seed(seed, vid)).random() < ratio]


def pseudo_fake_clips(store: Store, scorer: Scorer, video_ids: list[str], labels: dict[str, int],
                      ratio: float, seed: int, reporter: Reporter | None = None) -> dict[str, np.ndarray]:
    """{PREFIX + video id: (n, D) CNN features in frame order} of the pseudo-fake clips.

    Raises StoreError (one line: re-run `dfd crop --force`) before any CNN work when a chosen
    clip's faces have no 68-point landmarks.
    """
    chosen = chosen_clips(video_ids, labels, ratio, seed)
    require_landmarks68(store, chosen)
    reporter = reporter or Reporter()
    reporter.start(len(chosen), "pseudo-fake clips")
    clips = {}
    for vid in chosen:
        faces = store.read_faces(vid, ROLE_SEQUENCE)  # the clip the LSTM reads
        order = np.argsort(faces.frame_indices, kind="stable")
        blend_seed = int(np.random.default_rng(clip_seed(seed, vid)).integers(2 ** 63))
        fakes = blend_clip(faces.crops[order], faces.landmarks68[order], blend_seed)
        clips[PREFIX + vid] = scorer.frames(fakes)[0]
        reporter.advance(vid)
    reporter.finish()
    return clips
