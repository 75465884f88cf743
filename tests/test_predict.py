"""`predict`: which faces it scores, its --threshold and --max-fpr, its CSV and annotated video."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.nets.bundle import BundleConfig, record_weights_hashes, save_config, save_weights_atomic, weights_tag
from deepfake_cli.cli.app import app
from deepfake_cli.faces.detectors import Detection
from deepfake_cli.nets.models import build_classifier
from deepfake_cli.report.annotate import write_annotated
from deepfake_cli.serve.evidence import judge_tracks
from deepfake_cli.serve.predict import PredictResult
from deepfake_cli.serve.result_files import ResultWriter
from deepfake_cli.errors import DfdError
from tests.helpers import ASTRONAUT, ASTRONAUT_PROBABILITY, ASTRONAUT_VERDICT, ROOT, shared_data, write_face_clip


def face(x: float, side: float) -> Detection:
    return Detection(box=np.array([x, 0, x + side, side], np.float32), landmarks=np.zeros((5, 2), np.float32),
                     score=0.99)


def track(side: float, x: float, seen: int, n: int = 8) -> list:
    return [face(x, side) if t < seen else None for t in range(n)]


def tracks_to_score(tracks: list, n_frames: int) -> list:
    """The tracks judge_tracks scores, in their order."""
    return [tracks[r.track] for r in judge_tracks(tracks, n_frames) if r.scored]


def test_bystanders_posters_and_passers_by_are_not_scored():
    main, partner = track(80, 0, 8), track(60, 200, 8)  # two people in an interview
    poster, passer_by = track(30, 400, 8), track(90, 600, 1)  # small face; seen in one frame of eight
    assert tracks_to_score([main, partner, poster, passer_by], 8) == [main, partner]


def test_the_main_track_is_scored_even_when_nothing_else_qualifies():
    brief = track(40, 0, 1)
    assert tracks_to_score([brief], 8) == [brief]
    assert tracks_to_score([], 8) == []


# ---------------------------------------------------------------------- predict's options and outputs
AT_FPR = {"0.001": 0.97, "0.01": 0.9, "0.05": 0.7, "0.1": 0.6}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny CNN-only bundle (random weights, calibrated thresholds made up) and a face clip."""
    root = tmp_path_factory.mktemp("predict")
    config = BundleConfig(name="tiny", backbone="efficientnet-lite0", input_size=32, feature_dim=1280,
                          face={"size": 64, "align": True, "margin": 0.2, "detect_max_side": 640},
                          fpv=4, sampling="consecutive", threshold=0.5, thresholds_at_fpr=dict(AT_FPR))
    save_config(root / "tiny", config)
    classifier, _ = build_classifier(config.backbone, config.input_size)
    save_weights_atomic(classifier, root / "tiny" / "cnn.weights.h5", weights_tag("cnn", config))
    record_weights_hashes(config, root / "tiny")  # as training does: predict serves hashed weights only
    save_config(root / "tiny", config)
    return root / "tiny", write_face_clip(root / "clip.mp4", shift=0, fake=True, frames=6)


def predict_json(bundle: Path, clip: Path, *options, expect: int = 0) -> dict | str:
    result = CliRunner().invoke(app, ["predict", str(clip), "--model", str(bundle), "--device", "cpu", "--json",
                                      *map(str, options)])
    assert result.exit_code == expect, result.output
    return json.loads(result.stdout)[0] if expect == 0 else result.output  # --json: an array


@pytest.mark.slow
def test_the_verdict_flips_at_the_threshold_given(served):
    bundle, clip = served
    first = predict_json(bundle, clip)
    p = first["probability"]
    assert first["threshold"] == 0.5 and first["verdict"] == ("fake" if p >= 0.5 else "real")
    below = predict_json(bundle, clip, "--threshold", p - 1e-3)
    above = predict_json(bundle, clip, "--threshold", p + 1e-3)
    assert below["probability"] == above["probability"] == p  # the threshold changes the verdict only
    assert (below["verdict"], below["threshold"]) == ("fake", pytest.approx(p - 1e-3))
    assert (above["verdict"], above["threshold"]) == ("real", pytest.approx(p + 1e-3))


