"""`dfd crop --detect-every N` (issue 13): the detector runs on every N-th frame of a
consecutively sampled clip and the track is interpolated between (tracking.detect_sparse, as
`predict` does); N = 1 writes exactly the store `crop` always wrote.

Two small clips of the astronaut's face moving one pixel a frame (tests.test_cli), one
extracted as 9 consecutive frames, one as 9 uniformly spread ones, cropped once on every
frame and once with --detect-every 4.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.faces import crop as crop_module
from deepfake_cli.cli.app import app
from deepfake_cli.faces.crop import CropOptions, crop, crop_landmarks68, settings_differ
from deepfake_cli.faces.detectors import make_detector
from deepfake_cli.data.extract import ExtractOptions, extract
from deepfake_cli.faces.face_crops import faces_from_track
from deepfake_cli.faces.landmarks import Landmarker
from deepfake_cli.data.store import Store
from deepfake_cli.errors import OptionsError
from deepfake_cli.faces.tracking import build_tracks
from tests.helpers import write_face_clip

FRAMES = 9  # detect_every 4: key frames 0, 4, 8
SIZE = 64
ARRAYS = ("crops", "frame_indices", "boxes", "landmarks", "scores", "track_ids", "missing_frames", "landmarks68")


class CountingDetector:
    """The real detector, counting the frames it is asked about."""

    def __init__(self, detector):
        self.detector, self.name, self.frames = detector, detector.name, []

    def detect(self, frames):
        self.frames.append(len(frames))
        return self.detector.detect(frames)


def faces_by_sampling(store_path) -> dict:
    with Store.open(store_path) as store:
        return {e.sampling: store.read_faces(e.video_id) for e in store.entries()}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """{"every": store cropped with detect_every 1, "sparse": with 4, ...}."""
    root = tmp_path_factory.mktemp("crop_sparse")
    steady = write_face_clip(root / "steady.mp4", shift=0, fake=False, frames=FRAMES)
    spread = write_face_clip(root / "spread.mp4", shift=6, fake=False, frames=FRAMES)
    out = {}
    for name, every in (("every", 1), ("sparse", 4)):
        out[name] = root / f"{name}.h5"
        with Store.open(out[name], write=True) as store:
            extract(store, [steady], ExtractOptions(fpv=FRAMES, sampling="consecutive"))
            extract(store, [spread], ExtractOptions(fpv=FRAMES, sampling="uniform"))
            detectors = []

            def counting(*args, **kwargs):
                detectors.append(CountingDetector(make_detector(*args, **kwargs)))
                return detectors[-1]

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(crop_module, "make_detector", counting)
                out[f"{name}_summary"] = crop(store, CropOptions(size=SIZE, device="cpu", detect_every=every))
            out[f"{name}_calls"] = detectors[0].frames
    return out


def test_detect_every_1_writes_the_faces_crop_always_wrote(stores):
    landmarker = Landmarker()
    detector = make_detector("mtcnn", device="cpu", detect_max_side=640)
    with Store.open(stores["every"]) as store:
        for entry in store.entries():
            frames = store.read_frames(entry.video_id)
            pixels = list(frames.pixels)
            # the code path of `crop` before --detect-every: every frame detected, then tracked (no hard
            # cut in these clips: the identity check of the face rule links nothing otherwise)
            tracks = build_tracks(detector.detect(pixels), frame_shapes=[f.shape[:2] for f in pixels])
            want = faces_from_track(pixels, tracks[0], track_id=0, n_tracks=len(tracks), size=SIZE)
            got = store.read_faces(entry.video_id)
            assert len(got.frame_indices) == FRAMES
            np.testing.assert_array_equal(got.crops, want.crops)
            np.testing.assert_array_equal(got.frame_indices, frames.indices[want.frame_positions])
            np.testing.assert_array_equal(got.boxes, want.boxes)
            np.testing.assert_array_equal(got.landmarks, want.landmarks)
            np.testing.assert_array_equal(got.scores, want.scores)
            np.testing.assert_array_equal(got.track_ids, want.track_ids)
            np.testing.assert_array_equal(got.landmarks68, crop_landmarks68(landmarker, want))
            assert got.missing_frames.size == 0
            # the settings as they always were, and the face rule (track_rule.py) they were found by
            assert got.settings == {"size": SIZE, "align": True, "margin": 0.2, "detector": "mtcnn",
                                    "detect_max_side": 640, "landmarks68": "dlib", "tracks": len(tracks),
                                    "detect_every": 1, "track_rule": {"identity": True, "choose": "main"}}
    assert stores["every_calls"] == [FRAMES, FRAMES]  # one batched call per video, on every frame
    assert stores["every_summary"].detected_frames == 2 * FRAMES


def test_detect_every_4_detects_on_key_frames_and_interpolates_between(stores):
    # the consecutive clip is detected on frames 0, 4, 8 only; the uniform one on every frame
    assert sorted(stores["sparse_calls"]) == [3, FRAMES]
    summary = stores["sparse_summary"]
    assert summary.detected_frames == 3 + FRAMES and summary.frames == 2 * FRAMES
    assert summary.faces == 2 * FRAMES and set(summary.seconds) >= {"setup", "read", "detect", "write"}
    full, sparse = faces_by_sampling(stores["every"]), faces_by_sampling(stores["sparse"])

    steady, reference = sparse["consecutive"], full["consecutive"]
    assert steady.settings["detect_every"] == 4
    without_stride = lambda settings: {k: v for k, v in settings.items() if k != "detect_every"}  # noqa: E731
    assert reference.settings["detect_every"] == 1 and without_stride(steady.settings) == without_stride(
        reference.settings)
    np.testing.assert_array_equal(steady.frame_indices, reference.frame_indices)  # a face on every frame
    assert steady.crops.shape == (FRAMES, SIZE, SIZE, 3) and steady.landmarks68.shape == (FRAMES, 68, 2)
    keys = [0, 4, 8]
    for a, b in zip(keys, keys[1:]):
        low = np.minimum(steady.boxes[a], steady.boxes[b]) - 1e-3
        high = np.maximum(steady.boxes[a], steady.boxes[b]) + 1e-3
        for t in range(a + 1, b):
            assert np.all((low <= steady.boxes[t]) & (steady.boxes[t] <= high)), (t, steady.boxes[[a, t, b]])
    # key frames are full detections; in between, the face moved 1 px a frame: a few pixels at most off
    np.testing.assert_allclose(steady.boxes[keys], reference.boxes[keys], atol=0.5)
    # (MTCNN's boxes themselves jitter by a few pixels from frame to frame, its landmarks less)
    side = float(np.mean(reference.boxes[:, 3] - reference.boxes[:, 1]))  # about 115 px
    assert np.abs(steady.boxes - reference.boxes).max() < 0.05 * side
    assert np.abs(steady.boxes - reference.boxes).mean() < 2
    assert np.abs(steady.landmarks - reference.landmarks).max() < 3

    # not sampled consecutively: detected on every frame, exactly as without --detect-every
    spread = sparse["uniform"]
    assert spread.settings == full["uniform"].settings and spread.settings["detect_every"] == 1
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(spread, name), getattr(full["uniform"], name))


def test_settings_conflicts_count_detect_every(stores):
    # faces made on every frame (and old stores, whose settings have no detect_every) are not in
    # conflict with detect_every 1; detect_every 4 is, for the consecutive clip only
    assert not settings_differ({**CropOptions().settings(), "tracks": 1}, CropOptions().settings())
    assert settings_differ(CropOptions().settings(), CropOptions(detect_every=2).settings())
    # faces of a dfd that recorded no face rule were linked without the identity check: other settings
    before_rule = {k: v for k, v in CropOptions().settings().items() if k not in ("detect_every", "track_rule")}
    assert settings_differ(before_rule, CropOptions().settings())
    assert not settings_differ({**before_rule, "track_rule": CropOptions().settings()["track_rule"]},
                               CropOptions().settings())  # a missing detect_every is 1
    cases = [("every", 1, 0), ("every", 4, 1), ("sparse", 4, 0), ("sparse", 1, 1), ("sparse", 2, 1)]
    for name, every, conflicts in cases:
        with Store.open(stores[name], write=True) as store:
            summary = crop(store, CropOptions(size=SIZE, device="cpu", detect_every=every))
        assert (summary.already_done, summary.cropped, summary.settings_conflicts) == (2, 0, conflicts), (name, every)
    # and through the CLI, which passes --detect-every on
    runner = CliRunner()
    for every, conflicts in (("4", 0), ("1", 1)):
        result = runner.invoke(app, ["crop", "--store", str(stores["sparse"]), "--size", str(SIZE),
                                     "--detect-every", every, "--json", "--quiet"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["settings_conflicts"] == conflicts


@pytest.mark.parametrize("every", ["0", "-3"])
def test_detect_every_below_1_is_refused_in_one_line(tmp_path, every):
    store = tmp_path / "dfd.h5"
    result = CliRunner().invoke(app, ["crop", "--store", str(store), "--detect-every", every])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--detect-every" in lines[0] and "at least 1" in lines[0], result.output
    assert not store.exists()  # refused before the store was opened (a writer would create it)
    with pytest.raises(OptionsError, match="--detect-every"):
        CropOptions(detect_every=0).check()
