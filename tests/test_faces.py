"""Tests for deepfake_cli.faces.detectors, .tracking and .faces: MTCNN detection, tracking, alignment and crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from deepfake_cli.errors import OptionsError
from deepfake_cli.faces.detectors import Detection, FaceDetector, MTCNNDetector, resolve_device
from deepfake_cli.faces.alignment import ARCFACE_5PTS, similarity_matrix, template_points
from deepfake_cli.faces.face_crops import align_face, crop_face, extract_faces
from deepfake_cli.faces.tracking import build_tracks

# Eileen Collins' face in skimage's astronaut, checked by eye on a rendered PNG:
# hairline/brows to chin, ear to ear.
ASTRONAUT_FACE = np.array([180, 60, 268, 174], np.float32)


def iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return cv2.transform(np.asarray(points, np.float64)[None], matrix)[0]


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector(device="cpu")


def face_patch(astronaut: np.ndarray, scale: float) -> np.ndarray:
    """The astronaut's head (with hair and some background), resized by ``scale``."""
    patch = astronaut[20:210, 140:310]
    h, w = patch.shape[:2]
    return cv2.resize(patch, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)


def scene(patches: list[tuple[np.ndarray, int, int]], hw=(480, 720)) -> np.ndarray:
    """Gray canvas with each (patch, x, y) pasted at its top-left corner."""
    canvas = np.full(hw + (3,), 128, np.uint8)
    for patch, x, y in patches:
        canvas[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return canvas


# ---------------------------------------------------------------------------- devices


def test_resolve_device(monkeypatch):
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(OptionsError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(OptionsError, match="unknown device"):
        resolve_device("tpu")


# ---------------------------------------------------------------------------- MTCNN


def test_mtcnn_finds_astronaut(astronaut_detection):
    assert astronaut_detection.score > 0.9
    assert iou(astronaut_detection.box, ASTRONAUT_FACE) > 0.5
    assert astronaut_detection.box.dtype == np.float32 and astronaut_detection.box.shape == (4,)
    assert astronaut_detection.landmarks.dtype == np.float32 and astronaut_detection.landmarks.shape == (5, 2)
    le, re_, nose, ml, mr = astronaut_detection.landmarks
    assert le[0] < nose[0] < re_[0] and ml[0] < mr[0]  # image-left first
    assert max(le[1], re_[1]) < nose[1] < min(ml[1], mr[1])
    x1, y1, x2, y2 = astronaut_detection.box
    assert np.all((astronaut_detection.landmarks >= [x1, y1]) & (astronaut_detection.landmarks <= [x2, y2]))


def test_mtcnn_no_face(detector):
    gray = np.full((360, 640, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    assert detector.detect([gray, noise]) == [[], []]
    astro = data.astronaut()
    out = detector.detect([np.full_like(astro, 128), astro])  # one batch, one empty
    assert len(out[0]) == 0 and len(out[1]) == 1
    assert detector.detect([]) == []


def test_downscaled_detection_maps_back(detector, astronaut, astronaut_detection):
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    dets = detector.detect([big])[0]
    assert len(dets) == 1
    side = astronaut_detection.box[2] - astronaut_detection.box[0]
    assert np.abs(dets[0].box / 3 - astronaut_detection.box).max() < 0.05 * side
    assert np.abs(dets[0].landmarks / 3 - astronaut_detection.landmarks).max() < 0.05 * side


def test_mixed_sizes_keep_frame_order(detector, astronaut):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    gray = np.full((200, 300, 3), 128, np.uint8)
    out = detector.detect([astronaut, gray, small, astronaut])
    assert [len(d) for d in out] == [1, 0, 1, 1]
    np.testing.assert_allclose(out[0][0].box, out[3][0].box, atol=1e-3)
    np.testing.assert_allclose(out[2][0].box * 2, out[0][0].box, atol=0.05 * 88)


def test_mtcnn_rejects_bad_frames(detector):
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect([np.zeros((10, 10, 3), np.float32)])


def test_mtcnn_two_faces_sorted_by_score(detector, astronaut):
    frame = scene([(face_patch(astronaut, 1.2), 40, 100), (face_patch(astronaut, 0.6), 450, 150)])
    dets = detector.detect([frame])[0]
    assert len(dets) == 2
    assert dets[0].score >= dets[1].score
    centers = sorted(float(d.box[0] + d.box[2]) / 2 for d in dets)
    assert centers[0] < 360 < centers[1]


# ---------------------------------------------------------------------------- alignment


def test_template_points_geometry():
    pts = template_points(160, 0.2)
    inner = 160 / 1.4
    np.testing.assert_allclose(pts, ARCFACE_5PTS / 112 * inner + 0.2 * inner, rtol=1e-6)
    np.testing.assert_allclose(template_points(112, 0.0), ARCFACE_5PTS)


def test_similarity_matrix_exact_for_similar_points():
    """Landmarks that are a rotated/scaled/shifted template map back exactly."""
    angle, scale, shift = np.radians(25), 2.7, np.array([300.0, 120.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lms = ARCFACE_5PTS @ (scale * rot).T + shift
    matrix = similarity_matrix(lms, 160, 0.2)
    np.testing.assert_allclose(transform(lms, matrix), template_points(160, 0.2), atol=1e-3)
    with pytest.raises(ValueError, match="degenerate"):
        similarity_matrix(np.zeros((5, 2)), 160, 0.2)


def test_align_face_warps_landmarks_onto_template():
    """Dots drawn at landmark positions land on the template in the aligned crop."""
    angle, scale, shift = np.radians(-20), 4.0, np.array([200.0, 150.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lms = ARCFACE_5PTS @ (scale * rot).T + shift
    image = np.zeros((900, 900, 3), np.uint8)
    for x, y in lms:
        cv2.circle(image, (int(round(x * 16)), int(round(y * 16))), 7 * 16, (255, 255, 255),
                   -1, cv2.LINE_AA, shift=4)
    out = align_face(image, lms, size=160, margin=0.2)
    assert out.shape == (160, 160, 3) and out.dtype == np.uint8
    for target in template_points(160, 0.2):
        x0, y0 = (int(v) - 8 for v in target)
        win = out[y0 : y0 + 17, x0 : x0 + 17, 0].astype(np.float64)
        ys, xs = np.mgrid[y0 : y0 + 17, x0 : x0 + 17]
        centroid = np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()
        assert np.abs(centroid - target).max() < 1.0


def test_align_astronaut_eyes_on_template(astronaut, astronaut_detection, detector):
    matrix = similarity_matrix(astronaut_detection.landmarks, 160, 0.2)
    mapped = transform(astronaut_detection.landmarks, matrix)
    target = template_points(160, 0.2)
    # Least squares over all 5 points: the eyes are close, not exact (her smile is wide).
    assert np.abs(mapped[:2] - target[:2]).max() < 3.0
    # The warped image agrees with the matrix: re-detect the eyes on an enlarged crop.
    aligned = align_face(astronaut, astronaut_detection.landmarks, size=160, margin=0.2)
    redet = detector.detect([cv2.resize(aligned, (320, 320), interpolation=cv2.INTER_CUBIC)])[0]
    assert len(redet) == 1
    assert np.abs(redet[0].landmarks[:2] / 2 - mapped[:2]).max() < 3.0


def test_align_rotated_face_levels_eyes(astronaut, detector):
    h, w = astronaut.shape[:2]
    rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1.0), (w, h))
    det = detector.detect([rotated])[0][0]
    le, re_ = det.landmarks[:2]
    assert abs(np.degrees(np.arctan2(re_[1] - le[1], re_[0] - le[0]))) > 10  # really tilted
    aligned = align_face(rotated, det.landmarks, size=160)
    redet = detector.detect([cv2.resize(aligned, (320, 320), interpolation=cv2.INTER_CUBIC)])[0]
    le, re_ = redet[0].landmarks[:2]
    assert abs(np.degrees(np.arctan2(re_[1] - le[1], re_[0] - le[0]))) < 3.0


def test_align_face_big_face_is_antialiased():
    """A face shrunk >2x goes through INTER_AREA: a fine stripe pattern averages to gray."""
    lms = ARCFACE_5PTS * 8.0 + 100
    stripes = np.zeros((1200, 1200, 3), np.uint8)
    stripes[:, ::2] = 255
    out = align_face(stripes, lms, size=112, margin=0.0)
    assert abs(float(out[20:90, 20:90].mean()) - 127.5) < 10
    assert float(out[20:90, 20:90].std()) < 20


# ---------------------------------------------------------------------------- crops


def test_crop_face_pads_instead_of_stretching():
    image = np.full((100, 100, 3), 200, np.uint8)
    # box 40 wide, 20 high at the top-left corner; margin 0.25 -> side 60, window
    # x -10..50, y -20..40; enlarged 2x into 120 px: black band 20 px left, 40 px top.
    crop = crop_face(image, np.array([0, 0, 40, 20], np.float32), size=120, margin=0.25)
    assert crop.shape == (120, 120, 3) and crop.dtype == np.uint8
    assert crop[:, :16].max() == 0 and crop[:36].max() == 0
    assert crop[44:, 24:].min() == 200
    # shrinking (INTER_AREA) keeps the same proportions
    crop = crop_face(image, np.array([0, 0, 40, 20], np.float32), size=30, margin=0.25)
    assert crop[:, :4].max() == 0 and crop[:9].max() == 0 and crop[11:, 6:].min() == 200


def test_crop_face_is_isotropic():
    """A circle stays a circle in a crop of a tall box half outside the image."""
    image = np.zeros((300, 300, 3), np.uint8)
    cv2.circle(image, (60, 150), 40, (255, 255, 255), -1)
    crop = crop_face(image, np.array([-40, 50, 60, 250], np.float32), size=100, margin=0.1)
    ys, xs = np.nonzero(crop[..., 0] > 127)
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 2


def test_crop_face_astronaut_centered(astronaut, astronaut_detection):
    crop = crop_face(astronaut, astronaut_detection.box, size=160, margin=0.2)
    x1, y1, x2, y2 = astronaut_detection.box
    side = max(x2 - x1, y2 - y1) * 1.4
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = int(round(side))
    ref = cv2.resize(astronaut[y0 : y0 + n, x0 : x0 + n], (160, 160), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop, ref)


# ---------------------------------------------------------------------------- tracking


def det(cx: float, cy: float, side: float, score: float = 0.99) -> Detection:
    box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
    lms = np.tile(np.array([[cx, cy]], np.float32), (5, 1))
    return Detection(box=box, landmarks=lms, score=score)


def main_track(detections, **kwargs) -> tuple[list, list[int]]:
    """The main identity (build_tracks' first), per frame its Detection or None, and per frame 0
    where it was found, else -1."""
    tracks = build_tracks(detections, **kwargs)
    main = tracks[0] if tracks else [None] * len(detections)
    return main, [-1 if d is None else 0 for d in main]


def test_detection_compares_by_identity():
    a = det(10, 10, 5)
    assert a == a and a != det(10, 10, 5)
    assert len({a, det(10, 10, 5)}) == 2


def test_main_track_is_big_face_not_high_score():
    big = [det(200 + 3 * t, 200, 150, score=0.9) for t in range(8)]
    small = [det(600 - 2 * t, 150, 50, score=0.999) for t in range(8)]
    frames = [[s, b] if t % 2 else [b, s] for t, (b, s) in enumerate(zip(big, small))]
    main, ids = main_track(frames)
    assert all(m is b for m, b in zip(main, big))
    assert ids == [0] * 8
    tracks = build_tracks(frames)
    assert len(tracks) == 2
    assert all(d is s for d, s in zip(tracks[1], small))


def test_missing_frames_give_none():
    big = [det(200 + 5 * t, 200, 150) for t in range(8)]
    frames = [[] if t in (3, 4) else [big[t], det(600, 150, 40)] for t in range(8)]
    main, ids = main_track(frames)
    assert main[3] is None and main[4] is None
    assert ids == [0, 0, 0, -1, -1, 0, 0, 0]
    assert [m is b for m, b in zip(main, big) if m is not None] == [True] * 6


def test_long_gap_starts_a_new_track():
    """After more than max_gap missed frames a face is a new identity."""
    face = [det(200, 200, 100) for _ in range(10)]
    frames = [[face[t]] if t < 3 or t > 7 else [] for t in range(10)]
    tracks = build_tracks(frames, max_gap=3)
    assert len(tracks) == 2


@pytest.mark.parametrize("merged", [False, True])
def test_crossing_people_are_not_spliced(merged):
    """A walks right, B walks left, they cross (optionally detected as one face)."""
    a = [det(100 + 60 * t, 200, 100, score=0.99) for t in range(7)]
    b = [det(500 - 60 * t, 215, 100, score=0.95) for t in range(7)]
    frames = [[a[t], b[t]] for t in range(7)]
    if merged:
        frames[3] = [a[3]]  # occlusion: only one face found where they overlap
    tracks = build_tracks(frames)
    assert len(tracks) == 2
    a_ids, b_ids = {id(d) for d in a}, {id(d) for d in b}
    for track in tracks:
        members = {id(d) for d in track if d is not None}
        assert members <= a_ids or members <= b_ids
    main, _ = main_track(frames)
    assert all(m is x for m, x in zip(main, a))


def test_swap_between_frames_with_different_sizes_is_not_spliced():
    """Two faces that trade places between samples differ in size, so they are gated."""
    big, small = 160, 90
    frames = [
        [det(200, 200, big), det(420, 200, small)] if t < 4 else
        [det(420, 200, big), det(200, 200, small)]
        for t in range(8)
    ]
    for track in build_tracks(frames):
        sides = {round(float(d.box[2] - d.box[0])) for d in track if d is not None}
        assert len(sides) == 1


def test_newcomer_where_main_face_left_is_not_spliced():
    a = [det(200, 200, 120) for _ in range(5)]
    b = [det(600, 220, 120, score=0.999) for _ in range(5)]
    frames = [[x] for x in a] + [[x] for x in b]
    main, ids = main_track(frames)
    members = [m for m in main if m is not None]
    assert all(m in a for m in members) or all(m in b for m in members)
    assert ids.count(0) == 5


def test_tracking_empty_inputs():
    assert build_tracks([]) == []
    assert main_track([]) == ([], [])
    main, ids = main_track([[], [], []])
    assert main == [None, None, None] and ids == [-1, -1, -1]


def test_frame_shapes_must_match():
    with pytest.raises(ValueError, match="frame shapes"):
        main_track([[det(10, 10, 5)]], frame_shapes=[(10, 10), (10, 10)])


# ---------------------------------------------------------------------------- extraction


class ScriptedDetector(FaceDetector):
    """Returns prepared detections (for tests without MTCNN)."""

    name = "scripted"

    def __init__(self, detections):
        self.detections = detections

    def detect(self, frames):
        return self.detections[: len(frames)]


def test_extract_faces_no_faces():
    frames = [np.zeros((50, 60, 3), np.uint8) for _ in range(3)]
    res = extract_faces(frames, ScriptedDetector([[], [], []]), size=64)
    assert res.crops.shape == (0, 64, 64, 3) and res.crops.dtype == np.uint8
    assert res.frame_positions.shape == (0,) and res.boxes.shape == (0, 4)
    assert res.landmarks.shape == (0, 5, 2) and res.scores.shape == (0,)
    assert res.missing_positions == [0, 1, 2] and res.n_tracks == 0
    empty = extract_faces([], ScriptedDetector([]), size=64)
    assert empty.crops.shape == (0, 64, 64, 3) and empty.missing_positions == []


def test_extract_faces_degenerate_landmarks_fall_back_to_crop():
    frame = np.full((100, 100, 3), 90, np.uint8)
    res = extract_faces([frame], ScriptedDetector([[det(50, 50, 40)]]), size=32, align=True)
    assert res.crops.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(res.crops[0], crop_face(frame, det(50, 50, 40).box, 32))


def test_extract_faces_two_people_video(detector, astronaut):
    big, small = face_patch(astronaut, 0.9), face_patch(astronaut, 0.45)
    frames = [
        scene([(small, 400 - 4 * t, 150)] + ([] if t == 2 else [(big, 30 + 6 * t, 80)]),
              hw=(360, 540))
        for t in range(5)
    ]
    detections = detector.detect(frames)
    assert [len(d) for d in detections] == [2, 2, 1, 2, 2]
    res = extract_faces(frames, ScriptedDetector(detections), size=112, align=True)
    assert res.frame_positions.tolist() == [0, 1, 3, 4]
    assert res.missing_positions == [2]
    assert res.n_tracks == 2
    assert res.crops.shape == (4, 112, 112, 3) and res.crops.dtype == np.uint8
    assert np.all(res.boxes[:, 2] < 270)  # always the big face on the left
    assert res.track_ids.tolist() == [0, 0, 0, 0]
    assert np.all(res.scores > 0.9)
    assert res.landmarks.shape == (4, 5, 2)
    plain = extract_faces(frames, ScriptedDetector(detections), size=112, align=False)
    assert plain.crops.shape == (4, 112, 112, 3)
    np.testing.assert_array_equal(plain.boxes, res.boxes)


def test_detect_sparse_interpolates_between_key_frames():
    from deepfake_cli.faces.tracking import detect_sparse

    class MovingFace:
        name = "fake-detector"

        def __init__(self):
            self.calls = 0

        def detect(self, frames):
            self.calls += len(frames)
            return [[Detection(np.array([f[0, 0, 0], 0, f[0, 0, 0] + 50, 50], np.float32),
                               np.full((5, 2), float(f[0, 0, 0]), np.float32), 0.99)] for f in frames]

    frames = [np.full((60, 200, 3), 10 * t, np.uint8) for t in range(9)]  # face x moves 10 px a frame
    detector = MovingFace()
    (track,) = detect_sparse(detector, frames, every=4)
    assert detector.calls == 3  # frames 0, 4, 8
    assert [round(float(d.box[0])) for d in track] == [10 * t for t in range(9)]
    assert track[2].landmarks[0, 0] == pytest.approx(20.0)


# ---------------------------------------------------------------------------- the face rule
def test_the_face_rule_is_read_from_the_faces_settings_or_is_the_legacy_one():
    from deepfake_cli.faces.track_rule import (LEGACY_RULE, TrackRule, TrackRuleError, recorded_rule,
                                               rule_difference, served_rule)

    recorded = {"size": 160, "detect_every": 2, "track_rule": {"identity": True, "choose": "main"}}
    assert recorded_rule(recorded) == served_rule(recorded) == TrackRule(2, True, "main")
    assert TrackRule(2).settings() == {k: recorded[k] for k in ("detect_every", "track_rule")}
    assert served_rule(recorded, detect_every=5) == TrackRule(5, True, "main")  # predict --detect-every
    # a bundle made before the rule was recorded (the shipped default): predict as it always served it
    assert recorded_rule({"size": 160}) is None and served_rule({"size": 160}) == LEGACY_RULE == TrackRule(4, True, "max")
    assert served_rule({"size": 160, "detect_every": 3}) == TrackRule(3, True, "max")  # its recorded stride
    assert TrackRule(3).stride(consecutive=True) == 3 and TrackRule(3).stride(consecutive=False) == 1
    # faces against a bundle's rule
    assert rule_difference(recorded, recorded, consecutive=True) == ""
    assert rule_difference(recorded, {**recorded, "detect_every": 1}, consecutive=False) == ""  # spread frames
    assert "detect_every 1, the bundle's rule gives 2" in rule_difference(recorded, {**recorded, "detect_every": 1},
                                                                           consecutive=True)
    assert rule_difference(recorded, {"size": 160}, True) == "cropped before the face rule was recorded"
    assert rule_difference({"size": 160}, {"size": 160, "detect_every": 9}, True) == ""  # no rule: not compared
    for bad in ({"identity": True}, {"identity": "yes", "choose": "main"}, [1]):
        with pytest.raises(TrackRuleError, match="track_rule must be"):
            recorded_rule({"track_rule": bad})
    with pytest.raises(TrackRuleError, match="detect_every must be a whole number of at least 1, not 0"):
        recorded_rule({**recorded, "detect_every": 0})


def test_extract_faces_links_across_a_hard_cut_only_the_same_person():
    """crop's tracks follow the face rule's identity check, as predict's do."""
    frames = [np.full((60, 80, 3), (20, 40, 200) if t < 4 else (200, 40, 20), np.uint8) for t in range(8)]
    detections = [[det(30, 30, 40)] for _ in range(8)]

    class Describer:  # two people: A before the cut (frame 4), B after it, in the same place
        def __call__(self, frame, detection):
            return np.full(128, 0.0 if frame[0, 0, 0] == 20 else 0.1, np.float32)

    linked = extract_faces(frames, ScriptedDetector(detections), size=32)
    assert linked.n_tracks == 1 and linked.frame_positions.tolist() == list(range(8))  # by position alone
    split = extract_faces(frames, ScriptedDetector(detections), size=32, identity=True, describer=Describer())
    assert split.n_tracks == 2 and split.frame_positions.tolist() == [0, 1, 2, 3]
