"""The dfd store: one HDF5 index file plus immutable per-video HDF5 segments.

Layout on disk (``--store dfd.h5``)::

    dfd.h5            index: the video table and external links to every segment
    dfd.h5.d/         segments, one HDF5 file per (video, stage), never modified once written
        <vid>.frames.h5           sampled frames of one video (or the reason it failed)
        <vid>.faces.h5            aligned face crops, boxes, landmarks, scores, track ids
        <vid>.features.<model>.h5 per-frame CNN features and scores of one model
    dfd.h5.lock       writer lock (holds the writer's pid)

Why this shape: HDF5 files are not crash safe while being modified, so nothing that
holds data is ever modified. A segment is written to a temporary file and renamed into
place only when complete (``os.replace`` is atomic), so a killed run leaves either a
whole segment or none. The index is derived data: it is rewritten to a temporary file
and renamed too, and every segment carries its own metadata, so the index can always be
rebuilt from the segments. Readers never need the lock. See docs/store.md for the schema.

Why this is one long module: the schema (segment names, attributes, version), the lock and the
atomic writers are one contract; split, a reader and a writer could disagree on it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from deepfake_cli.errors import DfdError
from deepfake_cli.files import TMP_MARK, atomic_write

SCHEMA_VERSION = 3  # 2: faces segments hold landmarks68; 3: frames and faces may hold roles (older segments still read)
DEFAULT_STORE = "dfd.h5"
STORE_ENV = "DFD_STORE"
FRAME_STATUS_OK = "ok"
FRAME_STATUS_FAILED = "failed"
# What a stored frame (and the face cropped from it) is for, as bits of `roles`; a segment without
# roles (a store extracted without --spread) has every frame serve as both.
ROLE_SEQUENCE = 1  # one of the --fpv frames sampled as --sampling says: features, the LSTM, evaluation
ROLE_SPREAD = 2  # one of the --spread frames spread uniformly over the video: train-cnn
ROLES_ALL = ROLE_SEQUENCE | ROLE_SPREAD


class StoreError(DfdError):
    """A store cannot be opened, read or written; the message says why."""


class DamagedSegmentError(StoreError):
    """A segment's data fails its checksum (or cannot be decompressed): it cannot be trusted."""

    def __init__(self, video_id: str, stage: str, segment: Path, reason: str):
        super().__init__(f"{segment}: damaged {stage} segment of video {video_id} ({reason}); `dfd check --repair` "
                         f"drops it so that the stage which wrote it redoes this video")
        self.video_id, self.stage, self.segment, self.reason = video_id, stage, segment, reason


class DamagedIndexError(StoreError):
    """The index file cannot be read, but its segments folder is there to rebuild it from."""


class StoreLockedError(StoreError):
    def __init__(self, path: Path, pid: str):
        super().__init__(
            f"store {path} is locked by pid {pid or '?'} (another dfd is writing it); "
            "wait for it, or pass --wait"
        )
        self.pid = pid


@dataclass
class VideoEntry:
    """One row of the video table."""

    video_id: str
    path: str
    sha256: str = ""
    size: int = 0
    mtime: float = 0.0
    label: str = "unknown"  # real | fake | unknown
    split: str = ""  # train | val | test
    dataset: str = ""
    method: str = ""
    compression: str = ""
    group: str = ""
    identities: str = ""  # comma-separated identity ids, e.g. "ffpp:071,ffpp:054"
    fps: float = 0.0
    frame_count: int = 0
    width: int = 0
    height: int = 0
    rotation: int = 0
    sampling: str = ""
    fpv: int = 0
    spread: int = 0  # extract --spread: frames spread uniformly over the video, stored beside the fpv ones
    windows: int = 1  # extract --windows: windows of fpv consecutive frames stored (0: all that fit; before: 1)
    status: str = FRAME_STATUS_OK  # ok | failed
    error: str = ""
    stored_frames: int = 0

    @property
    def ok(self) -> bool:
        return self.status == FRAME_STATUS_OK


_COLUMNS = [f.name for f in fields(VideoEntry)]
_STR_COLUMNS = [f.name for f in fields(VideoEntry) if f.type == "str"]