@pytest.mark.slow
def test_max_fpr_takes_the_bundles_threshold_for_that_rate(served):
    bundle, clip = served
    assert predict_json(bundle, clip, "--max-fpr", 0.01)["threshold"] == AT_FPR["0.01"]
    assert predict_json(bundle, clip, "--max-fpr", 0.1)["threshold"] == AT_FPR["0.1"]
    refused = predict_json(bundle, clip, "--max-fpr", 0.2, expect=1)
    assert "no threshold calibrated for --max-fpr 0.2" in refused and "0.001, 0.01, 0.05, 0.1" in refused
    both = predict_json(bundle, clip, "--max-fpr", 0.01, "--threshold", 0.5, expect=1)
    assert "not both" in both


def test_the_result_csv_has_one_row_per_input_errors_included(tmp_path):
    ok = PredictResult(path="a.mp4", verdict="fake", probability=0.8, threshold=0.5, cnn_probability=0.7,
                       frames=4, faces=4, tracks=1)
    bad = PredictResult(path="b.mp4", threshold=0.5, error="b.mp4: no such file", exit_code=3)
    with ResultWriter(csv_path=tmp_path / "out.csv") as writer:
        for result in (ok, bad):
            writer.write(result.as_dict())
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "verdict", "probability", "threshold", "cnn_probability", "frames", "faces", "tracks",
                       "error", "exit_code", "warnings", "schema_version", "dfd_version", "model", "model_sha256"]
    assert rows[1][:11] == ["a.mp4", "fake", "0.8", "0.5", "0.7", "4", "4", "1", "", "0", ""]
    assert rows[2][:2] == ["b.mp4", ""] and rows[2][2] == "" and rows[2][8:11] == ["b.mp4: no such file", "3", ""]
    assert len(rows) == 3


def test_write_annotated_writes_a_readable_video(tmp_path):
    frames = [np.full((72, 96, 3), 40 * t, np.uint8) for t in range(5)]
    faces = type("Faces", (), {"frame_positions": np.array([0, 2, 3]),
                               "boxes": np.array([[10, 10, 40, 40]] * 3, np.float32)})()
    result = PredictResult(path="x.mp4", verdict="fake", probability=0.9, threshold=0.5)
    out = tmp_path / "annotated.mp4"
    write_annotated(out, frames, faces, np.array([0.2, 0.6, 0.9]), result, fps=10.0)
    capture = cv2.VideoCapture(str(out))
    read = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        read.append(frame)
    capture.release()
    assert len(read) == 5 and read[0].shape == (72, 96, 3)
    assert read[0][20, 10].tolist() != frames[0][20, 10].tolist()  # the face box is drawn at frame 0


def test_a_smaller_usable_face_beside_a_bigger_one_is_scored_and_every_track_is_reported():
    from deepfake_cli.serve.evidence import judge_tracks

    big_real, small_fake = track(171, 0, 8), track(70, 300, 8)  # 0.41x the big face, but 70 px in every frame
    tiny, brief = track(30, 500, 8), track(120, 700, 1)
    reports = judge_tracks([big_real, small_fake, tiny, brief], 8)
    assert [r.scored for r in reports] == [True, True, False, False]
    assert "under 0.6x the main face (171 px)" in reports[2].reason and "seen in 1 of 8" in reports[3].reason
    assert reports[1].frames_seen == 8 and reports[1].face_side == 70 and reports[1].median_box == [300, 0, 370, 70]
    assert tracks_to_score([big_real, track(70, 300, 3)], 8) == [big_real]  # small and seen in 3 of 8 only
    result = PredictResult(path="x.mp4", track_reports=[r.__dict__ for r in reports])
    assert result.tracks_summary().startswith("4 faces seen, 2 scored (not scored: 30 px, under 0.6x")


