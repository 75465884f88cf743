"""`dfd explore`: look at a dataset before training on it.

From a store (or, before `extract`, from the files a dataset layout describes) it writes into
``--out``: ``summary.json`` with the label balance by dataset, method, compression and split;
``histograms.png`` with the distributions of duration, frame height, fps and the share of
frames where a face was found; one contact sheet per (label, method) of sampled frames beside
their first face crop (``sheet_<label>_<dataset-method>.png``), to see at a glance whether faces were
cropped well; and the warnings of what would mislead training: a split holding one class, a
method present in train only, an identity in two splits, videos whose face was found in under
half of their frames.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deepfake_cli.files import atomic_write_text, to_jsonable

SHEET_VIDEOS = 8  # videos per contact sheet
TILE = 128  # px of each tile on a sheet
MIN_FACE_RATE = 0.5  # a video whose face was found in fewer of its frames is flagged


@dataclass
class Row:
    """What explore needs of one video: from a store entry, or from a dataset record."""

    video_id: str
    path: str
    label: str
    dataset: str
    method: str
    compression: str
    split: str
    identities: tuple[str, ...]
    fps: float = 0.0
    frame_count: int = 0
    height: int = 0
    stored_frames: int = 0
    faces: int | None = None  # frames with the face (None: not cropped / not known)


@dataclass
class Exploration:
    videos: int
    balance: dict  # {"dataset": {name: {label: n}}, "method": ..., "compression": ..., "split": ...}
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return to_jsonable(dict(self.__dict__))


def rows_from_store(store) -> list[Row]:
    rows = []
    for e in store.entries():
        if not e.ok:
            continue
        faces = store.face_count(e.video_id) if store.has(e.video_id, "faces") else None
        rows.append(Row(e.video_id, e.path, e.label, e.dataset, e.method or "-", e.compression or "-",
                        e.split or "-", tuple(i for i in e.identities.split(",") if i), e.fps, e.frame_count,
                        e.height, e.stored_frames, faces))
    return rows


def rows_from_paths(paths: list[Path], labels_csv: Path | None = None) -> list[Row]:
    from deepfake_cli.data.datasets import discover

    return [Row(str(r.path), str(r.path), r.label, r.dataset, r.method or "-", r.compression or "-", r.split or "-",
                tuple(r.identities)) for r in discover(paths, labels_csv)]


def label_balance(rows: list[Row]) -> dict:
    """{"dataset"|"method"|"compression"|"split": {value: {label: count}}}."""
    balance: dict = {}
    for key in ("dataset", "method", "compression", "split"):
        table: dict = defaultdict(Counter)
        for r in rows:
            table[f"{r.dataset}/{getattr(r, key)}" if key != "dataset" else r.dataset][r.label] += 1
        balance[key] = {k: dict(v) for k, v in sorted(table.items())}
    return balance


def misleading(rows: list[Row]) -> list[str]:
    """What would mislead training or evaluation."""
    warnings = []
    by_split: dict = defaultdict(set)
    for r in rows:
        by_split[(r.dataset, r.split)].add(r.label)
    for (dataset, split), labels in sorted(by_split.items()):
        if split != "-" and len(labels - {"unknown"}) == 1:
            warnings.append(f"{dataset} {split} split holds only {next(iter(labels - {'unknown'}))} videos")
    splits_of_method: dict = defaultdict(set)
    for r in rows:
        if r.method != "-":
            splits_of_method[(r.dataset, r.method)].add(r.split)
    for (dataset, method), splits in sorted(splits_of_method.items()):
        if splits == {"train"} and any(r.dataset == dataset and r.split in ("val", "test") for r in rows):
            warnings.append(f"{dataset} method {method} is in the train split only: its val/test figures cannot exist")
    splits_of_identity: dict = defaultdict(set)
    for r in rows:
        for identity in r.identities:
            splits_of_identity[identity].add(r.split)
    leaked = sorted(i for i, s in splits_of_identity.items() if len(s - {"-"}) > 1)
    if leaked:
        warnings.append(f"{len(leaked)} identities appear in more than one split (e.g. {', '.join(leaked[:5])}): "
                        "validation on them is not identity-disjoint")
    few = [r for r in rows if r.faces is not None and r.stored_frames > 1 and r.faces < MIN_FACE_RATE * r.stored_frames]
    if few:
        warnings.append(f"{len(few)} videos have their face in under {MIN_FACE_RATE:.0%} of their frames "
                        f"(e.g. {', '.join(Path(r.path).name for r in few[:5])})")
    return warnings


def histograms(rows: list[Row], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("duration (s)", [r.frame_count / r.fps for r in rows if r.fps > 0]),
              ("frame height (px)", [r.height for r in rows if r.height]),
              ("frames per second", [r.fps for r in rows if r.fps > 0]),
              ("share of frames with the face", [r.faces / r.stored_frames for r in rows
                                                  if r.faces is not None and r.stored_frames])]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3), dpi=90)
    for ax, (title, values) in zip(axes, panels):
        if values:
            ax.hist(values, bins=20)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title} (n = {len(values)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def contact_sheets(store, rows: list[Row], out_dir: Path, seed: int = 0) -> list[Path]:
    """Per (label, dataset and method): rows of [sampled frame | its first face crop], up to SHEET_VIDEOS videos."""
    groups: dict = defaultdict(list)
    for r in rows:
        groups[(r.label, r.dataset if r.method in ("-", r.dataset) else f"{r.dataset}-{r.method}")].append(r)
    rng = np.random.default_rng(seed)
    written = []
    for (label, method), members in sorted(groups.items()):
        picked = [members[i] for i in sorted(rng.choice(len(members), min(SHEET_VIDEOS, len(members)), replace=False))]
        tiles = []
        for r in picked:
            frames = store.read_frames(r.video_id)
            frame = _fit(frames.pixels[len(frames.pixels) // 2], TILE * 2, TILE)
            face = np.zeros((TILE, TILE, 3), np.uint8)
            if r.faces:
                face = cv2.resize(store.read_faces(r.video_id).crops[0], (TILE, TILE))
            tiles.append(np.concatenate([frame, face], axis=1))
        sheet = np.concatenate(tiles, axis=0)
        path = out_dir / f"sheet_{_safe(label)}_{_safe(method)}.png"
        cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Letterboxed into (height, width): no stretching."""
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))))
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return canvas


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name) or "none"


def explore(out_dir: Path, store=None, paths: list[Path] | None = None, labels_csv: Path | None = None) -> Exploration:
    """Write the summary, histograms and contact sheets of a store (or of the files under ``paths``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = rows_from_store(store) if store is not None else rows_from_paths(paths or [], labels_csv)
    result = Exploration(videos=len(rows), balance=label_balance(rows), warnings=misleading(rows))
    if rows and store is not None:
        result.files.append(str(histograms(rows, out_dir / "histograms.png")))
        result.files.extend(str(p) for p in contact_sheets(store, rows, out_dir))
    summary = out_dir / "summary.json"
    result.files.append(str(summary))
    atomic_write_text(summary, json.dumps(result.as_dict(), indent=2) + "\n")
    return result
