"""Recognise dataset layouts on disk and turn them into labelled video records.

Known layouts: FaceForensics++, Celeb-DF (v1/v2), DFDC (``metadata.json`` per folder),
DFDC face crops (``metadata.csv`` with ``file,label[,video,original]``), plain folders with
``real/`` and ``fake/`` sub-folders, and an explicit labels CSV. Anything else is a set of
unlabelled files. Nothing here opens a video; only file names and metadata are read.

A record carries the dataset's official split when it has one, and the identities it shows;
deepfake_cli.data.splits turns those into each record's group and split.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from deepfake_cli.errors import DfdError
from deepfake_cli.data.splits import LABELS, SPLITS, UNKNOWN
from deepfake_cli.data.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_media
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", "DeepFakeDetection")
FFPP_COMPRESSIONS = MappingProxyType({"raw": "c0", "c0": "c0", "c23": "c23", "c40": "c40"})
CELEBDF_FOLDERS = MappingProxyType({"celeb-real": "real", "youtube-real": "real", "celeb-synthesis": "fake"})
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"


class DatasetError(DfdError):
    """Inputs that do not exist or hold nothing usable."""


@dataclass(frozen=True)
class VideoRecord:
    """One video (or image) with what its dataset says about it."""

    path: Path
    label: str  # "real" | "fake" | "unknown"
    dataset: str  # "ffpp" | "celebdf" | "dfdc" | "folders" | "csv" | "files"
    method: str = ""
    compression: str = ""  # "c0" | "c23" | "c40" | ""
    split: str = ""  # official split when the layout has one
    identities: tuple[str, ...] = ()
    group: str = ""  # filled by splits.assign_splits


# ---------------------------------------------------------------- small helpers


def _norm_label(value: str, where: str) -> str:
    """Map REAL/FAKE/unknown (any case) to a label, else DatasetError."""
    label = str(value).strip().lower()
    if label not in LABELS + (UNKNOWN,):
        raise DatasetError(f"{where}: unknown label {value!r} (expected real, fake or unknown)")
    return label


def _norm_split(value: str, where: str) -> str:
    """Map train/val/validation/test/'' to a split name, else DatasetError."""
    split = str(value or "").strip().lower()
    split = {"validation": "val", "valid": "val", "dev": "val"}.get(split, split)
    if split not in SPLITS + ("",):
        raise DatasetError(f"{where}: unknown split {value!r} (expected train, val or test)")
    return split


def _media_files(folder: Path) -> list[Path]:
    """Video and image files below folder, hidden files and folders skipped, sorted."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(top, f) for f in files if not f.startswith(".") and is_media(f))
    return sorted(found)


