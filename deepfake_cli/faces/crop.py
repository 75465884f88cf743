"""`dfd crop`: detect, track, align and crop the main face of every stored video.

Faces are found by the face rule `predict` follows (deepfake_cli.faces.track_rule): the
detector runs on every frame, or with ``detect_every`` N > 1 on every N-th frame of a
consecutively sampled video (and its last), the tracks interpolated between; videos sampled
otherwise, or holding spread frames beside their consecutive ones (extract --spread), are
detected on every frame. Tracks are linked with the identity check, and the main one is stored.
A video extracted in several windows (extract --windows) has each window tracked and cropped
on its own, as `predict` tracks the windows it judges (video.window_positions, the same face
rule), and each face records its window.
The faces' settings record the rule (``detect_every`` and ``track_rule``); `train-cnn` copies
them into the bundle, so `predict` serves its clips by the rule its faces were made by. Each
face keeps the roles of its frame (store.ROLE_*).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from deepfake_cli.faces.detectors import Detection, FaceDetector, check_detector, make_detector, resolve_device
from deepfake_cli.errors import OptionsError
from deepfake_cli.faces.face_crops import FaceTrackResult, extract_faces
from deepfake_cli.faces.identity import FaceDescriber
from deepfake_cli.faces.landmarks import Landmarker
from deepfake_cli.faces.track_rule import TrackRule
from deepfake_cli.progress import Reporter
from deepfake_cli.data.shards import Shard
from deepfake_cli.data.store import DamagedSegmentError, Faces, Store, VideoEntry
from deepfake_cli.data.video import window_positions


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
    detect_every: int = 1  # detect on every N-th frame of consecutive clips, interpolate between

    def check(self) -> None:
        """OptionsError naming the option that is out of range."""
        if self.size < 16:
            raise OptionsError("--size must be at least 16 pixels")
        if not 0 <= self.margin <= 1:
            raise OptionsError("--margin must be between 0 and 1")
        if (isinstance(self.detect_every, bool) or not isinstance(self.detect_every, (int, np.integer))
                or self.detect_every < 1):
            raise OptionsError(f"--detect-every must be a whole number of at least 1 (1: detect on every frame), "
                               f"not {self.detect_every!r}")
        check_detector(self.detector)

    @property
    def rule(self) -> TrackRule:
        """The face rule these faces are made by (and `predict` serves them by)."""
        return TrackRule(detect_every=int(self.detect_every))

    def every_for(self, entry: VideoEntry) -> int:
        """The detection stride for this video: ``detect_every`` when its frames were sampled
        consecutively (neighbouring frames, so a face moves little between them), else 1."""
        return self.rule.stride(entry.sampling == "consecutive" and not entry.spread)

    def settings(self, every: int | None = None) -> dict:
        """How the faces were made (the shard is not one of these), the face rule included.
        ``every``: the stride detection ran at (default ``detect_every``)."""
        settings = {"size": self.size, "align": self.align, "margin": self.margin, "detector": self.detector,
                    "detect_max_side": self.detect_max_side, "landmarks68": "dlib"}
        return settings | self.rule.settings(every)


def settings_differ(stored: dict, wanted: dict) -> bool:
    """Whether faces stored with ``stored`` settings were made otherwise than ``wanted``
    (CropOptions.settings) asks. Keys ``wanted`` lacks are not compared ("tracks");
    detect_every is 1 where it is missing (faces of a dfd that recorded it only when not 1),
    and faces with no track_rule were linked by another rule (no identity check)."""
    every = lambda s: s.get("detect_every", 1)  # noqa: E731
    return every(stored) != every(wanted) or any(stored.get(k) != v for k, v in wanted.items()
                                                 if k != "detect_every")


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
    detected_frames: int = 0  # frames the detector ran on (fewer than `frames` with detect_every > 1)
    # where the time went: setup (loading the detector), read (frames from the store), detect, track_crop
    # (tracking, interpolation, alignment and crops), landmarks68 (with loading the 68-point model on first
    # use), write (faces to the store)
    seconds: dict = field(default_factory=dict)

    @property
    def face_rate(self) -> float:
        return self.faces / self.frames if self.frames else float("nan")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["face_rate"] = self.face_rate
        return d


def crop(store: Store, options: CropOptions, reporter: Reporter | None = None) -> CropSummary:
    """Write the faces of every video that has frames and no faces yet."""
    options.check()
    reporter = reporter or Reporter()
    seconds: dict = {}
    clock = _Clock(seconds)
    with clock("setup"):
        device = resolve_device(options.device)
    summary = CropSummary(device=device, seconds=seconds)
    todo = []
    for entry in store.entries():
        if not entry.ok or not store.has(entry.video_id, "frames"):
            continue
        if options.shard is not None and not options.shard.holds(entry.video_id):
            continue
        summary.videos += 1
        if store.has(entry.video_id, "faces"):
            if options.force and len(store.frame_roles(entry.video_id)):
                todo.append(entry)
                continue
            if options.force:  # faces without frames (`dfd unpack`): nothing to crop them from again
                summary.already_done += 1
                continue
            if settings_differ(store.faces_settings(entry.video_id), options.settings(options.every_for(entry))):
                summary.settings_conflicts += 1
            summary.already_done += 1
            continue
        todo.append(entry)
    if summary.settings_conflicts:
        reporter.warn(f"{summary.settings_conflicts} videos were cropped with other settings; "
                      "pass --force to crop them again with these")
    if not todo:
        return summary
    every_frame = sum(options.every_for(entry) != options.detect_every for entry in todo)
    if every_frame:
        reporter.warn(f"{every_frame} of {len(todo)} videos were not sampled consecutively: their faces are "
                      "detected on every frame (--detect-every interpolates between neighbouring frames only; "
                      "videos extracted with --spread hold frames far apart)")
    with clock("setup"):
        landmarker = Landmarker()
        describer = FaceDescriber()  # who a face is, across a hard cut (loaded on first need)
        detector = _TimedDetector(make_detector(options.detector, device=device,
                                                detect_max_side=options.detect_max_side, landmarker=landmarker),
                                  clock)
    reporter.start(len(todo), "crop")
    for entry in todo:
        try:
            with clock("read"):
                frames = store.read_frames(entry.video_id)
        except DamagedSegmentError as exc:
            store.drop_segment(entry.video_id, "frames")
            summary.damaged.append(entry.path)
            reporter.warn(f"{entry.path}: its frames in {exc.segment} are damaged ({exc.reason}); dropped them: "
                          "run `dfd extract` again to redo this video")
            reporter.advance(entry.video_id)
            continue
        every = options.every_for(entry)
        with clock("track_crop"):  # less the detector's time, which _TimedDetector books as "detect"
            result, windows = window_faces(list(frames.pixels), frames.indices, entry, lambda window: extract_faces(
                window, detector, size=options.size, align=options.align, margin=options.margin, every=every,
                identity=options.rule.identity, describer=describer))
        with clock("landmarks68"):
            landmarks68 = crop_landmarks68(landmarker, result)
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
            settings=options.settings(every) | {"tracks": int(result.n_tracks)},
            landmarks68=landmarks68,
            roles=None if frames.roles is None else frames.roles[positions],
            windows=windows,
        )
        with clock("write"):
            store.write_faces(entry.video_id, faces)
        summary.cropped += 1
        summary.frames += len(positions) + len(missing)  # of each window (a video of one: its frames)
        summary.faces += len(positions)
        if not len(positions):
            summary.no_face_videos.append(entry.path)
            reporter.warn(f"{entry.path}: no face found in any of {len(frames.indices)} frames")
        reporter.advance(entry.video_id)
    reporter.finish()
    summary.detected_frames = detector.frames
    return summary


def window_faces(pixels: list[np.ndarray], kept: np.ndarray, entry: VideoEntry,
                 main_face) -> tuple[FaceTrackResult, np.ndarray | None]:
    """The main face of each window of a video's stored frames (video.window_positions: the
    windows `predict` judges; one of every frame unless it was extracted with --windows), each
    tracked on its own by ``main_face`` (frames -> FaceTrackResult), its positions (found and
    missing, window after window: a frame in two windows counts in each) mapped back into all
    the frames; and the window of each face (None for a video of one window)."""
    spans = window_positions(kept, entry.frame_count, entry.fpv, entry.sampling, entry.windows) or [
        list(range(len(kept)))]
    parts = [(main_face([pixels[p] for p in span]), np.asarray(span, np.int64)) for span in spans]
    if entry.windows == 1:
        return parts[0][0], None
    cat = lambda name: np.concatenate([getattr(r, name) for r, _ in parts])  # noqa: E731
    found = np.concatenate([span[r.frame_positions] for r, span in parts])
    missing = [int(span[m]) for r, span in parts for m in r.missing_positions]
    result = FaceTrackResult(crops=cat("crops"), frame_positions=found, boxes=cat("boxes"), landmarks=cat("landmarks"),
                             scores=cat("scores"), track_ids=cat("track_ids"), missing_positions=missing,
                             n_tracks=max(r.n_tracks for r, _ in parts), matrices=cat("matrices"))
    return result, np.concatenate([np.full(len(r.crops), w, np.int32) for w, (r, _) in enumerate(parts)])


class _Clock:
    """Adds the seconds spent in ``with clock(stage):`` blocks to ``seconds[stage]``; time booked
    to another stage inside a block (the detector's, inside "track_crop") is left out of it."""

    def __init__(self, seconds: dict):
        self.seconds = seconds
        self._inner = 0.0  # seconds booked by nested blocks of the block now open

    @contextmanager
    def __call__(self, stage: str):
        outer, self._inner = self._inner, 0.0
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed - self._inner
            self._inner = outer + elapsed


class _TimedDetector:
    """A detector that counts the frames it runs on and books its time as "detect"."""

    def __init__(self, detector: FaceDetector, clock: _Clock):
        self.detector, self.clock, self.frames = detector, clock, 0
        self.name = detector.name

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        self.frames += len(frames)
        with self.clock("detect"):
            return self.detector.detect(frames)


def crop_landmarks68(landmarker: Landmarker, result: FaceTrackResult) -> np.ndarray:
    """(n, 68, 2) float32 landmarks of each crop, in crop pixels, from its 5 points mapped into it."""
    points5 = [cv2.transform(p[None].astype(np.float64), m.astype(np.float64))[0]
               for p, m in zip(result.landmarks, result.matrices)]
    points = [landmarker.for_crop(crop, p) for crop, p in zip(result.crops, points5)]
    return np.array(points, np.float32).reshape(-1, 68, 2)
