"""`dfd predict`: one video in, one calibrated probability out.

The same steps as the training pipeline, read from the bundle's config.json: sample the
bundle's `fpv` frames the way it was trained, find every face track (MTCNN), crop each the
way the bundle's faces were cropped, score each track with CNN + BiLSTM (deepfake_cli.scoring,
the code evaluate measures with) and report the most suspicious one. A failure is an error with its own exit code, never a silent 0.5.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deepfake_cli.bundle import Bundle, load_bundle, resolve_bundle
from deepfake_cli.detectors import make_detector, resolve_device
from deepfake_cli.errors import EXIT_NO_FACE, EXIT_UNREADABLE, DfdError
from deepfake_cli.faces import faces_from_track
from deepfake_cli.files import to_jsonable
from deepfake_cli.result_files import ResultWriter
from deepfake_cli.scoring import NonFiniteScoreError, Scorer
from deepfake_cli.annotate import write_annotated
from deepfake_cli.clip_report import write_clip_report
from deepfake_cli.heatmaps import ActivationMapper, write_heatmaps
from deepfake_cli.identity import FaceDescriber, IdentityCheck
from deepfake_cli.tracking import detect_sparse
from deepfake_cli.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoError, is_image, sample_frames

MIN_TRACK_FRACTION = 0.25  # a track seen in fewer of the sampled frames is a passer-by or a false detection
# A face less than this times the size of the largest one is a bystander, a face on a poster or
# a false detection: the CNN was trained on main faces, and an upscaled 30 px face says nothing.
MIN_RELATIVE_FACE_SIZE = 0.6
# A face at least this big (median box side, px) and seen in half the frames is scored even when
# smaller than that; under it, the verdict carries a warning (an upscaled face holds little detail).
MIN_USEFUL_FACE_SIDE = 64


class PredictError(DfdError):
    """The inputs or the model cannot be used; the message says why."""


@dataclass
class PredictResult:
    path: str
    verdict: str = ""  # real | fake | "" on error
    probability: float = float("nan")  # calibrated P(fake)
    threshold: float = float("nan")
    cnn_probability: float = float("nan")  # mean CNN frame score of the reported (most suspicious) track
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    track_probabilities: list[float] = field(default_factory=list)
    track_reports: list[dict] = field(default_factory=list)  # every track seen (TrackReport), scored or not
    frame_scores: list[float] = field(default_factory=list)  # CNN P(fake) per face of the reported track
    warnings: list[str] = field(default_factory=list)  # what weakens or qualifies the verdict
    heatmaps: list[str] = field(default_factory=list)  # --heatmap: the images written
    report: str = ""  # --report: the HTML page written
    error: str = ""
    exit_code: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return to_jsonable(asdict(self))

    def tracks_summary(self) -> str:
        """'2 faces seen, 1 scored (the other: ...)' when more than one face track was seen, else ''."""
        if len(self.track_reports) < 2:
            return ""
        skipped = [r for r in self.track_reports if not r["scored"]]
        text = f"{len(self.track_reports)} faces seen, {len(self.track_reports) - len(skipped)} scored"
        if skipped:
            text += " (not scored: " + "; ".join(r["reason"] for r in skipped) + ")"
        return text


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the videos and images inside, sorted.

    Nothing is refused here: a folder without media stays in the list as itself, and a missing,
    unreadable or looping file as given, so that each is reported on its own line (by
    :meth:`Predictor.predict`) while the other inputs are scored.
    """
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if (p.is_file() or p.is_symlink())
                           and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES)
            files.extend(found or [path])
        else:
            files.append(path)
    return files


def default_bundle_dirs(models_dir: Path) -> list[Path]:
    """Where the default model is looked for: ``--models-dir``/default (one you trained), then the
    bundle shipped inside the package (deepfake_cli/default_model), so any install finds it."""
    return [models_dir / "default", Path(__file__).resolve().parent / "default_model"]


