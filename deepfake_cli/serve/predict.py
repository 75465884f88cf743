"""`dfd predict`: one video in, one calibrated probability out.

The same steps as the training pipeline, read from the bundle's config.json: sample the
bundle's `fpv` frames the way it was trained, find every face track (MTCNN) by the face rule
its faces were cropped by (deepfake_cli.faces.track_rule: detection stride, identity check),
crop each the way the bundle's faces were cropped, score each track worth scoring with CNN +
BiLSTM (deepfake_cli.scoring.scorer, the code evaluate measures with) and report the track the
rule chooses: the main face, the one `crop` stored and `evaluate` measured (the others are
reported beside it), or, for a bundle that records no rule (the shipped default), the most
suspicious one, as predict always did. A failure is an error with its own exit code, never a
silent 0.5.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from deepfake_cli.nets.bundle import Bundle, load_bundle
from deepfake_cli.faces.detectors import default_engine, make_detector, resolve_device
from deepfake_cli.scoring.ensemble import Ensemble, is_ensemble, load_ensemble
from deepfake_cli.errors import EXIT_NO_FACE, EXIT_UNREADABLE, DfdError
from deepfake_cli.serve.judged import describe_judged
from deepfake_cli.scoring.windows import choose_per_window
from deepfake_cli.serve.evidence import (ensemble_warnings, evidence_warnings, judge_tracks, other_face_warnings,
                                         sequence_warnings)
from deepfake_cli.faces.face_crops import faces_from_track
from deepfake_cli.serve.model_choice import locate_model, model_runtime
from deepfake_cli.scoring.scorer import NonFiniteScoreError, Scorer, verdict
from deepfake_cli.report.annotate import write_annotated
from deepfake_cli.report.clip_report import write_clip_report
from deepfake_cli.report.heatmaps import ActivationMapper, activation_mapper, write_heatmaps
from deepfake_cli.faces.identity import FaceDescriber
from deepfake_cli.data.inputs import letterboxed
from deepfake_cli.faces.track_rule import face_tracks, served_rule
from deepfake_cli.data.video import (IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoError, is_image, sample_frames,
                                     window_positions)
from deepfake_cli.serve.result import PredictResult, Prepared  # re-exported: the API's result types


class PredictError(DfdError):
    """The inputs or the model cannot be used; the message says why."""


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the videos and images inside, sorted.

    Nothing is refused here: a folder without media stays in the list as itself, and a missing,
    unreadable or looping file as given, so that each is reported on its own line (by
    :meth:`Predictor.predict`) while the other inputs are scored.
    """
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            # not only regular files: a pipe or socket named like a video gets its own error line,
            # as when it is named directly, instead of vanishing from the batch
            found = sorted(p for p in path.rglob("*") if not p.is_dir()
                           and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES)
            files.extend(found or [path])
        else:
            files.append(path)
    return files


def load_predictor(model: str | Path | None, models_dir: Path = Path("models"), runtime: str = "auto", **kwargs):
    """A Predictor for a bundle, or an EnsemblePredictor for an ensemble (by name or directory;
    None: the default model), served by ``runtime`` (auto: ONNX when the bundle has it, see
    deepfake_cli.scoring.onnx_serving)."""
    path = locate_model(None if model is None else str(model), models_dir)
    return open_predictor(path, model_runtime(path, runtime, kwargs.get("device", "auto")), **kwargs)


def open_predictor(path: Path, runtime: str, **kwargs):
    """The predictor of the model at ``path`` on a runtime already chosen by :func:`model_runtime`
    (whose ONNX checks, which hash the files, are not repeated)."""
    if is_ensemble(path):
        return EnsemblePredictor(load_ensemble(path), runtime=runtime, **kwargs)
    return Predictor(load_bundle(path), runtime=runtime, **kwargs)