def test_weak_evidence_is_flagged():
    from deepfake_cli.serve.evidence import TrackReport, evidence_warnings

    good = TrackReport(track=0, frames_seen=25, face_side=150, median_box=[0, 0, 150, 150], scored=True)
    assert evidence_warnings(good, 25, False, 25) == []
    small = TrackReport(track=0, frames_seen=7, face_side=20, median_box=[0, 0, 20, 20], scored=True)
    warnings = evidence_warnings(small, 25, False, 25)
    assert len(warnings) == 2 and "small face (20 px" in warnings[0] and "only 7 of the 25" in warnings[1]
    assert "single image" in evidence_warnings(TrackReport(0, 1, 150, [0, 0, 1, 1], True), 1, True, 25)[0]
    assert "only 4 frames, fewer than the 25" in evidence_warnings(TrackReport(0, 4, 150, [0, 0, 1, 1], True), 4,
                                                                  False, 25)[0]


def test_a_track_does_not_pass_to_another_person_at_a_hard_cut():
    from deepfake_cli.faces.identity import IdentityCheck
    from deepfake_cli.faces.tracking import build_tracks

    # two people in the same place: A in frames 0-3 (a blue shot), B in frames 4-7 (a red shot)
    frames = [np.full((60, 80, 3), (20, 40, 200) if t < 4 else (200, 40, 20), np.uint8) for t in range(8)]
    detections = [[face(10, 40)] for _ in range(8)]
    person = {id(d[0]): np.full(128, 0.0 if t < 4 else 0.1, np.float32) for t, d in enumerate(detections)}

    class Describer:
        calls = 0

        def __call__(self, frame, detection):
            Describer.calls += 1
            return person[id(detection)]

    check = IdentityCheck(frames, Describer())
    assert check.cuts == {4}
    tracks = build_tracks(detections, same_identity=check)
    assert [[d is not None for d in t] for t in tracks] == [[True] * 4 + [False] * 4, [False] * 4 + [True] * 4]
    # described: the last face before the cut, and those after it while A's track could go on
    # (max_gap frames); none of frames 0-2
    assert Describer.calls == 5
    assert len(build_tracks(detections)) == 1  # by position alone they are one track
    person.update({k: np.zeros(128, np.float32) for k in person})  # one person in both shots: one track
    assert len(build_tracks(detections, same_identity=IdentityCheck(frames, Describer()))) == 1


def test_face_descriptors_tell_people_apart():
    """dlib's descriptors (face_recognition_models) on real faces: one person close, two apart."""
    from skimage.data import astronaut

    from deepfake_cli.faces.detectors import make_detector
    from deepfake_cli.faces.identity import FaceDescriber, same_person

    image = astronaut()
    (det,) = make_detector("mtcnn", device="cpu").detect([image])[0][:1]
    describer = FaceDescriber()
    a = describer(image, det)
    shifted = np.ascontiguousarray(np.roll(image, (7, 5), axis=(0, 1)))
    moved = Detection(box=det.box + 5, landmarks=det.landmarks + np.array([5, 7], np.float32), score=det.score)
    assert a.shape == (128,) and same_person(a, describer(shifted, moved))


@pytest.mark.realdata
def test_a_hard_cut_between_two_ffpp_people_splits_the_track():
    from deepfake_cli.faces.detectors import make_detector
    from deepfake_cli.faces.identity import FaceDescriber, IdentityCheck
    from deepfake_cli.faces.tracking import detect_sparse
    from deepfake_cli.data.video import sample_frames

    videos = sorted(shared_data("ffpp", "original_sequences", "youtube", "c23", "videos").glob("*.mp4"))
    if len(videos) < 2:
        pytest.skip("shared data not present")
    first, second = (list(sample_frames(v, 8, "consecutive")[2]) for v in videos[:2])
    size = first[0].shape[:2][::-1]
    frames = first + [cv2.resize(f, size) for f in second]  # a hard cut between two people
    detector, describer = make_detector("mtcnn", device="cpu"), FaceDescriber()
    tracks = detect_sparse(detector, frames, 4, identity=lambda key_frames: IdentityCheck(key_frames, describer))
    seen = [[d is not None for d in t] for t in tracks]
    assert any(any(s[:8]) for s in seen) and any(any(s[8:]) for s in seen), seen
    assert not any(any(s[:8]) and any(s[8:]) for s in seen), seen  # no track holds both people


