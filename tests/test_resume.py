"""What training refuses before it starts: a --resume whose options contradict the checkpoint's,
and train-cnn training videos sampled or cropped otherwise than each other.

No training here: the refusals come before anything is written, so a hand-written checkpoint
state and a tiny store are enough.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.store import Faces, Frames, Store, VideoEntry
from deepfake_cli.errors import EXIT_USAGE, DfdError, OptionsError
from deepfake_cli.nets.backbones import build_feature_extractor, get_backbone
from deepfake_cli.nets.bundle import BundleConfig, save_config
from deepfake_cli.train.calibrate import calibrate_bundle
from deepfake_cli.train.cnn import CNNTrainOptions, check_splits, train_cnn, training_settings
from deepfake_cli.train.ensemble_fit import _both_labels
from deepfake_cli.train import TrainingDataError
from deepfake_cli.train.loop import Checkpoints, new_state, prepare_state
from deepfake_cli.train.temporal import LSTMTrainOptions, train_lstm

STARTED = CNNTrainOptions(backbone="efficientnet-lite0", input_size=32, epochs=3, batch_size=8, learning_rate=1e-3)


def write_checkpoint(directory: Path, kind: str, options) -> Path:
    """A run of ``kind`` started with ``options``, killed after one epoch."""
    state = new_state(kind, asdict(options), {"train": ["a"], "val": ["b"]})
    state["history"] = [{"round": 1, "epoch": 1}]
    Checkpoints(directory).write(state)
    return directory / "state.json"


def no_splits() -> dict:
    raise AssertionError("a resumed run must not recompute its splits")


def test_given_options_that_differ_from_the_checkpoint_are_refused(tmp_path):
    state_file = write_checkpoint(tmp_path / "cnn", "cnn", STARTED)
    before = state_file.read_text()
    given = CNNTrainOptions(backbone="efficientnet-lite0", input_size=32, epochs=5, batch_size=16)
    with pytest.raises(OptionsError) as caught:
        prepare_state(Checkpoints(tmp_path / "cnn"), True, "cnn", given, no_splits)
    message = str(caught.value)
    assert "\n" not in message
    assert "epochs (checkpoint 3, given 5)" in message and "batch_size (checkpoint 8, given 16)" in message
    assert "backbone" not in message and "input_size" not in message  # given, and the same
    assert "learning_rate" not in message  # left at its default: the checkpoint's value is kept
    assert "none besides --resume" in message
    assert state_file.read_text() == before  # nothing touched


def test_options_left_at_their_defaults_take_the_checkpoints(tmp_path):
    write_checkpoint(tmp_path / "cnn", "cnn", STARTED)
    for given in (CNNTrainOptions(), CNNTrainOptions(backbone="efficientnet-lite0", epochs=3), STARTED):
        state, options, resumed_at = prepare_state(Checkpoints(tmp_path / "cnn"), True, "cnn", given, no_splits)
        assert options == STARTED and resumed_at == 1


def test_without_resume_or_checkpoint_the_given_options_start_a_fresh_run(tmp_path):
    write_checkpoint(tmp_path / "cnn", "cnn", STARTED)
    given = CNNTrainOptions(epochs=5)
    splits = {"train": ["x"], "val": ["y"]}
    for resume, directory in ((False, tmp_path / "cnn"), (True, tmp_path / "none")):
        state, options, resumed_at = prepare_state(Checkpoints(directory), resume, "cnn", given, lambda: splits)
        assert options == given and resumed_at is None and state["splits"] == splits


def test_train_cnn_resume_refuses_other_options(tmp_path):
    bundle = tmp_path / "models" / "m"
    write_checkpoint(bundle / "checkpoints" / "cnn", "cnn", STARTED)
    with pytest.raises(OptionsError, match=r"epochs \(checkpoint 3, given 5\)"):
        train_cnn(None, bundle, CNNTrainOptions(epochs=5), resume=True)  # refused before the store is read


def test_train_lstm_resume_refuses_other_options(tmp_path):
    bundle = tmp_path / "models" / "m"
    save_config(bundle, BundleConfig(name="m", backbone="efficientnet-lite0", input_size=32, feature_dim=8, fpv=6,
                                     split_ids={"train": ["a"], "val": ["b"]}, face={"size": 32}))
    write_checkpoint(bundle / "checkpoints" / "lstm", "lstm", LSTMTrainOptions(units=16, epochs=4))
    with pytest.raises(OptionsError) as caught:
        train_lstm(None, bundle, LSTMTrainOptions(units=32, epochs=4), resume=True)
    assert "units (checkpoint 16, given 32)" in str(caught.value) and "epochs" not in str(caught.value)


def test_dfd_train_cnn_resume_with_other_options_exits_with_one_line(tmp_path):
    store = tmp_path / "dfd.h5"
    with Store.open(store, write=True):
        pass
    write_checkpoint(tmp_path / "models" / "m" / "checkpoints" / "cnn", "cnn", STARTED)
    result = CliRunner().invoke(app, ["train-cnn", "-m", "m", "--models-dir", str(tmp_path / "models"),
                                      "--store", str(store), "--resume", "--epochs", "4", "--rounds", "1"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "epochs (checkpoint 3, given 4), rounds (checkpoint 2, given 1)" in " ".join(result.output.split())
    state = json.loads((tmp_path / "models" / "m" / "checkpoints" / "cnn" / "state.json").read_text())
    assert state["options"]["epochs"] == 3


# ---------------------------------------------------------------------- train-cnn: one sampling and crop
def settings_store(path: Path, odd: dict | None = None, odd_faces: dict | None = None, image: bool = False) -> Store:
    """Eight cropped videos v000..v007 (real and fake alternate; the last two are val), sampled
    alike (fpv 6, uniform) and cropped alike (32 px); v003 gets the ``odd`` entry fields and
    ``odd_faces`` face settings; with ``image``, v002 is a one-frame image."""
    face = {"size": 32, "align": True, "margin": 0.3, "detector": "mtcnn", "detect_max_side": 640}
    with Store.open(path, write=True) as store:
        for i in range(8):
            vid = f"v{i:03d}"
            fields = {"fpv": 6, "sampling": "uniform", "frame_count": 60, **((odd or {}) if i == 3 else {}),
                      **({"frame_count": 1, "fpv": 1} if image and i == 2 else {})}
            entry = VideoEntry(video_id=vid, path=f"/videos/{vid}.mp4", label="fake" if i % 2 else "real",
                               group=f"g{i}", split="val" if i >= 6 else "train", dataset="synthetic", **fields)
            store.write_frames(entry, Frames(np.arange(2, dtype=np.int64), np.zeros((2, 2, 2, 3), np.uint8)))
            settings = {**face, **((odd_faces or {}) if i == 3 else {}), "tracks": 1 + i % 2}  # tracks may differ
            store.write_faces(vid, Faces(crops=np.full((2, 32, 32, 3), 90, np.uint8), frame_indices=np.arange(2),
                                         boxes=np.zeros((2, 4)), landmarks=np.zeros((2, 5, 2)), scores=np.ones(2),
                                         track_ids=np.zeros(2), missing_frames=np.zeros(0), settings=settings))
    return Store.open(path, write=False)


TRAIN = [f"v{i:03d}" for i in range(6)]


def test_train_cnn_takes_the_settings_every_training_video_shares(tmp_path):
    fpv, sampling, face = training_settings(settings_store(tmp_path / "dfd.h5", image=True), TRAIN, "face")
    assert (fpv, sampling, face["size"], face["detector"]) == (6, "uniform", 32, "mtcnn")  # the image is no mix


@pytest.mark.parametrize("odd, odd_faces, expected", [
    ({"fpv": 10}, None, "/videos/v000.mp4 has fpv 6, /videos/v003.mp4 has fpv 10"),
    ({"sampling": "consecutive"}, None, "/videos/v000.mp4 has sampling uniform, /videos/v003.mp4 has sampling consecutive"),
    (None, {"size": 48, "margin": 0.2}, "/videos/v000.mp4 has size 32, margin 0.3, /videos/v003.mp4 has size 48, margin 0.2"),
])
def test_train_cnn_refuses_training_videos_sampled_or_cropped_otherwise(tmp_path, odd, odd_faces, expected):
    store = settings_store(tmp_path / "dfd.h5", odd, odd_faces)
    with pytest.raises(TrainingDataError) as caught:
        training_settings(store, TRAIN, "face")
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    bundle = tmp_path / "models" / "m"
    with pytest.raises(TrainingDataError, match="not all (extracted|cropped) alike"):
        train_cnn(store, bundle, CNNTrainOptions(backbone="efficientnet-lite0", input_size=32, epochs=1, rounds=1))
    assert not bundle.exists()  # refused before anything was written


def test_frame_models_do_not_compare_face_settings(tmp_path):
    store = settings_store(tmp_path / "dfd.h5", None, {"size": 48})
    assert training_settings(store, TRAIN, "frame") == (6, "uniform", {})


# ---------------------------------------------------------------------- errors the user is meant to read
def test_training_data_errors_are_dfd_errors(tmp_path):
    store = settings_store(tmp_path / "dfd.h5")
    with pytest.raises(TrainingDataError, match="the val split needs real and fake"):
        check_splits(store, {"train": TRAIN, "val": ["v006"]})
    with pytest.raises(TrainingDataError, match="needs real and fake videos that every member can score"):
        _both_labels(np.array([1, 1]), "an ensemble")
    save_config(tmp_path / "m", BundleConfig(name="m", backbone="efficientnet-lite0", input_size=32, feature_dim=8,
                                             fpv=6, split_ids={"train": TRAIN, "val": []}, face={"size": 32}))
    with pytest.raises(TrainingDataError, match="run `dfd export-features` first"):
        calibrate_bundle(store, tmp_path / "m")
    assert issubclass(TrainingDataError, DfdError) and issubclass(TrainingDataError, ValueError)


def test_a_bad_backbone_or_input_size_is_an_options_error():
    with pytest.raises(OptionsError, match="unknown backbone 'nope'"):
        get_backbone("nope")
    with pytest.raises(OptionsError, match="needs input_size >= "):
        build_feature_extractor("efficientnet-lite0", input_size=8)
