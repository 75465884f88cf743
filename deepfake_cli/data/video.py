"""Probe videos, choose which frames to sample, and decode only those frames.

Images count as one-frame videos. Frames come out as RGB uint8, upright: OpenCV's
automatic orientation is switched off and the rotation from the container metadata
is applied here, exactly once.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from deepfake_cli.errors import EXIT_UNREADABLE, DfdError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
SAMPLINGS = ("consecutive", "uniform", "random")

# Seek instead of grab() when the next wanted frame is further away. A seek decodes from
# the previous keyframe, so it only pays off for jumps longer than about half a GOP
# (x264's default GOP is 250 frames; measured on FaceForensics++ c23/c40).
SEEK_MIN_JUMP = 150
MAX_COUNTED_FRAMES = 200_000  # cap when frames must be counted one by one

_ROTATE_FLAGS = MappingProxyType(
    {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
)


class VideoError(DfdError):
    """A file that cannot be read as a video or image."""

    exit_code = EXIT_UNREADABLE

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What probe() learns about a video; width and height are of the upright frames."""

    fps: float
    frame_count: int
    width: int
    height: int
    rotation: int  # degrees from the metadata: 0, 90, 180 or 270
    header_frame_count: int | None = None  # what the container claimed, when sample_frames found it wrong
    codec: str = ""  # the stream's FourCC as OpenCV reports it (e.g. "avc1"), or the image format

    @property
    def duration_s(self) -> float:
        """Length in seconds (0 for an image or an unknown frame rate)."""
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def is_image(path: Path | str) -> bool:
    """True when the file name says it is a still image."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path | str) -> bool:
    """True when the file name says it is a video."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_media(path: Path | str) -> bool:
    """True for a video or an image file name."""
    return is_image(path) or is_video(path)