@pytest.mark.parametrize("size", [(360, 640), (1080, 1920)])
def test_annotation_labels_stay_inside_the_frame(size):
    from deepfake_cli.report.annotate import put_label

    height, width = size
    image = np.zeros((height, width, 3), np.uint8)
    unit = max(1, min(width, height) // 360)
    for x, y in ((0, 0), (width - 20, 5), (width - 5, height - 5)):  # a face at the top or right edge
        left, top, right, bottom = put_label(image, "frame P(fake) 0.97", x, y, (0, 0, 255), 0.5 * unit, unit)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
    left, top, right, bottom = put_label(image, "video: fake P(fake)=0.91", 0, 0, (255, 255, 255), 0.5 * unit, unit,
                                         above=False)
    assert top == 0 and bottom <= height and image[top:bottom, left:right].max() == 255  # drawn, not cut off


def test_annotate_heatmap_warps_the_map_back_onto_the_face(tmp_path):
    frames = [np.full((72, 96, 3), 128, np.uint8) for _ in range(2)]
    faces = type("Faces", (), {"frame_positions": np.array([0, 1]), "boxes": np.array([[10, 10, 42, 42]] * 2, np.float32),
                               "matrices": np.array([[[1, 0, -10], [0, 1, -10]]] * 2, np.float32)})()  # crop = box
    result = PredictResult(path="x.mp4", verdict="fake", probability=0.9, threshold=0.5)
    cams = np.full((2, 32, 32), 3.0, np.float32)  # strongly "fake" everywhere on the face
    plain, hot = tmp_path / "plain.mp4", tmp_path / "hot.mp4"
    write_annotated(plain, frames, faces, np.array([0.9, 0.9]), result, fps=5.0)
    write_annotated(hot, frames, faces, np.array([0.9, 0.9]), result, fps=5.0, cams=cams)
    first = {}
    for name, path in (("plain", plain), ("hot", hot)):
        capture = cv2.VideoCapture(str(path))
        first[name] = capture.read()[1].astype(int)
        capture.release()
    inside, outside = (slice(34, 40), slice(14, 38)), (slice(50, 60), slice(60, 90))  # under the label
    assert first["hot"][inside][..., 0].mean() < first["plain"][inside][..., 0].mean() - 30  # warm colours: no blue
    assert abs(first["hot"][outside].mean() - first["plain"][outside].mean()) < 3  # the rest untouched


# ---------------------------------------------------------------------- the batch library (serve.batch)
def two_clips(tmp_path: Path) -> list[Path]:
    import shutil

    clips = [tmp_path / "bad.mp4", tmp_path / "good.mp4"]
    for clip in clips:
        shutil.copy(ASTRONAUT, clip)
    return clips


def prepare_failing_on(name: str, error: Exception, monkeypatch) -> None:
    """Predictor.prepare raises ``error`` for the input called ``name`` (as OpenCV or dlib might)."""
    from deepfake_cli.serve.predict import Predictor

    prepare = Predictor.prepare

    def failing(self, path, cache=None):
        if Path(path).name == name:
            raise error
        return prepare(self, path, cache)

    monkeypatch.setattr(Predictor, "prepare", failing)


def test_an_unexpected_exception_in_one_input_fails_it_alone(tmp_path, monkeypatch):
    """A bug while preparing one input (here a RuntimeError) is that input's error, with its
    traceback kept; the next input is still scored, with the verdict it gets alone."""
    from deepfake_cli.serve.batch import BatchPrediction

    bad, good = two_clips(tmp_path)
    prepare_failing_on("bad.mp4", RuntimeError("decoder exploded"), monkeypatch)
    seen = []
    outcome = BatchPrediction([bad, good], csv_path=tmp_path / "out.csv").run(on_result=seen.append)
    failed, scored = outcome.results
    assert seen == outcome.results and outcome.total == 2 and not outcome.interrupted
    assert failed.exit_code == 1 and failed.verdict == ""
    assert failed.error == f"{bad}: unexpected RuntimeError (a bug in dfd): decoder exploded"
    assert "Traceback" in outcome.bugs[str(bad)] and "decoder exploded" in outcome.bugs[str(bad)]
    assert (scored.verdict, scored.exit_code) == (ASTRONAUT_VERDICT, 0)
    assert scored.probability == pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6)
    assert outcome.exit_code == 1  # the worst of the batch
    rows = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
    assert [(r["path"], r["verdict"], r["exit_code"]) for r in rows] == [(str(bad), "", "1"),
                                                                          (str(good), ASTRONAUT_VERDICT, "0")]


