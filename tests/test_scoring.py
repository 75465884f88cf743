"""Training and serving score a video the same way (deepfake_cli.scoring.scorer).

A stored video's probability as `evaluate` computes it from the store (features exported by
`export-features`) must be the probability `predict` gives for the clip itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from deepfake_cli.nets.bundle import BundleConfig, load_bundle, save_config, save_weights_atomic, weights_tag
from deepfake_cli.faces.crop import CropOptions, crop
from deepfake_cli.report.evaluate import evaluate
from deepfake_cli.data.extract import ExtractOptions, extract
from deepfake_cli.nets.models import build_classifier, build_lstm_model
from deepfake_cli.serve.predict import Predictor
from deepfake_cli.scoring.scorer import calibrate, fixed_batches, model_input
from deepfake_cli.data.store import Store
from deepfake_cli.train.temporal import export_features
from tests.helpers import write_face_clip

BACKBONE = "efficientnet-lite0"
INPUT_SIZE, FACE_SIZE, FPV, TEMPERATURE = 32, 64, 6, 1.7


def test_model_input_resizes_and_batches_to_few_shapes():
    crops = np.random.default_rng(0).integers(0, 255, (5, FACE_SIZE, FACE_SIZE, 3)).astype(np.uint8)
    x = model_input(crops, INPUT_SIZE)
    assert x.shape == (5, INPUT_SIZE, INPUT_SIZE, 3) and x.dtype == np.float32
    batches = list(fixed_batches(crops, INPUT_SIZE, 4))
    assert [b.shape for b, _ in batches] == [(4, INPUT_SIZE, INPUT_SIZE, 3), (1, INPUT_SIZE, INPUT_SIZE, 3)]
    assert [n for _, n in batches] == [4, 1]
    np.testing.assert_array_equal(np.concatenate([b[:n] for b, n in batches]), x)
    three = list(fixed_batches(crops[:3], INPUT_SIZE, 4))[0][0]
    assert three.shape[0] == 4 and not three[3:].any()  # zero padding
    assert calibrate(0.8, 1.0) == pytest.approx(0.8, abs=1e-12)
    assert calibrate(0.8, 2.0) == pytest.approx(1 / (1 + np.sqrt(0.2 / 0.8)), abs=1e-12)  # sigmoid(logit(p) / 2)


def test_small_batches_are_padded_to_a_power_of_two_only():
    from deepfake_cli.scoring.scorer import padded_rows

    assert [padded_rows(n, 32) for n in (1, 2, 3, 5, 9, 17, 25, 32, 40)] == [1, 2, 4, 8, 16, 32, 32, 32, 32]
    assert len({padded_rows(n, 32) for n in range(1, 200)}) == 6  # 1, 2, 4, 8, 16, 32: six traces at most


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two clips extracted and cropped into a store, and a tiny CNN + BiLSTM bundle for them."""
    root = tmp_path_factory.mktemp("scoring")
    for label, shift in (("real", 0), ("fake", 6)):
        (root / "clips" / label).mkdir(parents=True)
        write_face_clip(root / "clips" / label / f"{label}.mp4", shift=shift, fake=label == "fake", frames=8)
    store_path = root / "dfd.h5"
    with Store.open(store_path, write=True) as store:
        assert extract(store, [root / "clips"], ExtractOptions(fpv=FPV)).added == 2
        assert crop(store, CropOptions(size=FACE_SIZE, device="cpu")).cropped == 2
        face = store.faces_settings(store.entries()[0].video_id)
    bundle_dir = root / "models" / "tiny"
    config = BundleConfig(name="tiny", backbone=BACKBONE, input_size=INPUT_SIZE, feature_dim=1280, face=face,
                          fpv=FPV, sampling="consecutive", temperature=TEMPERATURE,
                          lstm={"units": 8, "dropout": 0.1, "seq_len": FPV, "feature_model": "tiny", "trained": True})
    save_config(bundle_dir, config)
    classifier, _ = build_classifier(BACKBONE, INPUT_SIZE)
    save_weights_atomic(classifier, bundle_dir / "cnn.weights.h5", weights_tag("cnn", config))
    lstm = build_lstm_model(FPV, 1280, units=8, dropout=0.1)
    save_weights_atomic(lstm, bundle_dir / "lstm.weights.h5", weights_tag("lstm", config))
    # the same CNN without an LSTM: the video score is the frames' mean, reading the same features
    plain_dir = root / "models" / "plain"
    plain = BundleConfig(**{**config.__dict__, "name": "plain", "temperature": 1.0,
                            "lstm": {**config.lstm, "trained": False}})
    save_config(plain_dir, plain)
    shutil.copy(bundle_dir / "cnn.weights.h5", plain_dir / "cnn.weights.h5")
    with Store.open(store_path, write=True) as store:
        assert export_features(store, bundle_dir)["exported"] == 2
    return store_path, bundle_dir, plain_dir