def _check_file(path: Path) -> None:
    """Raise VideoError, with the real reason, for a file that cannot be read as a whole: missing,
    a symlink loop, a directory or other non-regular file, empty, or not readable by this user."""
    reason = unreadable_reason(path)
    if reason:
        raise VideoError(path, reason)


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be read as a media file (None when it can be opened and is not empty)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file" if not os.path.islink(path) else "a broken symbolic link (its target is missing)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (too many levels of symbolic links)"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory"
    if not stat.S_ISREG(info.st_mode):
        return "not a file (a pipe, socket or device)"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _read_image(path: Path) -> np.ndarray:
    """Decode an image file to RGB uint8 (EXIF orientation applied by OpenCV)."""
    _check_file(path)
    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoError(path, "not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _open(path: Path) -> cv2.VideoCapture:
    """Open a capture with orientation handling switched off (we rotate ourselves)."""
    _check_file(path)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise VideoError(path, "cannot be opened as a video (not a video file, or unsupported codec)")
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    return cap


def _metadata_rotation(cap: cv2.VideoCapture) -> int:
    """Rotation recorded in the container (0/90/180/270), whoever applies it."""
    angle = int(round(cap.get(cv2.CAP_PROP_ORIENTATION_META))) % 360
    return angle if angle in _ROTATE_FLAGS else 0


def _rotation(cap: cv2.VideoCapture) -> int:
    """Rotation still to apply to frames retrieved from cap (0 if the backend rotates)."""
    if cap.get(cv2.CAP_PROP_ORIENTATION_AUTO) != 0:
        return 0
    return _metadata_rotation(cap)


def _upright(bgr: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a decoded BGR frame upright and convert it to RGB."""
    if rotation:
        bgr = cv2.rotate(bgr, _ROTATE_FLAGS[rotation])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _count_frames(cap: cv2.VideoCapture) -> int:
    """Count frames by grabbing them all (only when the container does not say)."""
    count = 0
    while count < MAX_COUNTED_FRAMES and cap.grab():
        count += 1
    return count


def probe(path: Path) -> VideoInfo:
    """Read fps, frame count, upright size and rotation; check the first frame decodes."""
    path = Path(path)
    if is_image(path):
        image = _read_image(path)
        return VideoInfo(fps=0.0, frame_count=1, width=image.shape[1], height=image.shape[0], rotation=0,
                         codec=path.suffix.lower().lstrip("."))
    cap = _open(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if np.isfinite(fps) and fps > 0 else 0.0
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        rotation = _metadata_rotation(cap)
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") if fourcc > 0 else ""
        ok, first = cap.read()
        if not ok or first is None:
            raise VideoError(path, "no video frame could be decoded (no video stream, or corrupt)")
        first = _upright(first, _rotation(cap))
        frame_count = reported if reported > 0 else 1 + _count_frames(cap)
    finally:
        cap.release()
    return VideoInfo(fps=fps, frame_count=frame_count, width=first.shape[1], height=first.shape[0], rotation=rotation,
                     codec=codec)


def clip_windows(frame_count: int, fpv: int, windows: int) -> list[list[int]]:
    """``windows`` runs of ``fpv`` consecutive frames, one centred in each of ``windows`` equal
    parts of the clip (one: the middle ``fpv``, what "consecutive" sampling always took); a clip
    too short for them gives overlapping runs (each part still has its window), one of fewer
    frames one window of them all. ``windows`` 0: as many as fit side by side (``frame_count // fpv``)."""
    windows = windows if windows > 0 else max(1, frame_count // max(1, fpv))
    if frame_count <= fpv or windows <= 1:
        return [choose_indices(frame_count, fpv, "consecutive")]
    starts = [min(frame_count - fpv, max(0, round((k + 0.5) * frame_count / windows - fpv / 2))) for k in range(windows)]
    return [list(range(start, start + fpv)) for start in starts]


def window_positions(kept, frame_count: int, fpv: int, sampling: str, windows: int) -> list[list[int]]:
    """Positions into the sampled frames (``kept``: their clip frame numbers) of each window
    tracked and scored on its own, by `predict` and `crop` alike: several for frames sampled
    consecutively with ``windows`` other than 1 (:func:`clip_windows`), else one of every
    sampled frame. A window of which no frame could be decoded is left out."""
    if sampling != "consecutive" or windows == 1 or frame_count <= fpv:
        return [list(range(len(kept)))]
    where = {int(k): i for i, k in enumerate(kept)}
    spans = [[where[i] for i in w if i in where] for w in clip_windows(frame_count, int(fpv), windows)]
    return [s for s in spans if s]


def choose_indices(frame_count: int, fpv: int, sampling: str, seed: int = 0, windows: int = 1) -> list[int]:
    """Pick up to fpv sorted frame indices out of frame_count (all of them when fewer); with
    "consecutive" sampling and ``windows`` > 1, the frames of every window (:func:`clip_windows`)."""
    if sampling == "consecutive" and windows != 1 and frame_count > fpv:
        return sorted({i for window in clip_windows(frame_count, fpv, windows) for i in window})
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    if fpv < 1:
        raise ValueError(f"frames per video must be at least 1, got {fpv}")
    if frame_count < 0:
        raise ValueError(f"frame count cannot be negative, got {frame_count}")
    if frame_count <= fpv:
        return list(range(frame_count))
    if sampling == "consecutive":
        start = (frame_count - fpv) // 2
        return list(range(start, start + fpv))
    if sampling == "uniform":
        spread = np.linspace(0, frame_count - 1, fpv).round().astype(np.int64)
        return [int(i) for i in np.unique(spread)]
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(frame_count, size=fpv, replace=False))


def _decode_wanted(cap: cv2.VideoCapture, wanted: list[int]) -> tuple[list[int], list[np.ndarray]]:
    """Walk the stream, decoding only the wanted frames; stop at the first unreadable one.

    Seeks only in containers that know their frame count: in raw streams (e.g. MJPEG)
    OpenCV's seek lands on the wrong frame while reporting the right one.
    """
    rotation = _rotation(cap)
    can_seek = cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0
    kept: list[int] = []
    frames: list[np.ndarray] = []
    position = 0  # index of the frame the next grab() returns
    for index in wanted:
        if can_seek and index - position > SEEK_MIN_JUMP and cap.set(cv2.CAP_PROP_POS_FRAMES, index):
            position = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
        if position > index:  # a seek went past this frame; later ones may still come
            continue
        while position < index and cap.grab():
            position += 1
        if position < index or not cap.grab():
            break
        position += 1
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
            break
        kept.append(index)
        frames.append(_upright(bgr, rotation))
    return kept, frames


def iter_frames(path: Path):
    """Every frame of a video in order, RGB and upright, as (index, frame); stops at the first
    unreadable one. For showing a whole clip (predict --annotate), not for sampling."""
    cap = _open(Path(path))
    try:
        rotation = _rotation(cap)
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                return
            yield index, _upright(bgr, rotation)
            index += 1
    finally:
        cap.release()


def read_frames(path: Path, indices: list[int], info: VideoInfo | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode the given frames: (kept indices int64 (n,), RGB frames uint8 (n, H, W, 3)).

    Indices are de-duplicated and sorted; with info, those at or past info.frame_count are
    dropped. Frames the file cannot deliver (truncated file, wrong frame count) are left
    out; VideoError if none could be decoded.
    """
    path = Path(path)
    if is_image(path):
        return np.zeros(1, dtype=np.int64), _read_image(path)[None]
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    if info is not None and info.frame_count > 0:
        wanted = [i for i in wanted if i < info.frame_count]
    if not wanted:
        raise VideoError(path, "no valid frame indices to read")
    cap = _open(path)
    try:
        kept, frames = _decode_wanted(cap, wanted)
    finally:
        cap.release()
    if not frames:
        raise VideoError(path, f"none of the {len(wanted)} requested frames could be decoded")
    return np.asarray(kept, dtype=np.int64), np.stack(frames)


INDEXED_CONTAINERS = (".mp4", ".m4v", ".mov")  # frame count = the sample table's: never an under-count


def frames_by_role(frame_count: int, fpv: int, sampling: str, seed: int = 0,
                   spread: int = 0, windows: int = 1) -> tuple[set[int], set[int]]:
    """(the ``fpv`` frames of ``sampling`` (of each of ``windows``), the ``spread`` frames spread
    uniformly over the video; empty when ``spread`` is 0)."""
    sequence = set(choose_indices(frame_count, fpv, sampling, seed=seed, windows=windows))
    return sequence, set(choose_indices(frame_count, spread, "uniform")) if spread else set()


def wanted_indices(frame_count: int, fpv: int, sampling: str, seed: int = 0, spread: int = 0,
                   windows: int = 1) -> list[int]:
    """The sorted frames to decode: both sets of :func:`frames_by_role`, in one pass."""
    sequence, spread_frames = frames_by_role(frame_count, fpv, sampling, seed, spread, windows)
    return sorted(sequence | spread_frames)


def sample_frames(path: Path, fpv: int, sampling: str, seed: int = 0,
                  spread: int = 0, windows: int = 1) -> tuple[VideoInfo, np.ndarray, np.ndarray]:
    """probe + wanted_indices + read_frames, sampling from the video's real length.

    A container's frame count can be wrong (an MKV or AVI whose header claims ten times the
    frames it holds, or fewer than it holds). When the decoder stops before the last wanted
    frame, or a frame exists at the claimed end, the frames are counted by decoding them and
    the sample is drawn again from the real length; ``info.header_frame_count`` then keeps
    the claimed count. An under-count is looked for (one seek and grab, 0.2-0.5 s on an FF++
    clip) only in containers other than MP4/MOV, whose count is their sample table: the index
    the demuxer reads frames by.
    """
    path = Path(path)
    info = probe(path)
    indices = wanted_indices(info.frame_count, fpv, sampling, seed, spread, windows)
    try:
        kept, frames = read_frames(path, indices, info)
    except VideoError:
        kept, frames = np.zeros(0, np.int64), None
    if is_image(path):
        return info, kept, frames
    complete = frames is not None and len(kept) and int(kept[-1]) == max(indices)
    indexed = path.suffix.lower() in INDEXED_CONTAINERS
    if complete and (indexed or not _frame_exists(path, info.frame_count)):
        return info, kept, frames
    real = _decoded_length(path)
    if real in (0, info.frame_count):
        if frames is None:
            raise VideoError(path, f"none of the {len(set(indices))} requested frames could be decoded")
        return info, kept, frames
    info = replace(info, frame_count=real, header_frame_count=info.frame_count)
    kept, frames = read_frames(path, wanted_indices(real, fpv, sampling, seed, spread, windows), info)
    return info, kept, frames


def _frame_exists(path: Path, index: int) -> bool:
    """Whether the video delivers a frame at ``index`` (past the claimed end: the header under-counts)."""
    cap = _open(path)
    try:
        if cap.get(cv2.CAP_PROP_FRAME_COUNT) <= 0 or not cap.set(cv2.CAP_PROP_POS_FRAMES, index):
            return False
        return int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == index and cap.grab()
    finally:
        cap.release()


def _decoded_length(path: Path) -> int:
    """The number of frames the decoder delivers, counted by grabbing them all."""
    cap = _open(path)
    try:
        return _count_frames(cap)
    finally:
        cap.release()