def choose_threshold(calibrated: float, at_fpr: dict, threshold: float | None, max_fpr: float | None) -> float:
    """--threshold, else the calibrated threshold for --max-fpr, else the model's own."""
    if threshold is not None and max_fpr is not None:
        raise PredictError("give --threshold or --max-fpr, not both")
    if threshold is not None:
        if not 0.0 < threshold < 1.0:
            raise PredictError("--threshold must be between 0 and 1")
        return float(threshold)
    if max_fpr is not None:
        table = {float(k): float(v) for k, v in (at_fpr or {}).items()}
        if max_fpr not in table:
            raise PredictError(f"the model has no threshold calibrated for --max-fpr {max_fpr}; "
                               f"it has: {', '.join(str(k) for k in sorted(table)) or 'none'}")
        return table[max_fpr]
    return float(calibrated)


class Predictor:
    """Holds the face detector and the bundle's Scorer (its models and scoring rule, shared
    with export-features, calibrate and evaluate), so a batch of videos loads them once.

    ``detectors`` is shared by an ensemble's members, so that members with the same detector
    settings use one detector; ``cache`` (per clip, see :meth:`predict`) shares decoded frames
    and face tracks between members that sample and detect alike. ``detect_every``: the
    detection stride, overriding the bundle's face rule (None: the rule's; a bundle that records
    none, every 4th frame, see track_rule.LEGACY_RULE).
    """

    def __init__(self, bundle: Bundle, device: str = "auto", threshold: float | None = None,
                 max_fpr: float | None = None, detect_every: int | None = None, detectors: dict | None = None,
                 runtime: str = "keras", windows: int | None = None):
        if detect_every is not None and (isinstance(detect_every, bool) or not isinstance(detect_every, int)
                                         or detect_every < 1):
            raise PredictError(f"--detect-every must be a whole number of at least 1, not {detect_every!r}")
        self.bundle = bundle
        self.rule = served_rule(bundle.config.face, detect_every)  # how faces are found, and whose verdict
        # windows of fpv consecutive frames judged over the clip (0: all that fit; the bundle's, else 1)
        self.windows = int(bundle.config.windows if windows is None else windows)
        self.config = bundle.config
        self.runtime = runtime  # "onnx": the CNN and LSTM on onnxruntime (no TensorFlow)
        self.scorer = Scorer(bundle, runtime=runtime)
        self.frame_model = self.config.input == "frame"  # scores whole frames: no face detector
        detectors = {} if detectors is None else detectors
        device = "cpu" if runtime == "onnx" else resolve_device(device)
        # MTCNN runs as `crop` runs it on this device (onnxruntime on the CPU), whatever runs the CNN
        self.detector_key = (self.config.face.get("detector", "mtcnn"), device,
                             int(self.config.face.get("detect_max_side", 640)), default_engine(device))
        if not self.frame_model and self.detector_key not in detectors:
            name, resolved, max_side, engine = self.detector_key
            detectors[self.detector_key] = make_detector(name, device=resolved, detect_max_side=max_side, engine=engine)
        self.detector = None if self.frame_model else detectors[self.detector_key]
        self.threshold = choose_threshold(self.config.threshold, self.config.thresholds_at_fpr, threshold, max_fpr)
        # the band of calibrated P too close to call (fitted with the model's threshold: not with another one)
        self.uncertain = list(self.config.uncertain) if threshold is None and max_fpr is None else []
        self.describer = FaceDescriber()  # who a face is: a track never passes to another person at a cut
        self._mapper: ActivationMapper | None = None  # --heatmap: built on first use

    def _sampled(self, path: Path, cache: dict):
        """(info, kept frame indices, frames) of the clip as this bundle samples it (shared through ``cache``)."""
        key = ("sampled", self.config.fpv, self.config.sampling, self.windows)
        if key not in cache:
            info, kept, frames = sample_frames(path, self.config.fpv, self.config.sampling, windows=self.windows)
            cache[key] = (info, kept, list(frames))
        return cache[key]

    def _tracks(self, frame_list: list, cache: dict, window: tuple = ()) -> list[list]:
        """Every face track of the sampled frames of a window (shared through ``cache`` with members
        that detect alike)."""
        every = self.rule.stride(self.config.sampling == "consecutive")
        key = ("tracks", self.config.fpv, self.config.sampling, self.detector_key, every, self.rule.identity, window)
        if key not in cache:
            cache[key] = face_tracks(self.detector, frame_list, every, self.rule.identity, self.describer)
        return cache[key]

    # ---------------------------------------------------------------------- one video
    def predict(self, path: Path, annotate: Path | None = None, heatmap: Path | None = None,
                report: Path | None = None, annotate_heatmap: bool = False,
                cache: dict | None = None, evidence_name: str | None = None) -> PredictResult:
        """Score one clip. ``cache``: a dict kept for one clip across an ensemble's members;
        ``evidence_name``: what its heatmap files are named after (default: the file's stem)."""
        return self.finish(self.prepare(path, cache), annotate=annotate, heatmap=heatmap, report=report,
                           annotate_heatmap=annotate_heatmap, evidence_name=evidence_name)

    def prepare(self, path: Path, cache: dict | None = None) -> "Prepared":
        """Everything before the CNN: decode, detect and track faces, crop them (or letterbox the
        frames of a frame model). Touches no model but the detector, so it may run in another
        thread while the CNN scores other clips (:func:`predict_many`)."""
        cache = {} if cache is None else cache
        prepared = Prepared(PredictResult(path=str(path), threshold=self.threshold,
                                          uncertain_band=list(self.uncertain)), is_image(path))
        result = prepared.result
        clock = time.perf_counter()
        if path.is_dir():  # expand_inputs keeps a folder only when it holds no media
            result.error, result.exit_code = f"{path}: a folder with no video or image files in it", EXIT_UNREADABLE
            return prepared
        try:
            prepared.info, prepared.kept, prepared.frame_list = self._sampled(path, cache)
        except VideoError as exc:
            result.error, result.exit_code = str(exc), exc.exit_code
            return prepared
        result.frames = len(prepared.kept)
        if prepared.info.header_frame_count is not None:
            result.warnings.append(f"frame count in header: {prepared.info.header_frame_count}, "
                                   f"decoded: {prepared.info.frame_count}")
        result.seconds["decode"] = time.perf_counter() - clock
        if self.frame_model:
            prepared.inputs = letterboxed(prepared.frame_list, int(self.config.input_size))
            return prepared

        clock = time.perf_counter()
        face = self.config.face
        spans = window_positions(prepared.kept, prepared.info.frame_count, self.config.fpv, self.config.sampling,
                                 self.windows)
        for w, positions in enumerate(spans):  # each window tracked on its own, as `crop` tracks a stored one
            frames = [prepared.frame_list[p] for p in positions]
            all_tracks = self._tracks(frames, cache, tuple(positions))
            reports = judge_tracks(all_tracks, len(frames), main=self.rule.choose == "main")
            tracks = [all_tracks[r.track] for r in reports if r.scored]
            prepared.reports += reports
            prepared.report_window += [w] * len(reports)
            prepared.window_frames.append(len(frames))
            prepared.track_window += [w] * len(tracks)
            prepared.crops += [replace(c, frame_positions=np.asarray(positions, np.int64)[c.frame_positions])
                               for c in (faces_from_track(frames, track, track_id=i, n_tracks=len(tracks),
                                                          size=int(face["size"]), align=bool(face["align"]),
                                                          margin=float(face["margin"]))
                                         for i, track in enumerate(tracks))]
        result.seconds["detect"] = time.perf_counter() - clock
        if not prepared.crops:
            result.error = f"{path}: no face found in any of the {len(prepared.kept)} sampled frames"
            result.exit_code = EXIT_NO_FACE
            return prepared
        prepared.inputs = np.concatenate([c.crops for c in prepared.crops])
        return prepared

    def prepare_frames(self, frames, name: str = "<frames>", fps: float = 0.0) -> "Prepared":
        """:meth:`prepare` for a clip already decoded: RGB frames (H x W x 3 uint8) in memory, sampled
        as a video file of them would be (deepfake_cli.data.memory_frames); ``name`` is the result's path."""
        from deepfake_cli.data.memory_frames import sample_array

        info, kept, frames = sample_array(frames, self.config.fpv, self.config.sampling, fps, self.windows)
        cache = {("sampled", self.config.fpv, self.config.sampling, self.windows): (info, kept, list(frames))}  # as _sampled
        prepared = self.prepare(Path(name), cache)
        prepared.single_image = info.frame_count == 1
        return prepared

    def finish(self, prepared: "Prepared", outputs: tuple[np.ndarray, np.ndarray] | None = None,
               annotate: Path | None = None, heatmap: Path | None = None, report: Path | None = None,
               annotate_heatmap: bool = False, evidence_name: str | None = None) -> PredictResult:
        """The verdict of a prepared clip: the CNN on its inputs (or their ``outputs``, when
        :func:`predict_many` ran the CNN on several clips at once), then the LSTM and the evidence."""
        result = prepared.result
        if result.error:
            return result
        clock = time.perf_counter()
        try:
            if outputs is None:
                outputs = self.scorer.frames(prepared.inputs)
                result.seconds["cnn"] = time.perf_counter() - clock
            features, scores = outputs
            clock = time.perf_counter()
            if self.frame_model:
                self._frames_verdict(result, features, scores, len(prepared.frame_list), prepared.single_image)
                result.seconds["lstm"] = time.perf_counter() - clock
                return result
            probabilities, offset = [], 0
            for track_crops in prepared.crops:
                n = len(track_crops.crops)
                probabilities.append(self.scorer.probability(features[offset:offset + n], scores[offset:offset + n]))
                offset += n
        except NonFiniteScoreError as exc:
            result.error, result.exit_code = f"{result.path}: {exc}", exc.exit_code
            return result
        result.seconds["lstm"] = time.perf_counter() - clock

        path, crops, frame_list, kept = Path(result.path), prepared.crops, prepared.frame_list, prepared.kept
        scored_reports = [r for r in prepared.reports if r.scored]
        for r, p in zip(scored_reports, probabilities):
            r.probability = round(float(p), 6)
        # per window, the rule's choice: the main track (scored first: judge_tracks(main=True)), or the
        # most suspicious; the clip's probability: the windows' aggregated (one window: its own)
        chosen, clip = choose_per_window(prepared.track_window, probabilities, self.rule.choose,
                                         self.config.video_aggregation)
        worst = max(chosen, key=lambda t: probabilities[t])  # the most suspicious window's: the evidence shown
        shown = prepared.track_window[worst]  # the window whose faces the evidence shows
        same_window = [i for i, w in enumerate(prepared.track_window) if w == shown]
        result.track_reports = [asdict(r) for r, w in zip(prepared.reports, prepared.report_window) if w == shown]
        result.warnings += evidence_warnings(scored_reports[worst], prepared.window_frames[shown],
                                             prepared.single_image, self.scorer.bundle.seq_len)
        if self.rule.choose == "main":
            result.warnings += other_face_warnings([scored_reports[i] for i in same_window], same_window.index(worst),
                                                   self.threshold)
        result.tracks = len(same_window)
        result.track_probabilities = [round(float(p), 6) for p in probabilities]
        result.probability = float(clip)
        starts = np.cumsum([0] + [len(c.crops) for c in crops])
        result.frame_scores = [round(float(s), 6) for t in chosen for s in scores[starts[t]:starts[t + 1]]]
        result.faces = len(result.frame_scores)
        result.cnn_probability = float(np.mean(result.frame_scores))
        result.verdict = verdict(result.probability, self.threshold, self.uncertain)
        reported = crops[worst]
        start = int(starts[worst])
        reported_frames = kept[np.asarray(reported.frame_positions, np.int64)]
        spans = [(kept[np.asarray(crops[t].frame_positions, np.int64)], probabilities[t]) for t in chosen]
        describe_judged(result, prepared.info, np.concatenate([f for f, _ in spans]), self.config, self.scorer,
                        spans if len(spans) > 1 else None)
        cams = None
        if heatmap is not None or report is not None or (annotate is not None and annotate_heatmap):
            if self._mapper is None:  # on onnxruntime when the bundle has a current cam.onnx, else Keras
                self._mapper = activation_mapper(self.bundle, self.scorer.feature_model if self.runtime == "keras" else None)
            cams = self._mapper(reported.crops)
            if heatmap is not None:
                written = write_heatmaps(heatmap, evidence_name or path.stem, reported.crops, cams, reported_frames,
                                         scores[start:start + len(reported.crops)])
                result.heatmaps = [str(p) for p in written]
            if report is not None:
                write_clip_report(report, result, prepared.info, self.config, reported_frames, reported.crops, cams)
                result.report = str(report)
        if annotate is not None:
            write_annotated(annotate, frame_list, crops[worst], scores[start:start + len(reported.crops)],
                            result, fps=prepared.info.fps or 5.0, cams=cams if annotate_heatmap else None,
                            source=None if prepared.single_image else path, kept=kept)
        return result

    def _frames_verdict(self, result: PredictResult, features: np.ndarray, scores: np.ndarray, frames: int,
                        single_image: bool) -> None:
        """A frame model's verdict: the sampled frames, letterboxed, are the sequence it scores."""
        result.probability = self.scorer.probability(features, scores)
        result.frame_scores = [round(float(s), 6) for s in scores]
        result.cnn_probability = float(np.mean(scores))
        result.verdict = verdict(result.probability, self.threshold, self.uncertain)
        result.warnings.append(f"a frame model: it scored the {frames} whole frames and ran no face "
                               "detector, so a clip without a visible face is scored too")
        result.warnings += sequence_warnings(frames, single_image, self.bundle.seq_len)