def served_and_measured(store_path: Path, bundle_dir: Path, model: str) -> list[tuple[float, float, list, list]]:
    """(predict's probability, evaluate's, predict's frame scores, stored frame scores) per video."""
    with Store.open(store_path) as store:
        rows = evaluate(store, bundle_dir).rows
        stored_scores = {e.path: store.read_features(e.video_id, "tiny").scores for e in store.entries()}
    measured = {r["path"]: r["score"] for r in rows if r["level"] == "video" and r["model"] == model}
    predictor = Predictor(load_bundle(bundle_dir), device="cpu")  # by the face rule its faces were cropped by
    pairs = []
    for path in sorted(measured):
        result = predictor.predict(Path(path))
        assert result.exit_code == 0 and result.tracks == 1, result.error
        pairs.append((result.probability, measured[path], result.frame_scores, stored_scores[path]))
    return pairs


def test_predict_serves_the_probability_evaluate_measures(stored):
    store_path, bundle_dir, _ = stored
    pairs = served_and_measured(store_path, bundle_dir, "cnn+lstm")
    assert len(pairs) == 2
    for served, measured, frames, stored_frames in pairs:
        assert len(frames) == len(stored_frames) == FPV
        np.testing.assert_allclose(frames, stored_frames, atol=1e-5)
        assert served == pytest.approx(measured, abs=1e-5)
    # the two clips do score differently (else the parity above would hold trivially): their frame
    # scores, and their video probabilities by more than twice the parity tolerance (the tiny LSTM's
    # outputs sit near 0.5, a few 1e-5 apart on some runs)
    assert np.abs(np.asarray(pairs[0][2]) - np.asarray(pairs[1][2])).max() > 1e-4
    assert abs(pairs[0][0] - pairs[1][0]) > 2e-5


def test_without_an_lstm_both_use_the_configured_aggregation(stored):
    store_path, _, plain_dir = stored
    pairs = served_and_measured(store_path, plain_dir, "cnn")
    assert len(pairs) == 2
    for served, measured, _, stored_frames in pairs:
        assert measured == pytest.approx(float(np.mean(stored_frames)), abs=1e-6)
        assert served == pytest.approx(measured, abs=1e-5)


# ---------------------------------------------------------------------- one face rule for crop and predict
def write_two_face_clip(path: Path, frames: int = 8) -> Path:
    """Two people side by side (the astronaut's face, and its mirror image smaller), the pair
    drifting one pixel a frame."""
    import cv2
    from skimage.data import astronaut

    image = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (400, 200))
    for t in range(frames):
        frame = np.full((200, 400, 3), 90, np.uint8)
        face = image[30:230, 120 + t:320 + t]
        frame[:, :200] = face
        frame[25:175, 230:380] = cv2.resize(face[:, ::-1], (150, 150), interpolation=cv2.INTER_AREA)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module", params=[1, 2], ids=["every-frame", "detect-every-2"])
def ruled(request, stored, tmp_path_factory):
    """A store of a two-person clip and a one-person clip, cropped with ``crop --detect-every N``,
    and a bundle (the tiny one's weights) trained, as train-cnn records it, on those faces."""
    every = request.param
    _, tiny_dir, _ = stored
    root = tmp_path_factory.mktemp(f"rule{every}")
    (root / "clips" / "fake").mkdir(parents=True)
    (root / "clips" / "real").mkdir(parents=True)
    write_two_face_clip(root / "clips" / "fake" / "two.mp4", frames=8)
    write_face_clip(root / "clips" / "real" / "one.mp4", shift=3, fake=False, frames=8)
    store_path = root / "dfd.h5"
    with Store.open(store_path, write=True) as store:
        assert extract(store, [root / "clips"], ExtractOptions(fpv=FPV)).added == 2
        assert crop(store, CropOptions(size=FACE_SIZE, device="cpu", detect_every=every)).cropped == 2
        face = store.faces_settings(store.entries()[0].video_id)  # train-cnn: the settings of the faces
    bundle_dir = root / "models" / "ruled"
    config = load_bundle(tiny_dir).config
    config.name, config.face = "ruled", face
    config.lstm = {**config.lstm, "feature_model": "ruled"}
    save_config(bundle_dir, config)
    for name in ("cnn.weights.h5", "lstm.weights.h5"):
        shutil.copy(tiny_dir / name, bundle_dir / name)
    with Store.open(store_path, write=True) as store:
        assert export_features(store, bundle_dir)["exported"] == 2
    return every, store_path, bundle_dir