def test_the_cli_shows_a_bug_in_one_input_with_its_traceback_and_scores_the_rest(tmp_path, monkeypatch):
    bad, good = two_clips(tmp_path)
    prepare_failing_on("bad.mp4", KeyError("landmark"), monkeypatch)
    result = CliRunner().invoke(app, ["predict", str(bad), str(good)])
    assert result.exit_code == 1, result.output
    assert f"{good}: {ASTRONAUT_VERDICT} (P(fake) = {ASTRONAUT_PROBABILITY:.3f}" in result.stdout
    assert f"error: {bad}: unexpected KeyError (a bug in dfd): 'landmark'" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr and "this is a bug in dfd" in result.stderr


def test_a_dfd_error_in_one_input_is_its_error_with_its_exit_code(tmp_path, monkeypatch):
    from deepfake_cli.data.video import VideoError
    from deepfake_cli.serve.batch import predict_batch

    bad, good = two_clips(tmp_path)
    prepare_failing_on("bad.mp4", VideoError(bad, "moov atom not found"), monkeypatch)
    outcome = predict_batch([bad, good])
    assert [(r.exit_code, r.error) for r in outcome.results] == [(3, f"{bad}: moov atom not found"), (0, "")]
    assert outcome.bugs == {} and outcome.exit_code == 3


def test_an_exception_while_scoring_or_writing_evidence_fails_that_input_alone(tmp_path, monkeypatch):
    from deepfake_cli.serve.batch import predict_batch
    from deepfake_cli.serve.predict import Predictor

    bad, good = two_clips(tmp_path)
    finish = Predictor.finish

    def failing(self, prepared, outputs=None, **evidence):
        if prepared.result.path == str(bad):
            raise OSError(28, "No space left on device")
        return finish(self, prepared, outputs, **evidence)

    monkeypatch.setattr(Predictor, "finish", failing)
    outcome = predict_batch([bad, good])
    assert outcome.results[0].exit_code == 1 and "No space left on device" in outcome.results[0].error
    assert outcome.results[1].verdict == ASTRONAUT_VERDICT and outcome.exit_code == 1


def test_the_batch_exit_code_policy():
    from deepfake_cli.serve.batch import BatchOutcome

    ok = PredictResult(path="a.mp4", verdict="real", probability=0.2, threshold=0.5)
    warned = PredictResult(path="b.png", verdict="real", probability=0.2, threshold=0.5, warnings=["a single image"])
    unreadable = PredictResult(path="c.mp4", error="c.mp4: empty file", exit_code=3)
    noface = PredictResult(path="d.mp4", error="d.mp4: no face found", exit_code=4)
    assert BatchOutcome([ok, warned], total=2).exit_code == 0
    assert BatchOutcome([ok, warned], total=2, strict=True).exit_code == 6
    unsure = PredictResult(path="e.mp4", verdict="uncertain", probability=0.45, threshold=0.5)
    assert BatchOutcome([ok, unsure], total=2).exit_code == 0
    assert BatchOutcome([ok, unsure], total=2, strict=True).exit_code == 6  # too close to call: weak evidence
    assert BatchOutcome([warned, unreadable, noface], total=3, strict=True).exit_code == 4  # the worst
    assert BatchOutcome([ok], total=3, interrupted=True).exit_code == 130
    assert BatchOutcome([], total=0).exit_code == 0


