"""Tests for deepfake_cli.data.video on small generated videos (and the shared data when present)."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepfake_cli.data import video
from deepfake_cli.data.video import VideoError, VideoInfo, choose_indices, is_image, probe, read_frames
from tests.helpers import DATA, shared_data  # noqa: F401  (DATA: tests/test_predict.py imports it from here)

N_FRAMES = 40
WIDTH, HEIGHT = 64, 48


def _frame(i: int) -> np.ndarray:
    """BGR frame i: gray level 5*i, its number in 6 black/white 8x16 blocks, a blue corner."""
    frame = np.full((HEIGHT, WIDTH, 3), 5 * i, np.uint8)
    for bit in range(6):
        frame[16:32, 8 * bit : 8 * bit + 8] = 255 if (i >> bit) & 1 else 0
    frame[:8, :8] = (255, 0, 0)  # blue in BGR: marks the top-left corner
    return frame


def _number(rgb: np.ndarray) -> int:
    """Frame number read back from the blocks of a decoded upright RGB frame."""
    gray = rgb.mean(axis=2)
    return sum(1 << bit for bit in range(6) if gray[20:28, 8 * bit + 2 : 8 * bit + 6].mean() > 128)


def _write(path: Path, fourcc: str = "mp4v", n: int = N_FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(n):
        writer.write(_frame(i))
    writer.release()
    return path


def _set_rotation(src: Path, dst: Path, degrees: int) -> Path:
    """Copy an mp4, writing a display matrix that rotates by degrees clockwise into tkhd."""
    data = bytearray(src.read_bytes())
    tkhd = data.find(b"tkhd")
    assert tkhd > 0 and data[tkhd + 4] == 0  # version 0 box
    matrix = tkhd + 4 + 4 + 5 * 4 + 8 + 4 * 2  # after version/flags, times, ids, duration, reserved, layer...
    one = 0x10000
    cos, sin = {90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    values = [cos * one, sin * one, 0, -sin * one, cos * one, 0, 0, 0, 0x40000000]
    data[matrix : matrix + 36] = struct.pack(">9i", *values)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("video") / "clip.mp4")


# ---------------------------------------------------------------- choose_indices


def test_consecutive_is_contiguous_and_centred():
    assert choose_indices(100, 10, "consecutive") == list(range(45, 55))
    assert choose_indices(11, 10, "consecutive") == list(range(0, 10))


def test_uniform_spreads_over_the_whole_video():
    indices = choose_indices(100, 5, "uniform")
    assert indices == [0, 25, 50, 74, 99]
    assert len(choose_indices(41, 40, "uniform")) == 40
    assert choose_indices(100, 1, "uniform") == [0]


def test_random_is_sorted_unique_and_seeded():
    indices = choose_indices(1000, 16, "random", seed=3)
    assert indices == sorted(set(indices)) and len(indices) == 16
    assert all(0 <= i < 1000 for i in indices)
    assert indices == choose_indices(1000, 16, "random", seed=3)
    assert indices != choose_indices(1000, 16, "random", seed=4)


@pytest.mark.parametrize("sampling", ["consecutive", "uniform", "random"])
def test_fewer_frames_than_asked_returns_all(sampling):
    assert choose_indices(7, 16, sampling) == list(range(7))
    assert choose_indices(16, 16, sampling) == list(range(16))
    assert choose_indices(0, 16, sampling) == []


def test_choose_indices_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sampling"):
        choose_indices(100, 10, "every-other")
    with pytest.raises(ValueError, match="at least 1"):
        choose_indices(100, 0, "uniform")
    with pytest.raises(ValueError):
        choose_indices(-1, 4, "uniform")


# ---------------------------------------------------------------- probe / read_frames


def test_probe_reports_the_video(clip):
    assert probe(clip) == VideoInfo(fps=25.0, frame_count=N_FRAMES, width=WIDTH, height=HEIGHT, rotation=0,
                                    codec="FMP4")  # what OpenCV reports for its mp4v writer


@pytest.mark.parametrize("seek_min_jump", [video.SEEK_MIN_JUMP, 3])
@pytest.mark.parametrize(
    "indices",
    [
        choose_indices(N_FRAMES, 8, "consecutive"),
        choose_indices(N_FRAMES, 8, "uniform"),
        choose_indices(N_FRAMES, 8, "random", seed=1),
        [0, 1, 2, 30, 31, 39],
        [5],
    ],
)
def test_read_frames_returns_exactly_the_requested_frames(clip, indices, seek_min_jump, monkeypatch):
    monkeypatch.setattr(video, "SEEK_MIN_JUMP", seek_min_jump)
    kept, frames = read_frames(clip, indices)
    assert kept.dtype == np.int64 and kept.tolist() == indices
    assert frames.dtype == np.uint8 and frames.shape == (len(indices), HEIGHT, WIDTH, 3)
    assert [_number(f) for f in frames] == indices
    levels = frames[:, 36:, 16:].mean(axis=(1, 2, 3))  # plain gray area
    np.testing.assert_allclose(levels, 5 * np.array(indices), atol=4)


@pytest.mark.parametrize("seek_min_jump", [video.SEEK_MIN_JUMP, 3])
def test_stream_without_frame_count_is_counted_and_read_right(tmp_path, seek_min_jump, monkeypatch):
    monkeypatch.setattr(video, "SEEK_MIN_JUMP", seek_min_jump)
    raw = _write(tmp_path / "raw.mjpeg", "MJPG")  # raw MJPEG stream: OpenCV reports no frame count
    info = probe(raw)
    assert info.frame_count == N_FRAMES
    kept, frames = read_frames(raw, [0, 5, 20, 26, 39], info)
    assert kept.tolist() == [0, 5, 20, 26, 39] == [_number(f) for f in frames]


@pytest.mark.parametrize("seek_min_jump", [video.SEEK_MIN_JUMP, 3])
def test_underestimated_frame_count_still_reads_later_frames(tmp_path, seek_min_jump, monkeypatch):
    monkeypatch.setattr(video, "SEEK_MIN_JUMP", seek_min_jump)
    mpeg = _write(tmp_path / "ps.mpg", "PIM1")  # MPEG program stream: frame count is estimated
    kept, frames = read_frames(mpeg, [0, 5, 20, 33, 39])
    assert kept.tolist() == [0, 5, 20, 33, 39] == [_number(f) for f in frames]


def test_read_frames_gives_rgb(clip):
    _, frames = read_frames(clip, [3])
    corner = frames[0, 2:6, 2:6].reshape(-1, 3).mean(axis=0)
    assert corner[2] > 200 and corner[0] < 60  # blue, in RGB order


def test_read_frames_sorts_and_deduplicates(clip):
    kept, frames = read_frames(clip, [9, 2, 9, 4])
    assert kept.tolist() == [2, 4, 9]
    assert [_number(f) for f in frames] == [2, 4, 9]


def test_read_frames_past_the_end_returns_what_exists(clip):
    kept, frames = read_frames(clip, [37, 39, 45, 400])
    assert kept.tolist() == [37, 39] and [_number(f) for f in frames] == [37, 39]
    with pytest.raises(VideoError, match="clip.mp4"):
        read_frames(clip, [45, 400])


def test_read_frames_trusts_the_given_info(clip):
    info = probe(clip)
    kept, _ = read_frames(clip, [0, 39, 40], info)
    assert kept.tolist() == [0, 39]


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_is_applied_exactly_once(clip, tmp_path, degrees):
    rotated = _set_rotation(clip, tmp_path / f"rot{degrees}.mp4", degrees)
    info = probe(rotated)
    assert info.rotation == degrees
    assert (info.width, info.height) == ((HEIGHT, WIDTH) if degrees % 180 else (WIDTH, HEIGHT))
    _, upright = read_frames(rotated, [0, 20])
    _, plain = read_frames(clip, [0, 20])
    expected = np.rot90(plain, k=-degrees // 90, axes=(1, 2))  # clockwise
    np.testing.assert_array_equal(upright, expected)
    assert upright.shape[1:3] == (info.height, info.width)
    cap = cv2.VideoCapture(str(rotated))  # OpenCV's own auto-orientation agrees
    ok, bgr = cap.read()
    cap.release()
    np.testing.assert_array_equal(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), upright[0])


def test_image_is_a_one_frame_video(tmp_path):
    image = np.zeros((30, 20, 3), np.uint8)
    image[..., 2] = 250  # red in BGR
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), image)
    assert is_image(path) and is_image(Path("x.JPG")) and not is_image(Path("x.mp4"))
    assert probe(path) == VideoInfo(fps=0.0, frame_count=1, width=20, height=30, rotation=0, codec="png")
    kept, frames = read_frames(path, [0])
    assert kept.tolist() == [0] and frames.shape == (1, 30, 20, 3)
    assert frames[0, 0, 0].tolist() == [250, 0, 0]


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    return {
        "empty.mp4": tmp_path / "empty.mp4",
        "text.mp4": tmp_path / "text.mp4",
        "text.jpg": tmp_path / "text.jpg",
        "missing.mp4": tmp_path / "missing.mp4",
    }


@pytest.mark.parametrize("name", ["empty.mp4", "text.mp4", "text.jpg", "missing.mp4"])
def test_unreadable_files_raise_video_error(tmp_path, name):
    path = _bad_files(tmp_path)[name]
    for call in (lambda: probe(path), lambda: read_frames(path, [0])):
        with pytest.raises(VideoError) as caught:
            call()
        message = str(caught.value)
        assert name in message and "\n" not in message


@pytest.mark.parametrize("fourcc, suffix", [("mp4v", ".mp4"), ("mp4v", ".mkv"), ("MJPG", ".avi")])
def test_truncated_video_gives_fewer_frames_or_video_error(tmp_path, fourcc, suffix):
    whole = _write(tmp_path / f"whole{suffix}", fourcc)
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    try:
        info = probe(cut)
        kept, frames = read_frames(cut, choose_indices(N_FRAMES, N_FRAMES, "uniform"), info)
    except VideoError as e:
        assert "cut" in str(e)
        return
    assert 0 < len(kept) < N_FRAMES
    assert [_number(f) for f in frames] == kept.tolist()


@pytest.mark.realdata
def test_real_ffpp_video():
    videos = shared_data("ffpp", "original_sequences", "youtube", "c23", "videos")
    path = min(videos.glob("*.mp4"))
    info = probe(path)
    assert info.frame_count > 100 and info.fps > 0 and info.rotation == 0
    kept, frames = read_frames(path, choose_indices(info.frame_count, 4, "consecutive"), info)
    assert len(kept) == 4 and frames.shape == (4, info.height, info.width, 3)


def avi_with_claimed_count(path, frames: int, claimed: int):
    """An MJPEG AVI of ``frames`` frames whose headers (avih and strh) claim ``claimed``."""
    import struct

    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for t in range(frames):
        writer.write(np.full((48, 64, 3), (t * 4) % 256, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.index(b"avih") + 8 + 16, claimed)  # dwTotalFrames
    struct.pack_into("<I", data, data.index(b"strh") + 8 + 32, claimed)  # dwLength
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("claimed", [600, 6])
@pytest.mark.parametrize("sampling", ["consecutive", "uniform"])
def test_a_lying_frame_count_is_sampled_from_the_real_length(tmp_path, claimed, sampling):
    from deepfake_cli.data.video import choose_indices, probe, sample_frames

    path = avi_with_claimed_count(tmp_path / "lying.avi", 60, claimed)
    assert probe(path).frame_count == claimed  # what the header says
    info, kept, frames = sample_frames(path, 25, sampling)
    assert (info.frame_count, info.header_frame_count) == (60, claimed)
    assert kept.tolist() == choose_indices(60, 25, sampling) and len(frames) == 25
    np.testing.assert_allclose(frames[:, 0, 0, 0], (kept * 4) % 256, atol=6)  # the frames asked for


def test_a_correct_frame_count_is_kept(tmp_path):
    from deepfake_cli.data.video import sample_frames

    path = avi_with_claimed_count(tmp_path / "honest.avi", 60, 60)
    info, kept, _ = sample_frames(path, 25, "consecutive")
    assert info.header_frame_count is None and kept.tolist() == list(range(17, 42))