def test_predict_serves_what_evaluate_measures_for_two_people_and_sparse_detection(ruled):
    """The bundle records the face rule its faces were cropped by (detection stride, identity
    linking, the track whose probability is the clip's); predict follows it, with no option
    given, so the probability it serves is the one evaluate computes from the store."""
    every, store_path, bundle_dir = ruled
    bundle = load_bundle(bundle_dir)
    assert bundle.config.face["detect_every"] == every
    with Store.open(store_path) as store:
        measured = {r["path"]: r["score"] for r in evaluate(store, bundle_dir).rows
                    if r["level"] == "video" and r["model"] == "cnn+lstm"}
        stored_scores = {e.path: store.read_features(e.video_id, "ruled").scores for e in store.entries()}
    assert len(measured) == 2
    predictor = Predictor(bundle, device="cpu")
    for path, score in measured.items():
        result = predictor.predict(Path(path))
        assert result.exit_code == 0, result.error
        two = Path(path).name == "two.mp4"
        assert [r["scored"] for r in result.track_reports] == ([True, True] if two else [True])
        assert result.faces == len(stored_scores[path]) == FPV
        np.testing.assert_allclose(result.frame_scores, stored_scores[path], atol=1e-5)
        assert result.probability == pytest.approx(score, abs=1e-5)
        if two:  # the other person was scored too, and is reported beside the verdict
            main, other = result.track_probabilities
            assert main == pytest.approx(result.probability, abs=1e-6) and abs(other - main) > 1e-4


def test_evaluate_refuses_faces_found_by_another_rule_than_the_bundles(ruled, tmp_path):
    from deepfake_cli.report.evaluate import EvaluateError

    every, store_path, bundle_dir = ruled
    face = load_bundle(bundle_dir).config.face
    other = bundle_copy(bundle_dir, tmp_path / "other" / "ruled", retrain=False, face={**face, "detect_every": 3})
    legacy = bundle_copy(bundle_dir, tmp_path / "legacy" / "ruled", retrain=False,
                         face={k: v for k, v in face.items() if k not in ("detect_every", "track_rule")})
    with Store.open(store_path) as store:
        with pytest.raises(EvaluateError, match=rf"2 of 2 videos' faces .* detect_every {every}, the bundle's rule "
                                                r"gives 3\).*`dfd crop --force --detect-every 3`") as caught:
            evaluate(store, other)
        assert "\n" not in str(caught.value)
        # a bundle that records no rule (made before it was recorded) is measured as before
        assert len(evaluate(store, legacy).rows) == len(evaluate(store, bundle_dir).rows) == 2 * FPV + 4


def test_a_bundle_with_a_face_rule_dfd_cannot_follow_is_refused(tmp_path):
    from deepfake_cli.nets.bundle import BundleError, read_config

    config = BundleConfig(name="odd", backbone=BACKBONE, input_size=32, feature_dim=8,
                          face={"size": 64, "detect_every": 2, "track_rule": {"identity": True, "choose": "mean"}})
    save_config(tmp_path, config)
    with pytest.raises(BundleError, match="face: track_rule choose must be one of main, max, not 'mean'"):
        read_config(tmp_path)


def bundle_copy(bundle_dir: Path, dest: Path, retrain: bool, **changes) -> Path:
    """A copy of a bundle (same feature model name), its config changed by ``changes``; with
    ``retrain``, its CNN weights replaced by new ones (re-initialised), as train-cnn would."""
    from deepfake_cli.nets.bundle import read_config

    shutil.copytree(bundle_dir, dest)
    config = read_config(dest)
    for key, value in changes.items():
        setattr(config, key, value)
    save_config(dest, config)
    if retrain:
        classifier, _ = build_classifier(BACKBONE, INPUT_SIZE)
        save_weights_atomic(classifier, dest / "cnn.weights.h5", weights_tag("cnn", config))
    return dest


