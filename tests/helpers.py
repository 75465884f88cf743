"""What several test files make: clips of a face, tiny stores, damaged segments, and the figures
the bundled default model gives. Plain functions (the fixtures are in conftest.py); import them
with `from tests.helpers import ...`, never from another test file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from deepfake_cli.data.store import Faces, Frames, Store, VideoEntry

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # the research data, when present (tests that need it skip otherwise)

ASTRONAUT = ROOT / "examples" / "astronaut.mp4"
# What the bundled default model says of examples/astronaut.mp4: the only place to change when the default changes.
ASTRONAUT_VERDICT = "fake"  # a real studio portrait: the default's known failure (README, "The default model")
ASTRONAUT_PROBABILITY = 0.8974377026813017
ASTRONAUT_THRESHOLD = 0.6063122406702401
DEFAULT_MODEL_SHA256 = "eae285dc32d319dad67db0b80e0e34d5f34ed28bcefde29a776c6161efc2ad39"  # sha256sum *.weights.h5 | sha256sum
DEFAULT_MODEL_WEIGHTS = ["cnn.weights.h5"]  # the weights files it serves
DEFAULT_MODEL_HELD_OUT = "0.814"  # a figure its card's held-out section gives
ASTRONAUT_FACES = 75  # 3 windows of 25 faces
ASTRONAUT_JUDGED = f"{ASTRONAUT_FACES} faces in 3 windows of 50 frames (2.0 s)"  # predict's judged_summary


def shared_data(*parts: str) -> Path:
    """DATA/parts, or skip the test when the shared research data is not there."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} not present")
    return path


# ---------------------------------------------------------------------- videos of a face
def face_frames(n: int, size: int, shift: int = 0) -> list[np.ndarray]:
    """BGR frames of the astronaut's face (skimage), moving one pixel a frame."""
    from skimage.data import astronaut

    image = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    return [cv2.resize(image[30 + shift:230 + shift, 120 + shift + t:320 + shift + t], (size, size))
            for t in range(n)]


def write_video(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v", fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_face_clip(path: Path, shift: int, fake: bool, frames: int = 6, size: int = 200) -> Path:
    """A short mp4v clip of the astronaut's face; "fake" clips get a blocky, re-quantised face (the
    middle half of each side, from 12 x 12 pixels)."""
    clip = face_frames(frames, size, shift)
    if fake:
        lo, hi = size // 4, 3 * size // 4
        for frame in clip:
            small = cv2.resize(frame[lo:hi, lo:hi], (12, 12), interpolation=cv2.INTER_AREA)
            frame[lo:hi, lo:hi] = cv2.resize(small, (hi - lo, hi - lo), interpolation=cv2.INTER_NEAREST)
    return write_video(path, clip)


# ---------------------------------------------------------------------- store contents
def video_entry(vid: str = "v1", **kw) -> VideoEntry:
    """A train-split fake video's entry; keywords override or add fields."""
    return VideoEntry(video_id=vid, path=f"/videos/{vid}.mp4", **{"label": "fake", "split": "train", **kw})


def tiny_frames(n: int = 3, h: int = 8, w: int = 10) -> Frames:
    """n random frames (seeded), stored as frames 0, 2, 4, ..."""
    rng = np.random.default_rng(0)
    return Frames(np.arange(n, dtype=np.int64) * 2, rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8))


def tiny_faces(n: int = 3, size: int = 16) -> Faces:
    """n grey crops of frames 0..n-1, frame 9 missing."""
    return Faces(
        crops=np.full((n, size, size, 3), 7, np.uint8),
        frame_indices=np.arange(n),
        boxes=np.zeros((n, 4)),
        landmarks=np.zeros((n, 5, 2)),
        scores=np.ones(n),
        track_ids=np.zeros(n),
        missing_frames=np.array([9]),
        settings={"size": size, "align": True},
    )


def synthetic_faces(rng: np.random.Generator, fake: bool, n: int, size: int) -> np.ndarray:
    """Noise crops; fakes carry a bright square in the middle, which a CNN learns in a few epochs."""
    crops = rng.integers(40, 120, size=(n, size, size, 3)).astype(np.int32)
    if fake:
        lo, hi = size // 4, 3 * size // 4
        crops[:, lo:hi, lo:hi] += 110
    return np.clip(crops, 0, 255).astype(np.uint8)


def face_points(size: int) -> np.ndarray:
    """68 points on and inside an ellipse in the middle of a crop: a stand-in face."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    radius = np.where(np.arange(68) < 27, 1.0, 0.5)[:, None]  # jaw and brows outside, the rest inside
    unit = np.stack([0.3 * np.cos(t), 0.36 * np.sin(t)], axis=1) * radius
    return ((unit + 0.5) * size).astype(np.float32)


def synthetic_store(path: Path, n_videos: int = 16, n_val: int = 6, frames: int = 6, size: int = 32,
                    seed: int = 0, landmarks68: bool = True) -> Path:
    """A store of cropped videos v000.. alternating real/fake (two a group: g0 holds v000 and
    v001), ``frames`` synthetic faces each (with 68 stand-in landmarks unless told otherwise);
    the last ``n_val`` are the val split, the rest train."""
    rng = np.random.default_rng(seed)
    with Store.open(path, write=True) as store:
        for i in range(n_videos):
            vid, label = f"v{i:03d}", ("fake" if i % 2 else "real")
            entry = VideoEntry(video_id=vid, path=f"{vid}.mp4", label=label, group=f"g{i // 2}",
                               split="val" if i >= n_videos - n_val else "train", fpv=frames,
                               sampling="uniform", dataset="synthetic")
            store.write_frames(entry, Frames(np.arange(frames, dtype=np.int64), np.zeros((frames, 2, 2, 3), np.uint8)))
            store.write_faces(vid, Faces(
                crops=synthetic_faces(rng, label == "fake", frames, size),
                frame_indices=np.arange(frames, dtype=np.int64), boxes=np.zeros((frames, 4)),
                landmarks=np.zeros((frames, 5, 2)), scores=np.ones(frames), track_ids=np.zeros(frames),
                missing_frames=np.zeros(0),
                settings={"size": size, "align": True, "margin": 0.3, "detector": "mtcnn", "detect_max_side": 640},
                landmarks68=np.repeat(face_points(size)[None], frames, 0) if landmarks68 else None))
    return path


def damage_array(store_path: Path, video_id: str, stage: str, array: str) -> None:
    """Random bytes over the stored data of one array (its first chunk), the file's length unchanged."""
    segment = store_path.with_name(store_path.name + ".d") / f"{video_id}.{stage}.h5"
    with h5py.File(segment, "r") as f:
        dataset = f[array]
        assert dataset.fletcher32, f"{array} has no checksum"
        info = dataset.id.get_chunk_info(0)
        offset, size = info.byte_offset, info.size
    data = bytearray(segment.read_bytes())
    noise = np.random.default_rng(3).integers(0, 256, min(size, 64), dtype=np.uint8).tobytes()
    data[offset:offset + len(noise)] = noise
    segment.write_bytes(bytes(data))
