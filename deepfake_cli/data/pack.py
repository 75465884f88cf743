"""`dfd pack` and `dfd unpack`: a store's faces in one small file, to train where the store is not.

A machine lent for minutes (a GPU that takes a few tens of MiB with a command) or a colleague's
laptop cannot take a store of training faces: gigabytes of raw crops, and the frames they came
from. `pack` writes one HDF5 file holding each video's entry (label, split,
dataset, group: so the same folds and the same validation) and its face track, the crops
JPEG-encoded, the frames left out (training on faces never reads them). `unpack` turns it back
into a store that train-cnn and crossval read like any other. JPEG is lossy: the quality is
recorded in the pack and in each unpacked video's face settings (`packed_jpeg_quality`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from deepfake_cli.data.store import ROLE_SEQUENCE, ROLE_SPREAD, Faces, Store, VideoEntry
from deepfake_cli.errors import DfdError
from deepfake_cli.files import atomic_write

PACK_FORMAT = "dfd-faces-pack-1"
ROLES = {"all": None, "spread": ROLE_SPREAD, "sequence": ROLE_SEQUENCE}  # which stored faces a pack keeps
_ARRAYS = ("frame_indices", "boxes", "landmarks", "scores", "track_ids", "landmarks68", "roles", "windows")


class PackError(DfdError):
    """A pack cannot be written (over its size limit) or read (not a pack, damaged)."""


@dataclass
class PackSummary:
    path: str
    videos: int = 0
    faces: int = 0
    skipped: int = 0  # pack: videos without faces (failed, or not cropped); unpack: videos the store already had
    mib: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def encode(crop: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PackError(f"cannot JPEG-encode a {crop.shape} crop")
    return data.reshape(-1)


def decode(data: np.ndarray, where: str) -> np.ndarray:
    image = cv2.imdecode(np.asarray(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise PackError(f"{where}: a face that is not a readable JPEG (the pack is damaged)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def pack(store: Store, out: Path, quality: int = 90, role: str = "all", max_mib: float | None = None) -> PackSummary:
    """Write the faces of every cropped video of ``store`` (those of ``role``) into ``out``; nothing
    is left at ``out`` when the pack would be larger than ``max_mib``.

    The file holds a few flat datasets, not a group per video (HDF5 spends kilobytes on each
    dataset's header: 10,000 one-face videos would double the pack): ``videos``, one JSON record
    per video (entry, face settings, face count, missing frames, which arrays it has); ``jpeg``,
    every crop's bytes end to end, and ``jpeg_ends``; and each face array of _ARRAYS, the rows of
    the videos that have it, in video order.
    """
    if not 1 <= quality <= 100:
        raise PackError(f"--quality {quality}: give a JPEG quality from 1 to 100")
    summary = PackSummary(path=str(out))
    records, jpegs, rows = [], [], {name: [] for name in _ARRAYS}
    for entry in store.entries():
        faces = store.read_faces(entry.video_id, ROLES[role]) if entry.ok and store.has(entry.video_id, "faces") else None
        if faces is None or not len(faces.crops):
            summary.skipped += 1
            continue
        present = [name for name in _ARRAYS if getattr(faces, name) is not None]
        records.append(json.dumps({"entry": asdict(entry), "settings": faces.settings, "faces": len(faces.crops),
                                   "missing_frames": faces.missing_frames.tolist(), "arrays": present}))
        jpegs += [encode(crop, quality) for crop in faces.crops]
        for name in present:
            rows[name].append(np.asarray(getattr(faces, name)))
        summary.videos += 1
        summary.faces += len(faces.crops)
    with atomic_write(out, ".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=PACK_FORMAT, jpeg_quality=quality, role=role)
            f.create_dataset("videos", data=np.array(records, dtype=object), dtype=h5py.string_dtype(),
                             compression="gzip")
            f.create_dataset("jpeg", data=np.concatenate(jpegs) if jpegs else np.zeros(0, np.uint8))
            f.create_dataset("jpeg_ends", data=np.cumsum([len(j) for j in jpegs], dtype=np.int64))
            for name, parts in rows.items():
                if parts:
                    f.create_dataset(name, data=np.concatenate(parts), compression="gzip")
        summary.mib = tmp.stat().st_size / 2**20
        if max_mib is not None and summary.mib > max_mib:
            hint = " or pack only the faces train-cnn reads (--role spread)" if role == "all" else ""
            raise PackError(f"{out} would be {summary.mib:.1f} MiB, over --max-mib {max_mib:g}: lower --quality "
                            f"(now {quality}){hint}")
    return summary


@dataclass
class PackedVideo:
    """One video of a pack, checked but not yet decoded."""

    entry: VideoEntry
    settings: dict
    missing_frames: np.ndarray
    jpegs: list[np.ndarray]
    arrays: dict


def read_pack(pack_path: Path) -> tuple[int, list[PackedVideo]]:
    """(JPEG quality, videos) of the pack at ``pack_path``, every part checked before anything is
    written anywhere: PackError names the file when it is not a pack or is damaged."""
    try:
        f = h5py.File(pack_path, "r")
    except OSError as exc:
        raise PackError(f"{pack_path} is not a dfd face pack: {exc}") from None
    with f:
        if f.attrs.get("format") != PACK_FORMAT:
            raise PackError(f"{pack_path} is not a dfd face pack (made by `dfd pack`)")
        try:
            quality = int(f.attrs["jpeg_quality"])
            data, ends = f["jpeg"][()], f["jpeg_ends"][()]
            arrays = {name: f[name][()] for name in _ARRAYS if name in f}
            records = [json.loads(r) for r in f["videos"].asstr()[()]]
        except (KeyError, TypeError, ValueError) as exc:
            raise PackError(f"{pack_path} is damaged ({exc})") from None
    starts, videos, face, at = np.concatenate([[0], ends]), [], 0, dict.fromkeys(_ARRAYS, 0)
    try:
        for record in records:
            n = int(record["faces"])
            rows = {name: arrays[name][at[name]:at[name] + n] for name in record["arrays"]}
            for name in record["arrays"]:
                at[name] += n
                if len(rows[name]) != n:
                    raise ValueError(f"{name} has {len(rows[name])} rows for {n} faces")
            if face + n > len(ends):
                raise ValueError(f"{n} faces, {len(ends) - face} JPEG crops left")
            jpegs = [data[a:b] for a, b in zip(starts[face:face + n], ends[face:face + n])]
            videos.append(PackedVideo(VideoEntry(**record["entry"]), record["settings"],
                                      np.asarray(record["missing_frames"], np.int64), jpegs, rows))
            face += n
    except (KeyError, TypeError, ValueError) as exc:
        raise PackError(f"{pack_path} is damaged ({exc})") from None
    return quality, videos


def unpack(pack_path: Path, store: Store, packed: tuple[int, list[PackedVideo]] | None = None) -> PackSummary:
    """Write every video of the pack at ``pack_path`` (``packed``: as read_pack read it) into
    ``store``, faces only; videos the store already holds with faces are left as they are."""
    quality, videos = packed or read_pack(pack_path)
    summary = PackSummary(path=str(pack_path), mib=pack_path.stat().st_size / 2**20)
    for video in videos:
        video_id = video.entry.video_id
        if store.has(video_id, "faces"):
            summary.skipped += 1
            continue
        crops = np.stack([decode(jpeg, f"{pack_path}: video {video_id}") for jpeg in video.jpegs])
        store.write_frames(video.entry, None)  # the entry: the frames were left out of the pack
        store.write_faces(video_id, Faces(crops=crops, missing_frames=video.missing_frames,
                                          settings={**video.settings, "packed_jpeg_quality": quality},
                                          **{k: video.arrays.get(k) for k in _ARRAYS}))
        summary.videos += 1
        summary.faces += len(crops)
    return summary