class Predictor:
    """Holds the face detector and the bundle's Scorer (its models and scoring rule, shared
    with export-features, calibrate and evaluate), so a batch of videos loads them once."""

    def __init__(self, bundle: Bundle, device: str = "auto", threshold: float | None = None,
                 max_fpr: float | None = None, detect_every: int = 4):
        if detect_every < 1:
            raise PredictError("--detect-every must be at least 1")
        self.detect_every = detect_every
        self.bundle = bundle
        self.config = bundle.config
        self.scorer = Scorer(bundle)
        self.detector = make_detector(self.config.face.get("detector", "mtcnn"), device=resolve_device(device),
                                      detect_max_side=int(self.config.face.get("detect_max_side", 640)))
        self.threshold = self._threshold(threshold, max_fpr)
        self.describer = FaceDescriber()  # who a face is: a track never passes to another person at a cut
        self._mapper: ActivationMapper | None = None  # --heatmap: built on first use

    @classmethod
    def load(cls, model: str | None, models_dir: Path = Path("models"), **kwargs) -> "Predictor":
        if model is None:
            candidates = [d for d in default_bundle_dirs(models_dir) if (d / "config.json").exists()]
            if not candidates:
                raise PredictError("no default model is installed (looked in "
                                   + ", ".join(str(d) for d in default_bundle_dirs(models_dir))
                                   + "); pass --model NAME or train one with `dfd train-cnn`")
            path = candidates[0]
        else:
            path = resolve_bundle(model, models_dir)
        return cls(load_bundle(path), **kwargs)

    def _threshold(self, threshold: float | None, max_fpr: float | None) -> float:
        if threshold is not None and max_fpr is not None:
            raise PredictError("give --threshold or --max-fpr, not both")
        if threshold is not None:
            if not 0.0 < threshold < 1.0:
                raise PredictError("--threshold must be between 0 and 1")
            return float(threshold)
        if max_fpr is not None:
            table = {float(k): float(v) for k, v in (self.config.thresholds_at_fpr or {}).items()}
            if max_fpr not in table:
                raise PredictError(f"the bundle has no threshold calibrated for --max-fpr {max_fpr}; "
                                   f"it has: {', '.join(str(k) for k in sorted(table)) or 'none'}")
            return table[max_fpr]
        return float(self.config.threshold)

    # ---------------------------------------------------------------------- one video
    def predict(self, path: Path, annotate: Path | None = None, heatmap: Path | None = None,
                report: Path | None = None, annotate_heatmap: bool = False) -> PredictResult:
        result = PredictResult(path=str(path), threshold=self.threshold)
        clock = time.perf_counter()
        if path.is_dir():  # expand_inputs keeps a folder only when it holds no media
            result.error, result.exit_code = f"{path}: a folder with no video or image files in it", EXIT_UNREADABLE
            return result
        try:
            info, kept, frames = sample_frames(path, self.config.fpv, self.config.sampling)
        except VideoError as exc:
            result.error, result.exit_code = str(exc), exc.exit_code
            return result
        result.frames = len(kept)
        if info.header_frame_count is not None:
            result.warnings.append(f"frame count in header: {info.header_frame_count}, decoded: {info.frame_count}")
        result.seconds["decode"] = time.perf_counter() - clock

        clock = time.perf_counter()
        frame_list = list(frames)
        every = self.detect_every if self.config.sampling == "consecutive" else 1
        all_tracks = detect_sparse(self.detector, frame_list, every,
                                   identity=lambda key_frames: IdentityCheck(key_frames, self.describer))
        reports = judge_tracks(all_tracks, len(frame_list))
        tracks = [all_tracks[r.track] for r in reports if r.scored]
        scored_reports = [r for r in reports if r.scored]
        result.seconds["detect"] = time.perf_counter() - clock
        if not tracks:
            result.error = f"{path}: no face found in any of the {len(kept)} sampled frames"
            result.exit_code = EXIT_NO_FACE
            return result

        clock = time.perf_counter()
        face = self.config.face
        crops = [faces_from_track(frame_list, track, track_id=i, n_tracks=len(tracks), size=int(face["size"]),
                                  align=bool(face["align"]), margin=float(face["margin"]))
                 for i, track in enumerate(tracks)]
        try:
            features, scores = self.scorer.frames(np.concatenate([c.crops for c in crops]))
            result.seconds["cnn"] = time.perf_counter() - clock

            clock = time.perf_counter()
            probabilities, offset = [], 0
            for track_crops in crops:
                n = len(track_crops.crops)
                probabilities.append(self.scorer.probability(features[offset:offset + n], scores[offset:offset + n]))
                offset += n
        except NonFiniteScoreError as exc:
            result.error, result.exit_code = f"{path}: {exc}", exc.exit_code
            return result
        result.seconds["lstm"] = time.perf_counter() - clock

        worst = int(np.argmax(probabilities))
        for r, p in zip(scored_reports, probabilities):
            r.probability = round(float(p), 6)
        result.track_reports = [asdict(r) for r in reports]
        result.warnings += evidence_warnings(scored_reports[worst], len(frame_list), is_image(path),
                                             self.scorer.bundle.seq_len)
        result.tracks = len(tracks)
        result.track_probabilities = [round(float(p), 6) for p in probabilities]
        result.probability = float(probabilities[worst])
        result.faces = int(len(crops[worst].crops))
        start = sum(len(c.crops) for c in crops[:worst])
        result.frame_scores = [round(float(s), 6) for s in scores[start:start + result.faces]]
        result.cnn_probability = float(np.mean(result.frame_scores))
        result.verdict = "fake" if result.probability >= self.threshold else "real"
        reported = crops[worst]
        reported_frames = kept[np.asarray(reported.frame_positions, np.int64)]
        cams = None
        if heatmap is not None or report is not None or (annotate is not None and annotate_heatmap):
            if self._mapper is None:
                self._mapper = ActivationMapper(self.scorer.feature_model, int(self.config.input_size))
            cams = self._mapper(reported.crops)
            if heatmap is not None:
                written = write_heatmaps(heatmap, path.stem, reported.crops, cams, reported_frames, result.frame_scores)
                result.heatmaps = [str(p) for p in written]
            if report is not None:
                write_clip_report(report, result, info, self.config, reported_frames, reported.crops, cams)
                result.report = str(report)
        if annotate is not None:
            write_annotated(annotate, frame_list, crops[worst], scores[start:start + result.faces],
                            result, fps=info.fps or 5.0, cams=cams if annotate_heatmap else None)
        return result