@dataclass
class Frames:
    indices: np.ndarray  # (n,) int64 frame numbers in the source video
    pixels: np.ndarray  # (n, H, W, 3) uint8 RGB
    roles: np.ndarray | None = None  # (n,) uint8 ROLE_* bits; None: every frame is both


@dataclass
class Faces:
    """The main face track of a video: one row per frame where it was found."""

    crops: np.ndarray  # (n, S, S, 3) uint8 RGB
    frame_indices: np.ndarray  # (n,) int64
    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2 in source-frame pixels
    landmarks: np.ndarray  # (n, 5, 2) float32, source-frame pixels
    scores: np.ndarray  # (n,) float32 detector confidence
    track_ids: np.ndarray  # (n,) int32
    missing_frames: np.ndarray  # (m,) int64 frame numbers where no face of the track was found
    settings: dict = field(default_factory=dict)  # size, align, margin, detector
    landmarks68: np.ndarray | None = None  # (n, 68, 2) float32, crop pixels; None: not computed
    roles: np.ndarray | None = None  # (n,) uint8 ROLE_* bits of each face's frame; None: every face is both
    windows: np.ndarray | None = None  # (n,) int32 window of each face (extract --windows); None: one window


@dataclass
class Features:
    frame_indices: np.ndarray  # (n,)
    features: np.ndarray  # (n, D) float32
    scores: np.ndarray  # (n,) float32, CNN probability of "fake"
    settings: dict = field(default_factory=dict)


def default_store_path() -> Path:
    return Path(os.environ.get(STORE_ENV, DEFAULT_STORE))


def _segment_name(video_id: str, stage: str) -> str:
    return f"{video_id}.{stage}.h5"


def _check_version(attrs, what: Path) -> None:
    version = int(attrs.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{what} was written with store schema version {version}; this dfd reads "
            f"up to version {SCHEMA_VERSION}. Upgrade dfd to read it."
        )
    if version < 1:
        raise StoreError(f"{what} is an HDF5 file but not a dfd store (no schema_version)")


def _open_h5(path: Path, mode: str = "r") -> h5py.File:
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreError(f"{path} is not a readable HDF5 file ({exc}); it may be truncated or not a dfd store") from exc


