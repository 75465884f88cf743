"""A clip judged in several windows: `predict` and the store (`extract --windows`, `crop`,
`evaluate`, StoredScores) track each window on its own and combine the windows alike, so they
give the clip the same probability."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from deepfake_cli.data.extract import ExtractOptions, extract
from deepfake_cli.data.store import Store
from deepfake_cli.data.video import choose_indices, clip_windows
from deepfake_cli.errors import OptionsError
from deepfake_cli.faces.crop import CropOptions, crop
from deepfake_cli.nets.bundle import load_bundle
from deepfake_cli.scoring.stored_scores import StoredScores
from deepfake_cli.scoring.windows import choose_per_window, window_rows
from deepfake_cli.serve.model_choice import PACKAGED_MODEL
from tests.helpers import ASTRONAUT, ASTRONAUT_PROBABILITY

FPV, WINDOWS = 25, 3


def test_extract_windows_needs_consecutive_frames_and_no_spread():
    ExtractOptions(windows=3).check()
    ExtractOptions(windows=0).check()  # 'all' that fit
    for bad in (ExtractOptions(windows=-1), ExtractOptions(windows=3, sampling="uniform"),
                ExtractOptions(windows=2, spread=8)):
        with pytest.raises(OptionsError, match="--windows"):
            bad.check()


def test_windows_are_combined_by_one_rule():
    assert [r.tolist() for r in window_rows(np.array([0, 0, 2, 2, 1]))] == [[0, 1], [4], [2, 3]]
    chosen, clip = choose_per_window([0, 0, 1], [0.2, 0.6, 0.4], "max", "mean")
    assert chosen == [1, 2] and clip == pytest.approx(0.5)
    assert choose_per_window([0, 0, 1], [0.2, 0.6, 0.4], "main", "mean") == ([0, 2], pytest.approx(0.3))


@pytest.fixture(scope="module")
def windowed(tmp_path_factory):
    """examples/astronaut.mp4 (50 frames) extracted in the default model's 3 windows of 25 frames
    and cropped as that model's faces were (models/default/train.sh, and predict's stride 4)."""
    root = tmp_path_factory.mktemp("windows")
    (root / "clips" / "real").mkdir(parents=True)
    shutil.copy(ASTRONAUT, root / "clips" / "real" / "astronaut.mp4")
    store_path = root / "dfd.h5"
    with Store.open(store_path, write=True) as store:
        assert extract(store, [root / "clips"], ExtractOptions(fpv=FPV, windows=WINDOWS)).added == 1
        summary = crop(store, CropOptions(size=160, align=True, margin=0.2, detect_max_side=480, detect_every=4,
                                          device="cpu"))
    assert (summary.cropped, summary.frames, summary.faces) == (1, 75, 75)  # 3 windows of 25 frames, a face in each
    return store_path


def test_the_store_holds_each_window_cropped_on_its_own(windowed):
    with Store.open(windowed) as store:
        [entry] = store.entries()
        frames = store.read_frames(entry.video_id)
        faces = store.read_faces(entry.video_id)
    assert entry.windows == WINDOWS and entry.frame_count == 50
    assert frames.indices.tolist() == choose_indices(50, FPV, "consecutive", windows=WINDOWS)
    spans = clip_windows(50, FPV, WINDOWS)
    assert faces.windows is not None and sorted(set(faces.windows.tolist())) == [0, 1, 2]
    for w, span in enumerate(spans):  # a face in every frame of every window: 75 faces of 50 frames
        assert faces.frame_indices[faces.windows == w].tolist() == span


def test_predict_and_the_store_give_a_multi_window_clip_the_same_probability(windowed):
    """The default bundle (windows 3) on the astronaut clip: predict's probability, StoredScores'
    (crossval, calibration, ensembles) and evaluate's (from exported features) agree to 1e-5."""
    from deepfake_cli.report.evaluate import SERVED_CNN, SERVED_LSTM, evaluate
    from deepfake_cli.serve.predict import Predictor
    from deepfake_cli.train.temporal import export_features

    bundle = load_bundle(PACKAGED_MODEL)
    assert bundle.config.windows == WINDOWS
    result = Predictor(bundle, device="cpu").predict(ASTRONAUT)  # Keras, as the store's scores are computed
    assert result.exit_code == 0, result.error
    assert len(result.windows) == WINDOWS and result.faces == WINDOWS * FPV
    assert result.probability == pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-5)  # what the README shows (ONNX)
    with Store.open(windowed, write=True) as store:
        [entry] = store.entries()
        computed = StoredScores(store, bundle).probability(entry.video_id)  # from the faces: no features yet
        assert export_features(store, PACKAGED_MODEL)["exported"] == 1
    with Store.open(windowed) as store:
        stored = StoredScores(store, bundle).probability(entry.video_id)
        evaluation = evaluate(store, PACKAGED_MODEL)
    served = SERVED_LSTM if bundle.has_lstm else SERVED_CNN  # the row of what predict reports
    [measured] = [r["score"] for r in evaluation.rows if r["level"] == "video" and r["model"] == served]
    print(f"predict {result.probability!r} store {computed!r} features {stored!r} evaluate {measured!r}")
    for value in (computed, stored, measured):
        assert value == pytest.approx(result.probability, abs=1e-5)
    assert "note" not in evaluation.results  # the store holds the bundle's 3 windows
    # the windows do score differently: one window alone would not give this probability
    assert max(w["probability"] for w in result.windows) - min(w["probability"] for w in result.windows) > 1e-4