class EnsemblePredictor:
    """An ensemble's members (Predictors sharing detectors), combined by the ensemble's rule.

    Each clip is decoded once per distinct sampling and its faces detected once per distinct
    detector setting (the members share a per-clip cache); each member gives the calibrated
    P(fake) it would report alone, and the ensemble combines those (deepfake_cli.scoring.ensemble, the
    code `dfd ensemble` fits and `evaluate` measures with).
    """

    def __init__(self, ensemble: Ensemble, device: str = "auto", threshold: float | None = None,
                 max_fpr: float | None = None, detect_every: int | None = None, runtime: str = "keras",
                 windows: int | None = None):
        self.ensemble = ensemble
        self.config = ensemble.config
        self.runtime = runtime
        detectors: dict = {}
        self.members = [Predictor(bundle, device=device, detect_every=detect_every, detectors=detectors,
                                  runtime=runtime, windows=windows) for bundle in ensemble.members]
        self.threshold = choose_threshold(self.config.threshold, self.config.thresholds_at_fpr, threshold, max_fpr)
        self.uncertain = list(self.config.uncertain) if threshold is None and max_fpr is None else []

    def predict(self, path: Path, annotate: Path | None = None, heatmap: Path | None = None,
                report: Path | None = None, annotate_heatmap: bool = False,
                evidence_name: str | None = None) -> PredictResult:
        if annotate is not None or heatmap is not None or report is not None:
            raise PredictError("--annotate, --heatmap and --report show one model's evidence: pass one member "
                               f"of the ensemble ({', '.join(b.path.name for b in self.ensemble.members)}) as --model")
        cache: dict = {}
        results = [member.predict(path, cache=cache) for member in self.members]
        failed = [r for r in results if r.error]
        if failed:
            return failed[0]
        shown = next((r for r, m in zip(results, self.members) if not m.frame_model), results[0])
        result = replace(shown, threshold=self.threshold, uncertain_band=list(self.uncertain), warnings=ensemble_warnings(
            [m.bundle.path.name for m in self.members], [r.warnings for r in results]))
        try:
            result.probability = self.ensemble.probability([r.probability for r in results])
        except NonFiniteScoreError as exc:
            result.error, result.exit_code, result.verdict = f"{path}: {exc}", exc.exit_code, ""
            return result
        result.verdict = verdict(result.probability, self.threshold, self.uncertain)
        result.members = [{"model": m.bundle.path.name, "probability": round(float(r.probability), 6),
                           "threshold": round(float(m.threshold), 6), "verdict": r.verdict}
                          for m, r in zip(self.members, results)]
        result.seconds = {k: sum(r.seconds.get(k, 0.0) for r in results)
                          for k in dict.fromkeys(k for r in results for k in r.seconds)}
        return result

