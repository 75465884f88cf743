"""What a model looks at: the face crops of a video, or its whole frames.

A bundle's config says which (``input``: ``face`` or ``frame``). A face model reads the
aligned crops `dfd crop` stores; a frame model reads the stored frames, letterboxed to a
square (scaled to fit, padded with black, never stretched), so it needs no face detector and
sees what happens outside the face too (FaceForensics++'s full-image models). Training
(face_dataset), feature export (temporal), ensemble validation and serving (predict) all take
their images from here, so a frame model sees the same letterboxed frames everywhere.
"""

from __future__ import annotations

import cv2
import numpy as np

from deepfake_cli.data.store import ROLE_SEQUENCE, ROLE_SPREAD, Store

STAGE = {"face": "faces", "frame": "frames"}  # the store stage each of bundle.INPUTS reads


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8: ``image`` scaled so its longer side is ``size``, centred on black."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=interp)
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top:top + new_h, left:left + new_w] = resized
    return out


def letterboxed(frames, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8: every frame letterboxed."""
    if not len(frames):
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([letterbox(f, size) for f in frames])


def scored_role(entry, fpv: int, sampling: str) -> int:
    """The stored role (store.ROLE_*) whose frames are the ones a model sampling ``fpv`` frames
    by ``sampling`` scores in a clip, as `predict` picks them (video.choose_indices): the
    --spread frames for a model that scores frames spread over the whole clip ("uniform",
    ``fpv`` = the store's --spread) unless the --fpv frames are those already; else the --fpv
    frames (what every model scored before)."""
    if sampling == "uniform" and entry.spread == fpv and fpv > 0 and not (entry.sampling == "uniform"
                                                                           and entry.fpv == fpv):
        return ROLE_SPREAD
    return ROLE_SEQUENCE


def frames_scored(role: int) -> str:
    """How features' settings name the stored frames they were computed on."""
    return "spread" if role == ROLE_SPREAD else "sequence"


def has_images(store: Store, video_id: str, kind: str) -> bool:
    """Whether the store holds what a ``kind`` model reads for this video."""
    return store.has(video_id, STAGE[kind])


def training_rows(store: Store, video_id: str, kind: str) -> np.ndarray:
    """The rows of a video's stored images that train-cnn draws from (one small read, no pixels):
    the frames extract spread over the video (--spread) when it stored some, else all."""
    roles = store.face_roles(video_id) if kind == "face" else store.frame_roles(video_id)
    return np.flatnonzero(roles & ROLE_SPREAD)


def stored_images(store: Store, video_id: str, kind: str, size: int,
                  role: int | None = ROLE_SEQUENCE) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, images) of a video in frame order: its face crops, or its frames
    letterboxed to ``size`` (face crops keep their stored size; scoring resizes them). By
    default the sequence a video is scored on (the --fpv sampled frames, not the --spread ones);
    ``role=None``: every stored image."""
    if kind == "face":
        faces = store.read_faces(video_id, role)
        indices, images = faces.frame_indices, faces.crops
    else:
        frames = store.read_frames(video_id, role)
        indices, images = frames.indices, frames.pixels
    order = np.argsort(indices, kind="stable")
    images = images[order]
    return indices[order], images if kind == "face" else letterboxed(images, size)