def _find_part(path: Path, names: set[str]) -> int | None:
    """Index of the last part of path whose lower-cased name is in names."""
    for i in range(len(path.parts) - 1, -1, -1):
        if path.parts[i].lower() in names:
            return i
    return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file with stripped, lower-cased column names."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return [
                {k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                for row in csv.DictReader(f)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: cannot read CSV ({e})") from e


def _read_json(path: Path) -> object:
    """Parsed JSON file, or DatasetError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read JSON ({e})") from e


# ---------------------------------------------------------------- FaceForensics++


def _ffpp_splits(root: Path) -> dict:
    """Official split of each id and each (target, source) pair, from root/splits/*.json."""
    index: dict = {}
    for split in SPLITS:
        path = root / "splits" / f"{split}.json"
        if not path.is_file():
            continue
        try:
            pairs = [(str(a), str(b)) for a, b in _read_json(path)]
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{path}: expected a list of [target, source] pairs") from e
        for a, b in pairs:
            index.update({a: split, b: split, (a, b): split, (b, a): split})
    return index


def _ffpp_ids(stem: str) -> list[str]:
    """Ids in an FF++ file name: '071' -> [071], '071_054' -> [071, 054], actors '01_02__x' -> [01, 02]."""
    return [part for part in stem.split("__")[0].split("_") if part]


def _ffpp_record(path: Path, marker: int, cache: dict) -> VideoRecord | None:
    """Record for a file below original_sequences/ or manipulated_sequences/ (None: not a video of it)."""
    parts = path.parts[marker:]
    if len(parts) != 5 or parts[3].lower() != "videos":
        return None  # masks/, models/, images/ or something else in the tree
    kind, compression = parts[0].lower(), FFPP_COMPRESSIONS.get(parts[2].lower())
    if compression is None:
        return None
    source = next((m for m in FFPP_METHODS if m.lower() == parts[1].lower()), parts[1])
    root = Path(*path.parts[:marker])
    key = ("ffpp-splits", str(root))
    if key not in cache:
        cache[key] = _ffpp_splits(root)
    ids = _ffpp_ids(path.stem)
    split_key = ids[0] if len(ids) == 1 else tuple(ids)  # () for odd names: no split
    actors = source.lower() == "actors" or source == "DeepFakeDetection"
    namespace = "ffpp-actors" if actors else "ffpp"
    fake = kind == "manipulated_sequences"
    return VideoRecord(
        path=path,
        label="fake" if fake else "real",
        dataset="ffpp",
        method=source if fake else "",
        compression=compression,
        split="" if actors else cache[key].get(split_key, ""),
        identities=tuple(f"{namespace}:{i}" for i in ids),
    )


# ---------------------------------------------------------------- Celeb-DF


def _celebdf_test_list(root: Path) -> set[str]:
    """Relative paths (lower-case, '/'-separated) listed in List_of_testing_videos.txt."""
    path = root / CELEBDF_TEST_LIST
    if not path.is_file():
        return set()
    listed = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 2:
            listed.add(fields[-1].replace("\\", "/").lower())
    return listed


def _celebdf_ids(stem: str, folder: str) -> tuple[str, ...]:
    """id0_id1_0003 -> (celebdf:id0, celebdf:id1); id0_0003 -> (celebdf:id0,); YouTube 00170 -> (celebdf-yt:00170,)."""
    if folder == "youtube-real":
        return (f"celebdf-yt:{stem}",)
    parts = stem.split("_")
    ids = parts[:-1] if len(parts) > 1 and parts[-1].isdigit() else parts
    return tuple(f"celebdf:{i}" for i in ids)


def _celebdf_record(path: Path, marker: int, cache: dict) -> VideoRecord:
    """Record for a file below Celeb-real/, YouTube-real/ or Celeb-synthesis/."""
    folder = path.parts[marker].lower()
    root = Path(*path.parts[:marker])
    key = ("celebdf-test", str(root))
    if key not in cache:
        cache[key] = _celebdf_test_list(root)
    relative = "/".join(path.parts[marker:]).lower()
    label = CELEBDF_FOLDERS[folder]
    return VideoRecord(
        path=path,
        label=label,
        dataset="celebdf",
        method="Celeb-synthesis" if label == "fake" else "",
        split="test" if relative in cache[key] else "",
        identities=_celebdf_ids(path.stem, folder),
    )


# ---------------------------------------------------------------- DFDC


def _dfdc_json(folder: Path, cache: dict) -> dict:
    """metadata.json of a DFDC folder, as {file name: entry}; {} when absent."""
    key = ("dfdc-json", str(folder))
    if key not in cache:
        path = folder / "metadata.json"
        data = _read_json(path) if path.is_file() else {}
        cache[key] = data if isinstance(data, dict) else {}
    return cache[key]


def _dfdc_record(path: Path, entry: dict, split: str = "") -> VideoRecord:
    """Record for a DFDC video (or face crop) from its metadata entry."""
    where = f"{path} (DFDC metadata)"
    label = _norm_label(entry.get("label", ""), where)
    original = str(entry.get("original") or "").strip()
    video = str(entry.get("video") or "").strip() or path.name
    identity = Path(original).stem if label == "fake" and original else Path(video).stem
    return VideoRecord(
        path=path,
        label=label,
        dataset="dfdc",
        method="dfdc" if label == "fake" else "",
        split=split,
        identities=(f"dfdc:{identity}",),
    )


def _dfdc_json_record(path: Path, cache: dict) -> VideoRecord | None:
    """Record for a file listed in the metadata.json beside it (None when not listed)."""
    entry = _dfdc_json(path.parent, cache).get(path.name)
    if not isinstance(entry, dict):
        return None
    split = _norm_split(entry.get("split", ""), f"{path} (DFDC metadata)")
    return _dfdc_record(path, entry, split)


def _faces_csv(folder: Path, cache: dict) -> dict[str, dict[str, str]]:
    """metadata.csv (file,label[,video,original]) of a folder as {relative file: row}; {} if none."""
    key = ("faces-csv", str(folder))
    if key not in cache:
        path = folder / "metadata.csv"
        rows = _read_csv(path) if path.is_file() else []
        usable = rows and {"file", "label"} <= set(rows[0])
        cache[key] = {r["file"].replace("\\", "/"): r for r in rows} if usable else {}
    return cache[key]


def _faces_csv_owners(folder: Path, cache: dict) -> list[tuple[int, dict]]:
    """(depth, rows) of every metadata.csv in folder and its ancestors, nearest first."""
    key = ("faces-owners", str(folder))
    if key not in cache:
        owners = [(depth, _faces_csv(f, cache)) for depth, f in enumerate([folder, *folder.parents])]
        cache[key] = [(depth, rows) for depth, rows in owners if rows]
    return cache[key]


def _faces_csv_record(path: Path, cache: dict) -> VideoRecord | None:
    """Record for a file listed in a metadata.csv of one of its ancestor folders."""
    for depth, rows in _faces_csv_owners(path.parent, cache):
        relative = "/".join(path.parts[len(path.parts) - depth - 1 :])
        if relative in rows:
            return _dfdc_record(path, rows[relative])
    return None


# ---------------------------------------------------------------- plain folders, files


def _folder_label(path: Path, scope: Path) -> str | None:
    """'real'/'fake' from the nearest folder so named between path and scope (inclusive)."""
    for folder in path.parents:
        name = folder.name.lower()
        if name in ("real", "fake"):
            return name
        if folder == scope or folder == folder.parent:
            return None
    return None


def _plain_record(path: Path, scope: Path) -> VideoRecord:
    """Record labelled by a real/ or fake/ folder, else an unlabelled file."""
    label = _folder_label(path, scope)
    return VideoRecord(
        path=path,
        label=label or UNKNOWN,
        dataset="folders" if label else "files",
        identities=(f"file:{path.stem}",),
    )


def _record(path: Path, scope: Path, cache: dict) -> VideoRecord | None:
    """Record for one media file, by the first layout that recognises it (None: skip it)."""
    marker = _find_part(path.parent, {"original_sequences", "manipulated_sequences"})
    if marker is not None:
        return _ffpp_record(path, marker, cache)
    marker = _find_part(path.parent, set(CELEBDF_FOLDERS))
    if marker is not None:
        return _celebdf_record(path, marker, cache)
    return (
        _dfdc_json_record(path, cache)
        or _faces_csv_record(path, cache)
        or _plain_record(path, scope)
    )


# ---------------------------------------------------------------- explicit labels CSV


def _labels_csv_records(labels_csv: Path) -> list[VideoRecord]:
    """Records from a CSV with path,label[,split,method,compression,group,dataset] columns."""
    labels_csv = Path(labels_csv).absolute()
    if not labels_csv.is_file():
        raise DatasetError(f"{labels_csv}: labels CSV not found")
    rows = _read_csv(labels_csv)
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"{labels_csv}: needs a header with at least the columns path,label")
    records = []
    seen: dict[tuple, tuple[str, str]] = {}  # file on disk -> (where, label) of its first row
    for line, row in enumerate(rows, start=2):
        where = f"{labels_csv}, line {line}"
        path = labels_csv.parent / row["path"]
        if not path.is_file():
            raise DatasetError(f"{where}: {path} not found")
        label = _norm_label(row["label"], where)
        first = seen.setdefault(_file_key(path), (where, label))
        if first[1] != label:  # the same file (by any relative path) labelled twice, differently
            raise DatasetError(f"{where} labels {row['path']} {label}, but {first[0]} labels the same file "
                               f"{first[1]}: fix one of the two rows")
        group = row.get("group", "")
        compression = row.get("compression", "").lower()
        records.append(
            VideoRecord(
                path=path,
                label=label,
                dataset=row.get("dataset", "").strip() or "csv",
                method=row.get("method", ""),
                compression=FFPP_COMPRESSIONS.get(compression, compression),
                split=_norm_split(row.get("split", ""), where),
                identities=(f"csv:{group}",) if group else (f"file:{path.stem}",),
            )
        )
    return records


# ---------------------------------------------------------------- discover


def _discover_path(path: Path, cache: dict) -> list[VideoRecord]:
    """Records for one input path (a media file or a folder)."""
    path = path.absolute()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if not is_media(path):
            suffixes = ", ".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))
            raise DatasetError(f"{path}: not a video or image file (known suffixes: {suffixes})")
        record = _record(path, path.parent, cache)
        return [record] if record else []
    records = [r for r in (_record(p, path, cache) for p in _media_files(path)) if r]
    if not records:
        raise DatasetError(f"{path}: no usable video or image files found")
    return records


def _file_key(path: Path) -> tuple:
    """Identity of a file on disk (device, inode): the same for every path to it. A path that
    cannot be stat'ed (a broken link, a symlink loop) is its own key: extract records it as
    failed, with the reason, instead of stopping."""
    try:
        st = path.stat()
    except OSError:
        return ("unreadable", str(path))
    return st.st_dev, st.st_ino


def discover(paths: list[Path], labels_csv: Path | None = None) -> list[VideoRecord]:
    """Find the videos under paths, labelled by their dataset layout, sorted by (absolute) path.

    A labels CSV overrides the layout for the files it lists (and adds them).
    """
    if not paths and labels_csv is None:
        raise DatasetError("no input paths given")
    cache: dict = {}
    found: dict[tuple, VideoRecord] = {}
    for path in paths:
        for record in _discover_path(Path(path), cache):
            found.setdefault(_file_key(record.path), record)
    if labels_csv is not None:
        for record in _labels_csv_records(Path(labels_csv)):
            found[_file_key(record.path)] = record
    if not found:
        raise DatasetError(f"nothing usable found in {', '.join(str(p) for p in paths)}")
    return sorted(found.values(), key=lambda r: str(r.path))