def test_skip_done_leaves_out_the_inputs_with_a_verdict_and_appends(tmp_path):
    from deepfake_cli.serve.batch import BatchPrediction

    bad, good = two_clips(tmp_path)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"path": str(good), "verdict": "real"}) + "\n"
                   + json.dumps({"path": str(bad), "verdict": "", "error": "x"}) + "\n")
    batch = BatchPrediction([tmp_path], jsonl_path=out, skip_done=out)
    assert batch.done == {str(good)} and batch.files == [bad]  # a failed input is tried again
    assert batch.resume_notes == [f"{out}: 1 row(s) of inputs that failed are replaced by this run's"]
    outcome = batch.run()
    assert [r.path for r in outcome.results] == [str(bad)]
    # its old error row is replaced, not repeated: one row per input
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == [str(good), str(bad)]


def test_a_torn_last_csv_row_is_dropped_and_its_input_scored_again(tmp_path):
    """A crash mid-write leaves a last row without its newline: it is not a verdict, the resumed
    run scores that input again, and no row is appended onto the torn one."""
    import csv

    from deepfake_cli.serve.batch import BatchPrediction
    from deepfake_cli.serve.result_files import CSV_COLUMNS

    bad, good = two_clips(tmp_path)
    out = tmp_path / "out.csv"
    out.write_text(",".join(CSV_COLUMNS) + "\r\n" + f"{bad},,,,,,,,unreadable,3\r\n" + f"{good},real,0.32")
    batch = BatchPrediction([tmp_path], csv_path=out, skip_done=out)
    assert batch.done == set() and batch.files == [bad, good]  # the torn row is no verdict
    assert "its last row was cut mid-line" in batch.resume_notes[0]
    outcome = batch.run()
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["path"] for r in rows] == [str(bad), str(good)]  # one row each, none glued to another
    assert {r["path"]: r["verdict"] for r in rows} == {str(r.path): r.verdict for r in outcome.results}
    assert out.read_bytes().endswith(b"\n")