def test_evaluate_and_train_lstm_refuse_features_of_an_older_cnn(stored, tmp_path):
    from deepfake_cli.errors import DfdError
    from deepfake_cli.train.temporal import lstm_splits

    store_path, bundle_dir, _ = stored
    with Store.open(store_path) as store:
        ids = [e.video_id for e in store.entries()]
        splits = {"train": ids, "val": ids}
        same = bundle_copy(bundle_dir, tmp_path / "same" / "tiny", retrain=False, split_ids=splits)
        assert lstm_splits(store, load_bundle(same), "tiny") == splits  # the CNN that exported them
        assert len(evaluate(store, same).rows) == 2 * FPV + 4
        retrained = bundle_copy(bundle_dir, tmp_path / "new" / "tiny", retrain=True, split_ids=splits)
        for run in (lambda: evaluate(store, retrained), lambda: lstm_splits(store, load_bundle(retrained), "tiny")):
            with pytest.raises(DfdError, match=r"another CNN.*`dfd export-features --model tiny`") as caught:
                run()
            assert "\n" not in str(caught.value)


TRAINING_MODULES = ("deepfake_cli.train.cnn", "deepfake_cli.train.temporal", "deepfake_cli.train.loop", "deepfake_cli.train.runtime")


@pytest.mark.slow
def test_predict_imports_no_training_code(stored, tmp_path):
    """`dfd predict` with an LSTM bundle loads the scoring code only, not the training loop."""
    _, bundle_dir, _ = stored
    clip = sorted((bundle_dir.parent.parent / "clips" / "fake").glob("*.mp4"))[0]
    bundle_dir = copy_bundle(bundle_dir, tmp_path / "tiny")  # its hashes recorded: predict serves no others
    script = textwrap.dedent(f"""
        import json, sys
        from typer.testing import CliRunner
        from deepfake_cli.cli.app import app
        result = CliRunner().invoke(app, ["predict", {str(clip)!r}, "--model", {str(bundle_dir)!r}, "--json",
                                          "--device", "cpu"])
        print(json.dumps({{"exit_code": result.exit_code, "output": result.stdout, "modules": sorted(sys.modules)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["exit_code"] == 0, report["output"]
    assert 0.0 < json.loads(report["output"])[0]["probability"] < 1.0  # --json: an array
    assert "deepfake_cli.scoring.scorer" in report["modules"] and "deepfake_cli.serve.predict" in report["modules"]
    assert [m for m in TRAINING_MODULES if m in report["modules"]] == []


class LeftHalfModel:
    """A stand-in feature model whose score is the brightness of the image's left half."""

    def predict_on_batch(self, batch):
        half = batch.shape[2] // 2
        left = batch[:, :, :half].mean(axis=(1, 2, 3)) / 255.0
        return np.stack([left, 1 - left], axis=1), left[:, None]


def test_test_time_flip_averages_a_face_and_its_mirror():
    from deepfake_cli.scoring.scorer import frame_outputs

    crops = np.zeros((3, 8, 8, 3), np.uint8)
    crops[:, :, :4] = 255  # left half white
    _, plain = frame_outputs(LeftHalfModel(), crops, 8, batch_size=2)
    features, flipped = frame_outputs(LeftHalfModel(), crops, 8, batch_size=2, flip=True)
    np.testing.assert_allclose(plain, 1.0)
    np.testing.assert_allclose(flipped, 0.5)  # (white left half + black left half of the mirror) / 2
    np.testing.assert_allclose(features, 0.5)
    assert features.shape == (3, 2)


def test_a_config_without_test_time_flip_still_loads(tmp_path):
    from deepfake_cli.nets.bundle import read_config

    config = BundleConfig(name="old", backbone="efficientnet-lite0", input_size=32, feature_dim=8)
    data = json.loads(config.to_json())
    del data["test_time_flip"]  # written by a dfd that did not know it
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert read_config(tmp_path).test_time_flip is False


# ---------------------------------------------------------------------- broken models give no verdict
def copy_bundle(bundle_dir: Path, dest: Path, hashes: bool = True) -> Path:
    """A copy of a bundle, with the SHA-256 of its weights recorded as training records them."""
    from deepfake_cli.nets.bundle import read_config, record_weights_hashes

    shutil.copytree(bundle_dir, dest, ignore=shutil.ignore_patterns("checkpoints"))
    config = read_config(dest)
    config.weights_sha256 = {}
    if hashes:
        record_weights_hashes(config, dest)
    save_config(dest, config)
    return dest


def damage(path: Path, size: int = 4096) -> None:
    """Random bytes written into the middle of a file (its length unchanged)."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start:start + size] = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("weights_file", ["cnn.weights.h5", "lstm.weights.h5"])
def test_a_damaged_weights_file_is_refused(stored, tmp_path, weights_file):
    from deepfake_cli.nets.bundle import BundleError

    _, bundle_dir, _ = stored
    copy = copy_bundle(bundle_dir, tmp_path / "tiny")
    assert set(load_bundle(copy).config.weights_sha256) == {"cnn.weights.h5", "lstm.weights.h5"}
    Predictor(load_bundle(copy), device="cpu")  # intact: loads
    damage(copy / weights_file)
    with pytest.raises(BundleError, match=f"{weights_file}: weights file changed or damaged"):
        Predictor(load_bundle(copy), device="cpu")


def test_a_missing_lstm_is_refused_not_replaced_by_the_cnn_mean(stored, tmp_path):
    from deepfake_cli.nets.bundle import BundleError

    _, bundle_dir, _ = stored
    copy = copy_bundle(bundle_dir, tmp_path / "tiny")
    (copy / "lstm.weights.h5").unlink()
    with pytest.raises(BundleError, match="missing weights file .*lstm.weights.h5"):
        Predictor(load_bundle(copy), device="cpu")


def nan_bundle(bundle_dir: Path, dest: Path) -> Path:
    """A bundle whose CNN head holds NaN weights (as a diverged run leaves it), hashes recorded."""
    copy_bundle(bundle_dir, dest, hashes=False)
    bundle = load_bundle(dest)
    classifier, _ = build_classifier(BACKBONE, INPUT_SIZE)
    classifier.load_weights(dest / "cnn.weights.h5")
    kernel, bias = classifier.get_layer("score").get_weights()
    classifier.get_layer("score").set_weights([np.full_like(kernel, np.nan), bias])
    save_weights_atomic(classifier, dest / "cnn.weights.h5", weights_tag("cnn", bundle.config))
    return copy_bundle(dest, dest.with_name(dest.name + "-hashed"))


@pytest.mark.slow
def test_nan_scores_are_an_error_never_a_verdict(stored, tmp_path):
    from typer.testing import CliRunner

    from deepfake_cli.cli.app import app
    from deepfake_cli.errors import EXIT_BAD_SCORE

    _, bundle_dir, _ = stored
    broken = nan_bundle(bundle_dir, tmp_path / "nan")
    clip = sorted((bundle_dir.parent.parent / "clips" / "fake").glob("*.mp4"))[0]
    result = Predictor(load_bundle(broken), device="cpu").predict(clip)
    assert result.verdict == "" and result.exit_code == EXIT_BAD_SCORE
    assert str(clip) in result.error and "non-finite" in result.error
    out = CliRunner().invoke(app, ["predict", str(clip), "--model", str(broken), "--json", "--device", "cpu",
                                   "--csv", str(tmp_path / "out.csv")])
    assert out.exit_code == EXIT_BAD_SCORE, out.output
    assert '"verdict": "real"' not in out.stdout and "real" not in (tmp_path / "out.csv").read_text()


# ---------------------------------------------------------------------- served by onnxruntime
@pytest.fixture(scope="module")
def onnx_bundle(stored, tmp_path_factory):
    """A copy of the tiny bundle with its ONNX export (dfd export-onnx)."""
    from deepfake_cli.train.onnx_export import export_onnx

    _, bundle_dir, _ = stored
    copy = copy_bundle(bundle_dir, tmp_path_factory.mktemp("onnx") / "tiny")
    record = export_onnx(copy)
    return copy, record


@pytest.mark.slow
def test_the_onnx_export_reproduces_keras(onnx_bundle):
    from deepfake_cli.scoring.onnx_serving import onnx_problem

    bundle_dir, record = onnx_bundle
    assert {"cnn.onnx", "lstm.onnx"} <= set(record)
    for name in ("cnn.onnx", "lstm.onnx"):
        assert (bundle_dir / name).is_file() and record[name]["max_abs_diff"] < 1e-4
    assert json.loads((bundle_dir / "onnx.json").read_text()) == record
    assert onnx_problem(load_bundle(bundle_dir)) == ""


def test_predict_on_onnx_serves_the_probability_evaluate_measures(stored, onnx_bundle):
    """ONNX CNN and LSTM, and MTCNN on onnxruntime, give predict's verdict of the Keras models."""
    store_path, _, _ = stored
    bundle_dir, _ = onnx_bundle
    with Store.open(store_path) as store:
        measured = {r["path"]: r["score"] for r in evaluate(store, bundle_dir).rows
                    if r["level"] == "video" and r["model"] == "cnn+lstm"}
    onnx = Predictor(load_bundle(bundle_dir), device="cpu", runtime="onnx")
    assert onnx.detector._mtcnn.__class__.__name__ == "OnnxMTCNN"
    for path, score in measured.items():
        result = onnx.predict(Path(path))
        assert result.exit_code == 0, result.error
        assert result.probability == pytest.approx(score, abs=1e-4)


def test_stale_or_damaged_onnx_files_are_not_served(onnx_bundle, tmp_path):
    from deepfake_cli.nets.bundle import BundleError, read_config
    from deepfake_cli.scoring.onnx_serving import choose_runtime, onnx_problem

    bundle_dir, _ = onnx_bundle
    retrained = copy_bundle(bundle_dir, tmp_path / "retrained")  # same files: still current
    assert choose_runtime("auto", "cpu", [load_bundle(retrained)]) == "onnx"
    config = read_config(retrained)
    config.weights_sha256["lstm.weights.h5"] = "0" * 64  # as if train-lstm had written new weights
    save_config(retrained, config)
    assert "made from an older lstm.weights.h5" in onnx_problem(load_bundle(retrained))
    assert choose_runtime("auto", "cpu", [load_bundle(retrained)]) == "keras"
    with pytest.raises(BundleError, match="cannot be served with --runtime onnx: its lstm.onnx was made"):
        choose_runtime("onnx", "cpu", [load_bundle(retrained)])
    from deepfake_cli.serve.model_choice import stale_onnx_note

    assert "runs on Keras, with a slower start: its lstm.onnx was made" in stale_onnx_note(retrained)
    assert stale_onnx_note(bundle_dir) == ""

    damaged = copy_bundle(bundle_dir, tmp_path / "damaged")
    damage(damaged / "cnn.onnx", size=64)
    assert "cnn.onnx changed or is damaged" in onnx_problem(load_bundle(damaged))
    (damaged / "onnx.json").unlink()
    assert "its onnx.json, which records what cnn.onnx was made from, is missing" in onnx_problem(load_bundle(damaged))

def test_a_gpu_is_served_by_keras(onnx_bundle, monkeypatch):
    from deepfake_cli.faces import detectors
    from deepfake_cli.nets.bundle import BundleError
    from deepfake_cli.scoring.onnx_serving import choose_runtime

    bundle_dir, _ = onnx_bundle
    monkeypatch.setattr(detectors, "resolve_device", lambda device: "cuda")  # as on a machine with a GPU
    assert choose_runtime("auto", "auto", [load_bundle(bundle_dir)]) == "keras"
    with pytest.raises(BundleError, match="--runtime onnx runs on the CPU"):
        choose_runtime("onnx", "cuda", [load_bundle(bundle_dir)])


@pytest.mark.slow
def test_an_export_that_differs_from_keras_is_not_kept(stored, tmp_path, monkeypatch):
    from deepfake_cli.train import onnx_export
    _, bundle_dir, _ = stored
    copy = copy_bundle(bundle_dir, tmp_path / "tiny")
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(onnx_export.OnnxExportError, match="differs from Keras by .*nothing was kept"):
        onnx_export.export_onnx(copy)
    assert not any(copy.glob("*.onnx")) and not (copy / "onnx.json").exists()


def test_predict_on_onnx_imports_neither_tensorflow_nor_torch(stored, onnx_bundle):
    """The fast start: `dfd predict` of a bundle with ONNX files loads no TensorFlow, Keras or PyTorch,
    and prints the verdict `--runtime keras` prints."""
    _, bundle_dir, _ = stored
    onnx_dir, _ = onnx_bundle
    clip = sorted((bundle_dir.parent.parent / "clips" / "fake").glob("*.mp4"))[0]
    script = textwrap.dedent(f"""
        import json, sys
        from typer.testing import CliRunner
        from deepfake_cli.cli.app import app
        result = CliRunner().invoke(app, ["predict", {str(clip)!r}, "--model", {str(onnx_dir)!r}, "--json"])
        print(json.dumps({{"exit_code": result.exit_code, "output": result.stdout, "modules": sorted(sys.modules)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["exit_code"] == 0, report["output"]
    heavy = {m.split(".")[0] for m in report["modules"]} & {"tensorflow", "keras", "torch", "facenet_pytorch",
                                                             "sklearn", "matplotlib"}
    assert heavy == set()
    from typer.testing import CliRunner

    from deepfake_cli.cli.app import app

    keras_run = CliRunner().invoke(app, ["predict", str(clip), "--model", str(onnx_dir), "--json",
                                         "--runtime", "keras", "--device", "cpu"])
    assert keras_run.exit_code == 0, keras_run.output
    assert json.loads(report["output"])[0]["probability"] == pytest.approx(
        json.loads(keras_run.stdout)[0]["probability"], abs=1e-4)


def test_many_inputs_share_cnn_batches_and_keep_their_order(stored, onnx_bundle, tmp_path, monkeypatch):
    """predict_many: the verdicts of one-at-a-time predict, in input order, a bad input failing
    alone, with the CNN run on several inputs' faces at once."""
    import cv2

    from deepfake_cli.serve.pipeline import predict_many

    _, bundle_dir, _ = stored
    onnx_dir, _ = onnx_bundle
    clips = sorted((bundle_dir.parent.parent / "clips").rglob("*.mp4"))
    frame = cv2.VideoCapture(str(clips[0])).read()[1]
    images = []
    for i in range(3):
        images.append(tmp_path / f"face{i}.png")
        cv2.imwrite(str(images[-1]), np.roll(frame, 2 * i, axis=1))
    inputs = [clips[0], tmp_path / "missing.mp4", *images, clips[1]]
    predictor = Predictor(load_bundle(onnx_dir), device="cpu", runtime="onnx")
    alone = [predictor.predict(p) for p in inputs]
    calls, prepared, all_prepared = [], [], threading.Event()
    frames, prepare = predictor.scorer.frames, predictor.prepare

    def counted_prepare(path, cache=None):
        try:
            return prepare(path, cache)
        finally:
            prepared.append(path)
            if len(prepared) == len(inputs):
                all_prepared.set()

    def slow_first_call(crops):  # a slow CNN: the next inputs are prepared meanwhile, and then share a call
        calls.append(len(crops))
        if len(calls) == 1:
            assert all_prepared.wait(timeout=300), "the other inputs were not prepared while the CNN ran"
        return frames(crops)

    monkeypatch.setattr(predictor, "prepare", counted_prepare)
    monkeypatch.setattr(predictor.scorer, "frames", slow_first_call)
    together = list(predict_many(predictor, inputs, lookahead=len(inputs)))
    assert [r.path for r in together] == [str(p) for p in inputs]
    assert together[1].exit_code != 0 and "missing.mp4" in together[1].error
    for a, t in zip(alone, together):
        assert (a.verdict, a.exit_code, a.faces) == (t.verdict, t.exit_code, t.faces)
        if not a.error:
            assert t.probability == pytest.approx(a.probability, abs=1e-5)
    assert len(calls) < 5 and max(calls) > max(r.faces for r in alone)  # faces of several inputs in one call


def test_the_shipped_default_model_is_served_by_onnxruntime():
    """models/default/train.sh exports and copies the ONNX files: a fresh install starts fast."""
    from deepfake_cli.scoring.onnx_serving import choose_runtime, onnx_problem, onnx_record
    from deepfake_cli.serve.model_choice import default_bundle_dirs

    shipped = load_bundle(default_bundle_dirs(Path("nowhere"))[-1])
    assert onnx_problem(shipped) == ""
    exported = ("cnn.onnx", "lstm.onnx") if shipped.has_lstm else ("cnn.onnx", "cam.onnx")  # the LSTM, if it has one
    assert all(onnx_record(shipped.path)[name]["max_abs_diff"] < 1e-4 for name in exported)
    assert choose_runtime("auto", "auto", [shipped]) == "onnx"
    # and on the bundled example, onnxruntime serves what Keras computes, to 1e-4
    example = Path(__file__).resolve().parents[1] / "examples" / "astronaut.mp4"
    served = Predictor(shipped, device="cpu", runtime="onnx").predict(example)
    keras = Predictor(shipped, device="cpu", runtime="keras").predict(example)
    assert served.exit_code == keras.exit_code == 0 and served.faces == keras.faces == 75  # three windows of 25
    assert served.probability == pytest.approx(keras.probability, abs=1e-4)
    np.testing.assert_allclose(served.frame_scores, keras.frame_scores, atol=1e-4)


def test_a_bundle_that_judges_the_whole_clip_is_served_as_evaluate_measures_it(tmp_path):
    """A CNN bundle scoring frames spread over the whole clip (sampling uniform, the store's
    --spread frames), aggregated by its maximum and calibrated: evaluate (from the stored spread
    faces' features) and predict (from the clip) give the same probability, and predict says
    which frames it judged, each a window of its own, and which one drove the score."""
    spread, length = 8, 24
    clips = tmp_path / "clips"
    for label, shift in (("real", 0), ("fake", 6)):
        (clips / label).mkdir(parents=True)
        write_face_clip(clips / label / f"{label}.mp4", shift=shift, fake=label == "fake", frames=length)
    store_path = tmp_path / "dfd.h5"
    with Store.open(store_path, write=True) as store:
        assert extract(store, [clips], ExtractOptions(fpv=FPV, spread=spread)).added == 2
        assert crop(store, CropOptions(size=FACE_SIZE, device="cpu")).cropped == 2
        face = store.faces_settings(store.entries()[0].video_id)
    bundle_dir = tmp_path / "models" / "tiny"
    config = BundleConfig(name="tiny", backbone=BACKBONE, input_size=INPUT_SIZE, feature_dim=1280, face=face,
                          fpv=spread, sampling="uniform", temperature=TEMPERATURE, video_aggregation="max",
                          threshold=0.5, uncertain=[0.0, 1.0],
                          lstm={"units": 8, "dropout": 0.1, "seq_len": spread, "feature_model": "tiny", "trained": False})
    save_config(bundle_dir, config)
    classifier, _ = build_classifier(BACKBONE, INPUT_SIZE)
    save_weights_atomic(classifier, bundle_dir / "cnn.weights.h5", weights_tag("cnn", config))
    with Store.open(store_path, write=True) as store:
        assert export_features(store, bundle_dir)["exported"] == 2
        evaluation = evaluate(store, bundle_dir)
        stored = {e.path: store.read_features(e.video_id, "tiny") for e in store.entries()}
    measured = {r["path"]: r["score"] for r in evaluation.rows if r["level"] == "video" and r["model"] == "cnn-calibrated"}
    bands = evaluation.results["uncertain"]
    assert bands and all(b["uncertain"] == 1.0 for b in bands.values())  # every video is in the band [0, 1)
    predictor = Predictor(load_bundle(bundle_dir), device="cpu")
    for path, probability in measured.items():
        result = predictor.predict(Path(path))
        assert result.exit_code == 0, result.error
        assert result.probability == pytest.approx(probability, abs=1e-5)
        assert result.verdict == "uncertain"  # the band [0, 1) holds every probability
        expected_frames = np.linspace(0, length - 1, spread).round().astype(int).tolist()
        assert result.frame_indices == stored[path].frame_indices.tolist() == expected_frames
        assert result.clip_frames == length and [w["first_frame"] for w in result.windows] == expected_frames
        top = result.windows[result.most_suspicious_window]
        assert top["probability"] == pytest.approx(result.probability, abs=1e-5)  # max: the top window is the clip
        assert top["start_s"] == pytest.approx(top["first_frame"] / 10.0, abs=1e-3)  # 10 frames a second


def test_evaluate_says_when_predict_judges_more_windows_than_the_store_holds(stored, tmp_path):
    """A store holds one window of a sequence model's frames a video; a bundle that predict
    serves on three windows gets evaluate's figures with a note saying they are one window's."""
    store_path, bundle_dir, _ = stored
    with Store.open(store_path) as store:
        assert "note" not in evaluate(store, bundle_dir).results
    three = tmp_path / "tiny"
    shutil.copytree(bundle_dir, three)
    config = load_bundle(three).config
    config.windows = 3
    save_config(three, config)
    with Store.open(store_path) as store:
        note = evaluate(store, three).results["note"]
    assert "one window" in note and "3 windows" in note