@dataclass
class TrackReport:
    """One face track of a clip: where it was, how much of it was seen, and whether it was scored."""

    track: int
    frames_seen: int
    face_side: float  # median side of its boxes, in frame pixels
    median_box: list[float]  # x1, y1, x2, y2 in frame pixels
    scored: bool
    reason: str = ""  # why it was not scored
    probability: float | None = None  # calibrated P(fake) when scored


def judge_tracks(tracks: list[list], n_frames: int) -> list[TrackReport]:
    """Which face tracks are worth scoring, and why the others are not (the main one always is).

    A track is scored when it is seen in at least MIN_TRACK_FRACTION of the sampled frames and
    its face is either at least MIN_RELATIVE_FACE_SIZE times the largest one, or a usable face
    in its own right (MIN_USEFUL_FACE_SIDE px or more, in at least half the frames): a
    smaller deepfake beside a bigger real face is still scored.
    """
    reports = []
    for i, t in enumerate(tracks):
        boxes = np.array([d.box for d in t if d is not None], np.float32)
        sides = [math.sqrt(d.area) for d in t if d is not None]
        reports.append(TrackReport(track=i, frames_seen=len(sides), face_side=round(float(np.median(sides)), 1),
                                   median_box=[round(float(v), 1) for v in np.median(boxes, axis=0)], scored=False))
    seen_enough = max(1, MIN_TRACK_FRACTION * n_frames)
    largest = max((r.face_side for r in reports if r.frames_seen >= seen_enough), default=0.0)
    for r in reports:
        if r.frames_seen < seen_enough:
            r.reason = f"seen in {r.frames_seen} of {n_frames} frames (under {MIN_TRACK_FRACTION:.0%})"
        elif r.face_side >= MIN_RELATIVE_FACE_SIZE * largest:
            r.scored = True
        elif r.face_side >= MIN_USEFUL_FACE_SIDE and r.frames_seen >= 0.5 * n_frames:
            r.scored = True
        else:
            r.reason = (f"{r.face_side:.0f} px, under {MIN_RELATIVE_FACE_SIZE}x the main face ({largest:.0f} px) "
                        f"and under {MIN_USEFUL_FACE_SIDE} px or seen in under half the frames")
    if reports and not any(r.scored for r in reports):
        reports[0].scored, reports[0].reason = True, ""  # the most important track, whatever it is
    return reports


def tracks_to_score(tracks: list[list], n_frames: int) -> list[list]:
    """The face tracks worth scoring (see :func:`judge_tracks`), in their order."""
    return [tracks[r.track] for r in judge_tracks(tracks, n_frames) if r.scored]


def evidence_warnings(report: TrackReport, n_frames: int, single_image: bool, seq_len: int) -> list[str]:
    """What makes the verdict on this (the reported) track weak evidence."""
    warnings = []
    if report.face_side < MIN_USEFUL_FACE_SIDE:
        warnings.append(f"small face ({report.face_side:.0f} px, under {MIN_USEFUL_FACE_SIDE} px): it was upscaled "
                        "for the model, so the verdict rests on little detail")
    if not single_image and report.frames_seen < 0.5 * n_frames:
        warnings.append(f"the face was found in only {report.frames_seen} of the {n_frames} sampled frames")
    if single_image:
        warnings.append("a single image: no motion or sequence evidence (the model was made for video clips)")
    elif n_frames < seq_len:
        warnings.append(f"only {n_frames} frames, fewer than the {seq_len} the model's sequence stage reads")
    return warnings


def write_csv(path: Path, results: list[PredictResult]) -> None:
    """One CSV row per result (the columns of deepfake_cli.result_files.CSV_COLUMNS)."""
    with ResultWriter(csv_path=path) as writer:
        for r in results:
            writer.write(r.as_dict())