def test_the_package_exports_the_batch_api_lazily():
    import subprocess
    import sys

    code = ("import sys, deepfake_cli; heavy = [m for m in ('numpy', 'cv2', 'typer', 'deepfake_cli.serve') "
            "if m in sys.modules]; from deepfake_cli import BatchPrediction, predict_batch, DfdError; "
            "from deepfake_cli.serve.batch import BatchPrediction as B; "
            "print(heavy, BatchPrediction is B, DfdError.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["[]", "True", "deepfake_cli.errors"]


# ---------------------------------------------------------------------- one resolver of model names
def test_one_resolver_finds_the_default_model_by_name_for_every_command(tmp_path):
    from deepfake_cli.nets.bundle import BundleError
    from deepfake_cli.serve.model_choice import PACKAGED_MODEL, locate_model, model_dir_to_write

    models = tmp_path / "models"
    assert locate_model(None, models) == locate_model("default", models) == PACKAGED_MODEL
    with pytest.raises(BundleError, match="not written to"):  # train-lstm, export-onnx write into the bundle
        locate_model("default", models, packaged=False)
    assert locate_model(str(PACKAGED_MODEL), models, packaged=False) == PACKAGED_MODEL
    mine = models / "default"
    mine.mkdir(parents=True)
    (mine / "config.json").write_text((PACKAGED_MODEL / "config.json").read_text())
    assert locate_model("default", models) == locate_model(None, models) == mine  # yours first
    assert locate_model("default", models, packaged=False) == mine
    with pytest.raises(BundleError, match="no model bundle 'nope'"):
        locate_model("nope", models)
    assert model_dir_to_write("new", models) == models / "new"  # train-cnn and ensemble create it
    assert model_dir_to_write(str(tmp_path / "elsewhere"), models) == tmp_path / "elsewhere"


def test_export_features_finds_the_bundled_default_model(tmp_path):
    """`dfd export-features --model default` reads the model `predict` serves (an empty store: nothing to do)."""
    from deepfake_cli.data.store import Store

    store = tmp_path / "s.h5"
    Store.open(store, write=True).close()
    result = CliRunner().invoke(app, ["export-features", "--model", "default", "--models-dir", str(tmp_path / "m"),
                                      "--store", str(store), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["exported"] == 0


def test_a_pipe_inside_a_folder_gets_its_own_error_like_a_pipe_named_directly(tmp_path):
    import os

    from deepfake_cli.serve.batch import BatchPrediction

    folder = tmp_path / "in"
    folder.mkdir()
    _, good = two_clips(folder)
    (folder / "bad.mp4").unlink()
    pipe = folder / "pipe.mp4"
    os.mkfifo(pipe)
    outcome = BatchPrediction([folder]).run()
    by_path = {r.path: r for r in outcome.results}
    assert sorted(by_path) == [str(good), str(pipe)]
    assert by_path[str(pipe)].error and by_path[str(pipe)].exit_code == 3
    direct = BatchPrediction([pipe]).run().results[0]
    assert (direct.error, direct.exit_code) == (by_path[str(pipe)].error, 3)
    assert by_path[str(good)].probability == pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6)


def test_two_inputs_of_one_name_in_two_folders_get_two_reports(tmp_path):
    from deepfake_cli.serve.batch import BatchPrediction, Evidence, evidence_name

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for folder in (a, b):
        (folder / "x.mp4").write_bytes(ASTRONAUT.read_bytes())
    assert evidence_name(a / "x.mp4", tmp_path) == "a__x.mp4"
    assert evidence_name(tmp_path / "x.jpg", tmp_path) != evidence_name(tmp_path / "x.mp4", tmp_path)
    reports = tmp_path / "reports"
    batch = BatchPrediction([a, b], evidence=Evidence(report=reports))
    inputs = [(i, p) for i, p in enumerate(batch.files)]
    pages = [batch.evidence.for_input(i, p, True, tmp_path)["report"] for i, p in inputs]
    assert pages == [reports / "a__x.mp4.html", reports / "b__x.mp4.html"]


def test_a_config_whose_input_size_is_not_the_onnx_models_is_a_clear_error(tmp_path):
    import shutil

    from deepfake_cli.serve.batch import BatchPrediction

    bundle = tmp_path / "edited"
    shutil.copytree(ROOT / "deepfake_cli" / "serve" / "default_model", bundle)
    config = json.loads((bundle / "config.json").read_text())
    config["input_size"] = 999
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(DfdError, match=r"cnn.onnx takes 160 px images but .*config.json says input_size 999"):
        BatchPrediction([ASTRONAUT], bundle, runtime="onnx").load()


@pytest.mark.parametrize("damage", ["missing", "garbled"])
def test_a_missing_or_damaged_onnx_json_is_named_and_auto_says_why_it_uses_keras(tmp_path, damage):
    import shutil

    from deepfake_cli.serve.batch import BatchPrediction

    bundle = tmp_path / "model"
    shutil.copytree(ROOT / "deepfake_cli" / "serve" / "default_model", bundle)
    if damage == "missing":
        (bundle / "onnx.json").unlink()
    else:
        (bundle / "onnx.json").write_text("{not json")
    with pytest.raises(DfdError, match=r"its onnx.json, which records what cnn.onnx was made from, "
                                       + ("is missing" if damage == "missing" else "is damaged")):
        BatchPrediction([ASTRONAUT], bundle, runtime="onnx")
    auto = BatchPrediction([ASTRONAUT], bundle, runtime="auto")
    assert auto.runtime == "keras" and "onnx.json" in auto.note and "slower start" in auto.note


def test_the_csv_has_a_warnings_column(tmp_path):
    import csv

    from deepfake_cli.serve.result_files import ResultWriter

    out = tmp_path / "out.csv"
    with ResultWriter(csv_path=out) as writer:
        writer.write({"path": "x.png", "verdict": "fake", "warnings": ["a single image", "a small face"]})
        writer.write({"path": "y.mp4", "verdict": "real", "warnings": []})
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["warnings"] for r in rows] == ["a single image; a small face", ""]
