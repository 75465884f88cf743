"""A clip already decoded, in memory: RGB frames sampled as a video file of those frames would be.

What :func:`deepfake_cli.data.video.sample_frames` gives for a file, :func:`sample_array` gives
for frames a caller holds (a stream, a camera, another decoder): the same
:class:`~deepfake_cli.data.video.VideoInfo`, kept indices and frames, the indices chosen by the
same rule (:func:`~deepfake_cli.data.video.wanted_indices`), so a clip scores the same whichever
way it arrives.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from deepfake_cli.data.video import VideoError, VideoInfo, wanted_indices

MEMORY_CODEC = "rgb frames in memory"


class FramesError(VideoError):
    """Frames given in memory that cannot be scored (not H x W x 3 uint8 RGB, of one size)."""

    def __init__(self, message: str):
        super().__init__("frames", message)


def as_frame_array(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """The frames as one (n, H, W, 3) uint8 array; a FramesError says what is wrong with them."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = frames[None]  # one image
    try:
        items = list(frames)
    except TypeError:
        raise FramesError(f"expected a path or a sequence of RGB frames, got {type(frames).__name__}") from None
    if not items:
        raise FramesError("no frames given")
    for i, frame in enumerate(items):
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            described = (f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray)
                         else type(frame).__name__)
            raise FramesError(f"frame {i} is a {described}; each frame must be an H x W x 3 uint8 RGB array")
        if frame.shape != items[0].shape:
            raise FramesError(f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, frame 0 "
                              f"{items[0].shape[1]}x{items[0].shape[0]}: the frames of a clip share one size")
    return np.stack(items)


def sample_array(frames: Sequence[np.ndarray] | np.ndarray, fpv: int, sampling: str,
                 fps: float = 0.0, windows: int = 1) -> tuple[VideoInfo, np.ndarray, np.ndarray]:
    """(info, kept indices, kept frames) of in-memory RGB ``frames``, sampled like a file of them."""
    array = as_frame_array(frames)
    count, height, width = array.shape[:3]
    info = VideoInfo(fps=float(fps), frame_count=count, width=width, height=height, rotation=0, codec=MEMORY_CODEC)
    kept = np.asarray(wanted_indices(count, fpv, sampling, windows=windows), dtype=np.int64)
    return info, kept, array[kept]