class Store:
    """Open with :meth:`Store.open`. Writers hold an exclusive lock; readers do not."""

    COMMIT_EVERY_S = 30.0

    def __init__(self, path: Path, writable: bool):
        self.path = Path(path)
        self.segments = self.path.with_name(self.path.name + ".d")
        self.writable = writable
        self._lock_fd: int | None = None
        self._entries: dict[str, VideoEntry] = {}
        self._stages: dict[str, set[str]] = {}
        self._dirty = False
        self._last_commit = time.monotonic()

    # ------------------------------------------------------------------ open / close
    @classmethod
    def open(cls, path: Path | str | None = None, *, write: bool = False, wait: bool = False) -> "Store":
        """Open a store; a writer creates it when it does not exist, a reader needs one."""
        path = Path(path) if path is not None else default_store_path()
        if path.is_dir():
            raise StoreError(f"{path} is a directory; --store must name a file such as dfd.h5")
        if not path.exists() and not write and not path.with_name(path.name + ".d").is_dir():
            raise StoreError(f"no store at {path}: run `dfd extract` first, or pass --store")
        store = cls(path, writable=write)
        if write:
            store._acquire_lock(wait)
        try:
            store._load()
        except BaseException:
            store._release_lock()
            raise
        return store

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.writable and self._dirty:
                self.commit()
        finally:
            self._release_lock()

    def _acquire_lock(self, wait: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StoreLockedError(self.path, pid) from None
        # The kernel drops a flock when its process dies, so a lock left by a killed
        # run is never stale: whatever pid the file still names, we now hold it.
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        if self.path.exists():
            with self._open_index() as f:
                _check_version(f.attrs, self.path)
                if "videos" in f:
                    table = f["videos"]
                    n = table.attrs.get("rows", 0)
                    columns = {name: table[name][()] for name in _COLUMNS if name in table}
                    for i in range(int(n)):
                        row = {}
                        for name, col in columns.items():
                            value = col[i]
                            row[name] = value.decode() if isinstance(value, bytes) else value.item() if hasattr(value, "item") else value
                        entry = VideoEntry(**row)
                        self._entries[entry.video_id] = entry
        if self.writable:
            self.segments.mkdir(exist_ok=True)
            for stale in self.segments.glob(f"*{TMP_MARK}*"):
                stale.unlink(missing_ok=True)  # half-written segment of a killed run
            prefix = self.path.name + TMP_MARK
            for stale in self.path.parent.iterdir():
                if stale.name.startswith(prefix):
                    stale.unlink(missing_ok=True)  # half-written index of a killed run
        self._scan_segments()
        if self.writable and (self._dirty or not self.path.exists()):
            self.commit()

    def _open_index(self) -> h5py.File:
        try:
            return _open_h5(self.path)
        except StoreError as exc:
            if not self.segments.is_dir():
                raise
            raise DamagedIndexError(
                f"the index {self.path} is damaged ({str(exc.__cause__ or exc).splitlines()[0]}); the data is in "
                f"{self.segments}/: `dfd check --repair` (or deleting {self.path}) rebuilds the index from it") from None

    def _scan_segments(self) -> None:
        """Pick up segments that the index does not list yet (a run killed before commit)."""
        if not self.segments.is_dir():
            return
        for seg in self.segments.glob("*.h5"):
            parts = seg.name[:-3].split(".", 2)
            if len(parts) < 2:
                continue
            video_id, stage = parts[0], ".".join(parts[1:])
            self._stages.setdefault(video_id, set()).add(stage)
            if stage == "frames" and video_id not in self._entries:
                try:
                    with _open_h5(seg) as f:
                        _check_version(f.attrs, seg)
                        self._entries[video_id] = VideoEntry(**json.loads(f.attrs["entry"]))
                    self._dirty = True
                except (StoreError, KeyError, TypeError, ValueError):
                    if self.writable:
                        seg.unlink(missing_ok=True)  # unreadable segment: treat as never written
                    self._stages[video_id].discard(stage)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[VideoEntry]:
        return list(self._entries.values())

    def entry(self, video_id: str) -> VideoEntry:
        try:
            return self._entries[video_id]
        except KeyError:
            raise StoreError(f"video {video_id} is not in store {self.path}") from None

    def has(self, video_id: str, stage: str = "frames") -> bool:
        return stage in self._stages.get(video_id, ())

    # ------------------------------------------------------------------ segment I/O
    def _seg_path(self, video_id: str, stage: str) -> Path:
        return self.segments / _segment_name(video_id, stage)

    def segment_path(self, video_id: str, stage: str) -> Path:
        """Where a video's segment of a stage is (or would be) on disk."""
        return self._seg_path(video_id, stage)

    def _write_segment(self, video_id: str, stage: str, arrays: dict[str, np.ndarray],
                       attrs: dict, chunk_rows: dict[str, bool] | None = None) -> None:
        if not self.writable:
            raise StoreError("store was opened read-only")
        final = self._seg_path(video_id, stage)
        try:
            with atomic_write(final) as tmp, _build_h5(tmp) as f:
                f.attrs["schema_version"] = SCHEMA_VERSION
                for key, value in attrs.items():
                    f.attrs[key] = value
                for name, array in arrays.items():
                    array = np.ascontiguousarray(array)
                    kwargs = {}
                    if array.ndim >= 1 and array.size > 0:  # Fletcher-32: a damaged chunk fails to read
                        kwargs = dict(chunks=True, fletcher32=True)
                        if array.nbytes > 4096:
                            kwargs.update(chunks=(1,) + array.shape[1:] if array.ndim >= 3 else True,
                                          compression="gzip", compression_opts=1)
                    f.create_dataset(name, data=array, **kwargs)
        except OSError as exc:
            if _disk_full(exc):
                raise StoreError(f"disk full while writing {final.name}; the store is intact, free space and rerun") from exc
            raise
        self._stages.setdefault(video_id, set()).add(stage)
        self._dirty = True

    @contextmanager
    def _read_segment(self, video_id: str, stage: str) -> Iterator[h5py.File]:
        """The open segment; a read that fails its checksum or decompression inside the block
        raises DamagedSegmentError naming the video and the file."""
        seg = self._seg_path(video_id, stage)
        if not seg.exists():
            raise StoreError(f"video {video_id} has no {stage} in store {self.path}")
        try:
            f = _open_h5(seg)
        except StoreError:
            raise DamagedSegmentError(video_id, stage, seg, "not a readable HDF5 file") from None
        with f:
            _check_version(f.attrs, seg)
            try:
                yield f
            except (OSError, KeyError) as exc:  # h5py: "Can't read data (filter returned failure ...)"
                raise DamagedSegmentError(video_id, stage, seg, str(exc).splitlines()[0]) from None

    def verify_segment(self, video_id: str, stage: str) -> None:
        """Read every array of a segment (checksums verified); DamagedSegmentError if one fails."""
        with self._read_segment(video_id, stage) as f:
            for name in f:
                f[name][()]

    def stored_videos(self) -> list[str]:
        """Every video id with a segment on disk (entries, and any whose frames were dropped)."""
        return sorted(set(self._entries) | set(self._stages))

    def segments_of(self, video_id: str) -> list[str]:
        """The stages stored for a video ("frames", "faces", "features.<model>")."""
        return sorted(self._stages.get(video_id, ()))

    def drop_segment(self, video_id: str, stage: str) -> None:
        """Delete a (damaged) segment, so that the stage which wrote it redoes the video. Dropping
        the frames also forgets the video, so that `dfd extract` adds it again."""
        if not self.writable:
            raise StoreError("store was opened read-only")
        self._seg_path(video_id, stage).unlink(missing_ok=True)
        self._stages.get(video_id, set()).discard(stage)
        if stage == "frames":
            self._entries.pop(video_id, None)
        self._dirty = True

    # frames ------------------------------------------------------------
    def write_frames(self, entry: VideoEntry, frames: Frames | None) -> None:
        """Record one video: its frames, or (frames=None) the failure in entry.error."""
        if frames is None:
            frames = Frames(np.zeros((0,), np.int64), np.zeros((0, 0, 0, 3), np.uint8))
        entry.stored_frames = int(len(frames.indices))
        attrs = {"entry": json.dumps(asdict(entry))}
        arrays = {"indices": frames.indices.astype(np.int64), "pixels": frames.pixels.astype(np.uint8)}
        if frames.roles is not None:
            arrays["roles"] = np.asarray(frames.roles, np.uint8).reshape(len(frames.indices))
        self._write_segment(entry.video_id, "frames", arrays, attrs)
        self._entries[entry.video_id] = entry
        self._maybe_commit()

    def read_frames(self, video_id: str, role: int | None = None) -> Frames:
        """A video's stored frames; with ``role`` (a ROLE_* bit), only the frames serving it,
        read from the disk without the others."""
        with self._read_segment(video_id, "frames") as f:
            rows = _rows_serving(f, role)
            return Frames(_read_rows(f["indices"], rows), _read_rows(f["pixels"], rows),
                          _read_rows(f["roles"], rows) if "roles" in f else None)

    def frame_roles(self, video_id: str) -> np.ndarray:
        """(n,) uint8 ROLE_* bits of each stored frame (ROLES_ALL where none were recorded), without the pixels."""
        with self._read_segment(video_id, "frames") as f:
            return _roles(f, "indices")

    # faces -------------------------------------------------------------
    def write_faces(self, video_id: str, faces: Faces) -> None:
        self.entry(video_id)
        arrays = {
            "crops": faces.crops.astype(np.uint8),
            "frame_indices": faces.frame_indices.astype(np.int64),
            "boxes": faces.boxes.astype(np.float32),
            "landmarks": faces.landmarks.astype(np.float32),
            "scores": faces.scores.astype(np.float32),
            "track_ids": faces.track_ids.astype(np.int32),
            "missing_frames": faces.missing_frames.astype(np.int64),
        }
        if faces.landmarks68 is not None:
            arrays["landmarks68"] = np.asarray(faces.landmarks68, np.float32).reshape(len(faces.crops), 68, 2)
        if faces.roles is not None:
            arrays["roles"] = np.asarray(faces.roles, np.uint8).reshape(len(faces.crops))
        if faces.windows is not None:
            arrays["windows"] = np.asarray(faces.windows, np.int32).reshape(len(faces.crops))
        self._write_segment(video_id, "faces", arrays, {"settings": json.dumps(faces.settings)})
        self._maybe_commit()

    def read_faces(self, video_id: str, role: int | None = None) -> Faces:
        """A video's stored faces; with ``role`` (a ROLE_* bit), only the faces of frames serving
        it, read from the disk without the others (one crop per HDF5 chunk)."""
        with self._read_segment(video_id, "faces") as f:
            rows = _rows_serving(f, role)
            return Faces(**{k: _read_rows(f[k], rows) for k in ("crops", "frame_indices", "boxes", "landmarks",
                                                                "scores", "track_ids")},
                         missing_frames=f["missing_frames"][()],
                         settings=json.loads(f.attrs["settings"]),
                         landmarks68=_read_rows(f["landmarks68"], rows) if "landmarks68" in f else None,
                         roles=_read_rows(f["roles"], rows) if "roles" in f else None,
                         windows=_read_rows(f["windows"], rows) if "windows" in f else None)

    def face_windows(self, video_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(frame indices, window) of each stored face of a video cropped in several windows
        (extract --windows), without the crops; None for faces of one window."""
        with self._read_segment(video_id, "faces") as f:
            return (f["frame_indices"][()], f["windows"][()]) if "windows" in f else None

    def read_landmarks68(self, video_id: str) -> np.ndarray:
        """(n, 68, 2) float32 68-point landmarks of the stored crops (crop pixels).

        Raises StoreError when the faces were cropped without them (store schema 1).
        """
        with self._read_segment(video_id, "faces") as f:
            if "landmarks68" not in f:
                raise StoreError(f"the faces of video {video_id} in {self.path} have no 68-point landmarks "
                                 "(cropped by an older dfd, store schema 1): re-run `dfd crop --force`")
            return f["landmarks68"][()]

    def faces_settings(self, video_id: str) -> dict:
        """How a video's faces were cropped (size, align, margin, detector, ...)."""
        return self.settings(video_id, "faces")

    def face_count(self, video_id: str) -> int:
        """Number of stored faces of a video, reading only the frame-index array (not the crops)."""
        with self._read_segment(video_id, "faces") as f:
            return int(f["frame_indices"].shape[0])

    def face_roles(self, video_id: str) -> np.ndarray:
        """(n,) uint8 ROLE_* bits of each stored face (ROLES_ALL where none were recorded), without the crops."""
        with self._read_segment(video_id, "faces") as f:
            return _roles(f, "frame_indices")

    # features ----------------------------------------------------------
    def write_features(self, video_id: str, model: str, features: Features) -> None:
        self.entry(video_id)
        _check_model_name(model)
        arrays = {"frame_indices": features.frame_indices.astype(np.int64),
                  "features": features.features.astype(np.float32),
                  "scores": features.scores.astype(np.float32)}
        self._write_segment(video_id, f"features.{model}", arrays, {"settings": json.dumps(features.settings)})
        self._maybe_commit()

    def features_settings(self, video_id: str, model: str) -> dict:
        """What a video's stored features of ``model`` are (bundle, backbone, CNN weights hash, ...)."""
        return self.settings(video_id, f"features.{model}")

    def settings(self, video_id: str, stage: str) -> dict:
        """The settings a segment was written with, reading only its attributes."""
        with self._read_segment(video_id, stage) as f:
            return json.loads(f.attrs.get("settings", "{}"))

    def read_features(self, video_id: str, model: str) -> Features:
        with self._read_segment(video_id, f"features.{model}") as f:
            return Features(f["frame_indices"][()], f["features"][()], f["scores"][()],
                            settings=json.loads(f.attrs["settings"]))

    # ------------------------------------------------------------------ index
    def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit > self.COMMIT_EVERY_S:
            self.commit()

    def commit(self) -> None:
        """Rewrite the index atomically from what is on disk now."""
        if not self.writable:
            return
        entries = sorted(self._entries.values(), key=lambda e: e.video_id)
        try:
            with atomic_write(self.path) as tmp, _build_h5(tmp) as f:
                f.attrs["schema_version"] = SCHEMA_VERSION
                f.attrs["layout"] = "index + immutable segments in <store>.d/ (docs/store.md)"
                table = f.create_group("videos")
                table.attrs["rows"] = len(entries)
                for name in _COLUMNS:
                    values = [getattr(e, name) for e in entries]
                    if name in _STR_COLUMNS:
                        table.create_dataset(name, data=np.array(values, dtype=object),
                                             dtype=h5py.string_dtype(), shape=(len(values),))
                    else:
                        table.create_dataset(name, data=np.array(values, dtype=np.float64 if name in ("fps", "mtime") else np.int64))
                media = f.create_group("media")
                rel = self.segments.name
                for e in entries:
                    group = media.create_group(e.video_id)
                    for stage in sorted(self._stages.get(e.video_id, ())):
                        link = h5py.ExternalLink(f"{rel}/{_segment_name(e.video_id, stage)}", "/")
                        if stage.startswith("features."):
                            group.require_group("features")[stage.split(".", 1)[1]] = link
                        else:
                            group[stage] = link
        except OSError as exc:
            if _disk_full(exc):
                raise StoreError(f"disk full while writing the index of {self.path}; segments are intact, free space and rerun") from exc
            if isinstance(exc, PermissionError):  # a read-only folder, or an immutable index (chattr +i)
                raise StoreError(f"cannot replace the index {self.path} ({exc.strerror}): it or its folder is "
                                 "read-only or immutable; the segments are intact: make it writable and rerun") from None
            raise
        self._dirty = False
        self._last_commit = time.monotonic()


def _roles(segment: h5py.File, rows: str) -> np.ndarray:
    """A frames or faces segment's roles; a segment without them (no --spread) has every row serve both."""
    if "roles" in segment:
        return segment["roles"][()]
    return np.full(segment[rows].shape[0], ROLES_ALL, np.uint8)


def _rows_serving(segment: h5py.File, role: int | None) -> np.ndarray | None:
    """The increasing rows of a segment that serve ``role``; None: all of them (no role asked,
    or none recorded)."""
    if role is None or "roles" not in segment:
        return None
    return np.flatnonzero(segment["roles"][()] & role)


def _read_rows(dataset: h5py.Dataset, rows: np.ndarray | None) -> np.ndarray:
    """``dataset``'s rows (all of them for None); h5py reads only the chunks they lie in."""
    if rows is None:
        return dataset[()]
    if not len(rows):
        return np.zeros((0,) + dataset.shape[1:], dataset.dtype)
    return dataset[rows]


def _check_model_name(name: str) -> None:
    if not name or any(c in name for c in "/\\. ") :
        raise StoreError(f"model name {name!r} may not contain '/', '\\', '.' or spaces")


@contextmanager
def _build_h5(tmp: Path) -> Iterator[h5py.File]:
    """Build an HDF5 file in memory, then write it to tmp with plain file I/O.

    HDF5 never writes to the disk itself: when one of its own writes fails (disk full),
    h5py reports it unreliably (an error while a dataset is closed is only printed, so a
    segment missing chunks was renamed into place as complete) and then crashes the
    interpreter closing the file (h5py#914, #2160). A failed write here is a plain OSError.
    ``files.atomic_write`` fsyncs the file and renames it into place.
    """
    with h5py.File(str(tmp), "w", driver="core", backing_store=False) as f:
        yield f
        f.flush()
        image = f.id.get_file_image()
    with open(tmp, "wb") as fh:
        fh.write(image)


def _disk_full(exc: OSError) -> bool:
    return exc.errno == errno.ENOSPC or "No space" in str(exc)
