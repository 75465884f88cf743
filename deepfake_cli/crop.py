"""`dfd crop`: detect, track, align and crop the main face of every stored video."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from deepfake_cli.detectors import check_detector, make_detector, resolve_device
from deepfake_cli.faces import FaceTrackResult, extract_faces
from deepfake_cli.landmarks import Landmarker
from deepfake_cli.progress import Reporter
from deepfake_cli.shards import Shard
from deepfake_cli.store import DamagedSegmentError, Faces, Store


@dataclass
class CropOptions:
    size: int = 160
    align: bool = True
    margin: float = 0.2
    device: str = "auto"
    detect_max_side: int = 640
    force: bool = False
    detector: str = "mtcnn"  # mtcnn | dlib (detectors.py)
    shard: Shard | None = None  # only this 1/N of the videos (by content hash)

    def settings(self) -> dict:  # how the faces were made (the shard is not one of these)
        return {"size": self.size, "align": self.align, "margin": self.margin, "detector": self.detector,
                "detect_max_side": self.detect_max_side, "landmarks68": "dlib"}


@dataclass
class CropSummary:
    videos: int = 0
    cropped: int = 0
    already_done: int = 0
    frames: int = 0
    faces: int = 0
    no_face_videos: list[str] = field(default_factory=list)
    settings_conflicts: int = 0
    damaged: list[str] = field(default_factory=list)  # videos whose frames failed their checksum (dropped)
    device: str = ""

    @property
    def face_rate(self) -> float:
        return self.faces / self.frames if self.frames else float("nan")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["face_rate"] = self.face_rate
        return d


def crop(store: Store, options: CropOptions, reporter: Reporter | None = None) -> CropSummary:
    """Write the faces of every video that has frames and no faces yet."""
    if options.size < 16:
        raise ValueError("--size must be at least 16 pixels")
    if not 0 <= options.margin <= 1:
        raise ValueError("--margin must be between 0 and 1")
    check_detector(options.detector)
    reporter = reporter or Reporter()
    device = resolve_device(options.device)
    summary = CropSummary(device=device)
    todo = []
    for entry in store.entries():
        if not entry.ok or not store.has(entry.video_id, "frames"):
            continue
        if options.shard is not None and not options.shard.holds(entry.video_id):
            continue
        summary.videos += 1
        if store.has(entry.video_id, "faces"):
            if options.force:
                todo.append(entry)
                continue
            stored = store.faces_settings(entry.video_id)
            if {key: stored.get(key) for key in options.settings()} != options.settings():
                summary.settings_conflicts += 1
            summary.already_done += 1
            continue
        todo.append(entry)
    if summary.settings_conflicts:
        reporter.warn(f"{summary.settings_conflicts} videos were cropped with other settings; "
                      "pass --force to crop them again with these")
    if not todo:
        return summary
    landmarker = Landmarker()
    detector = make_detector(options.detector, device=device, detect_max_side=options.detect_max_side,
                             landmarker=landmarker)
    reporter.start(len(todo), "crop")
    for entry in todo:
        try:
            frames = store.read_frames(entry.video_id)
        except DamagedSegmentError as exc:
            store.drop_segment(entry.video_id, "frames")
            summary.damaged.append(entry.path)
            reporter.warn(f"{entry.path}: its frames in {exc.segment} are damaged ({exc.reason}); dropped them: "
                          "run `dfd extract` again to redo this video")
            reporter.advance(entry.video_id)
            continue
        result = extract_faces(list(frames.pixels), detector, size=options.size, align=options.align,
                               margin=options.margin)
        positions = np.asarray(result.frame_positions, dtype=np.int64)
        missing = np.asarray(result.missing_positions, dtype=np.int64)
        faces = Faces(
            crops=result.crops.reshape(-1, options.size, options.size, 3),
            frame_indices=frames.indices[positions] if len(positions) else np.zeros(0, np.int64),
            boxes=np.asarray(result.boxes, np.float32).reshape(-1, 4),
            landmarks=np.asarray(result.landmarks, np.float32).reshape(-1, 5, 2),
            scores=np.asarray(result.scores, np.float32),
            track_ids=np.asarray(result.track_ids, np.int32),
            missing_frames=frames.indices[missing] if len(missing) else np.zeros(0, np.int64),
            settings=options.settings() | {"tracks": int(result.n_tracks)},
            landmarks68=crop_landmarks68(landmarker, result),
        )
        store.write_faces(entry.video_id, faces)
        summary.cropped += 1
        summary.frames += len(frames.indices)
        summary.faces += len(positions)
        if not len(positions):
            summary.no_face_videos.append(entry.path)
            reporter.warn(f"{entry.path}: no face found in any of {len(frames.indices)} frames")
        reporter.advance(entry.video_id)
    reporter.finish()
    return summary


def crop_landmarks68(landmarker: Landmarker, result: FaceTrackResult) -> np.ndarray:
    """(n, 68, 2) float32 landmarks of each crop, in crop pixels, from its 5 points mapped into it."""
    points5 = [cv2.transform(p[None].astype(np.float64), m.astype(np.float64))[0]
               for p, m in zip(result.landmarks, result.matrices)]
    points = [landmarker.for_crop(crop, p) for crop, p in zip(result.crops, points5)]
    return np.array(points, np.float32).reshape(-1, 68, 2)
