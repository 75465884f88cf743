"""`dfd compress`: H.264 at FaceForensics++'s CRF 23 and 40, layout kept, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.compress import output_path
from tests.helpers import shared_data

pytest.importorskip("imageio_ffmpeg")


def textured_clip(path, frames: int = 20, size: int = 128):
    """A clip of moving fine texture (compression visibly blurs it)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (size * 2, size * 2, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
    for t in range(frames):
        writer.write(np.ascontiguousarray(texture[t:t + size, t:t + size]))
    writer.release()
    return path


def sharpness(path) -> float:
    capture = cv2.VideoCapture(str(path))
    values = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        values.append(cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())
    capture.release()
    return float(np.mean(values))


def test_c40_is_h264_smaller_and_blurrier_than_c23_and_the_ffpp_layout_is_kept(tmp_path):
    tree = tmp_path / "ffpp" / "original_sequences" / "youtube" / "raw" / "videos"
    tree.mkdir(parents=True)
    textured_clip(tree / "001.avi")
    runner = CliRunner()
    outputs = {}
    for crf in (23, 40):
        result = runner.invoke(app, ["compress", str(tmp_path / "ffpp"), "--crf", str(crf), "--out",
                                     str(tmp_path / "out"), "--json"])
        assert result.exit_code == 0, result.output
        (written,) = json.loads(result.stdout)["written"]
        assert written.endswith(f"original_sequences/youtube/c{crf}/videos/001.mp4")
        outputs[crf] = written
    for path in outputs.values():
        capture = cv2.VideoCapture(path)
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
        assert fourcc in ("avc1", "h264") and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
        capture.release()
    sizes = {crf: Path(p).stat().st_size for crf, p in outputs.items()}
    assert sizes[40] < sizes[23]
    assert sharpness(outputs[40]) < sharpness(outputs[23])
    again = runner.invoke(app, ["compress", str(tmp_path / "ffpp"), "--crf", "40", "--out", str(tmp_path / "out"),
                                "--json"])
    assert json.loads(again.stdout)["already_done"] == 1  # resumable: nothing redone


def test_output_paths_and_bad_input(tmp_path):
    assert output_path(Path("a/c23/videos/x.mp4"), 40, Path("o")) == Path("o/a/c40/videos/x.mp4")
    assert output_path(Path("clips/x.avi"), 23, Path("o")) == Path("o/clips/x.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    result = CliRunner().invoke(app, ["compress", str(tmp_path / "broken.mp4"), "--crf", "23", "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 1 and "broken.mp4: ffmpeg could not re-encode it" in result.output
    assert not list((tmp_path / "o").rglob("*.mp4"))  # no half-written file left


@pytest.mark.realdata
def test_compress_a_real_ffpp_video_to_c23_and_c40(tmp_path):
    videos = shared_data("ffpp", "original_sequences", "youtube", "c23", "videos")
    smallest = min(videos.glob("*.mp4"), key=lambda p: p.stat().st_size)
    source = tmp_path / "ffpp" / "original_sequences" / "youtube" / "c23" / "videos" / smallest.name
    source.parent.mkdir(parents=True)
    source.symlink_to(smallest)
    written = {}
    for crf in (23, 40):
        result = CliRunner().invoke(app, ["compress", str(tmp_path / "ffpp"), "--crf", str(crf), "--out",
                                          str(tmp_path / "out"), "--json"])
        assert result.exit_code == 0, result.output
        (written[crf],) = json.loads(result.stdout)["written"]
        assert written[crf].endswith(f"original_sequences/youtube/c{crf}/videos/{smallest.name}")
    assert Path(written[40]).stat().st_size < Path(written[23]).stat().st_size < 2 * smallest.stat().st_size
