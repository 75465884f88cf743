"""Hostile inputs through the command line: broken, odd, huge and many files.

`extract` must record every bad file as failed (status + error, in the store and the summary)
and add the rest; `predict` (with the bundled default model) must print one error line naming
the file and the reason and exit 3 (unreadable) or 4 (no face), and judge the odd-but-valid ones. A fuzzer feeds a few hundred mutated copies of a valid mp4 to
video.probe + video.read_frames in a child process: no crash, no hang, only ok or VideoError.
python -m benchmarks.kill_test --fuzz N runs the same fuzzer with more cases.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import wave
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.store import Store
from tests.helpers import face_frames, write_video

runner = CliRunner()
FPV = 4


# ---------------------------------------------------------------------- making files
def mp4_boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the boxes between start and end."""
    out, pos = [], start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size < 8:
            break
        out.append((kind, pos, size))
        pos += size
    return out


def faststart(data: bytes) -> bytes:
    """The same mp4 with its index (moov) moved before the media data, as streaming encoders write it."""
    top = mp4_boxes(data, 0, len(data))
    kinds = [k for k, _, _ in top]
    assert kinds.index(b"moov") > kinds.index(b"mdat")
    _, at, size = top[kinds.index(b"moov")]
    moov = bytearray(data[at:at + size])
    pos = moov.find(b"stco")
    while pos > 0:  # shift every chunk offset by the size of the moved moov
        count = struct.unpack(">I", moov[pos + 8:pos + 12])[0]
        for i in range(count):
            o = pos + 12 + 4 * i
            moov[o:o + 4] = struct.pack(">I", struct.unpack(">I", moov[o:o + 4])[0] + size)
        pos = moov.find(b"stco", pos + 4)
    rest = b"".join(data[o:o + s] for k, o, s in top if k not in (b"moov",) and k != b"mdat")
    mdat = next(data[o:o + s] for k, o, s in top if k == b"mdat")
    return rest + bytes(moov) + mdat


def without_tracks(data: bytes) -> bytes:
    """An mp4 whose moov has no track at all: a container without any stream."""
    top = mp4_boxes(data, 0, len(data))
    out = []
    for kind, at, size in top:
        if kind == b"moov":
            inner = b"".join(data[o:o + s] for k, o, s in mp4_boxes(data, at + 8, at + size) if k != b"trak")
            out.append(struct.pack(">I4s", 8 + len(inner), b"moov") + inner)
        else:
            out.append(data[at:at + size])
    return b"".join(out)


def set_rotation(data: bytes, degrees: int) -> bytes:
    """Write a display matrix that rotates by `degrees` clockwise into tkhd (as in test_video.py)."""
    data = bytearray(data)
    tkhd = data.find(b"tkhd")
    assert tkhd > 0 and data[tkhd + 4] == 0
    matrix = tkhd + 4 + 4 + 5 * 4 + 8 + 4 * 2
    one = 0x10000
    cos, sin = {90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    data[matrix:matrix + 36] = struct.pack(">9i", cos * one, sin * one, 0, -sin * one, cos * one, 0, 0, 0, 0x40000000)
    return bytes(data)


# name -> expected outcome: "ok", "unreadable" (extract: failed; predict: exit 3), "noface" (predict: exit 4)
EXPECTED = {
    "good.mp4": "ok",
    "zero.mp4": "unreadable",
    "text.mp4": "unreadable",
    "png inside.mp4": "ok",  # a PNG renamed .mp4: FFmpeg probes the content, so it is a one-frame video
    "truncated 10.mp4": "unreadable",  # moov at the end: any cut loses the index
    "truncated 50.mp4": "unreadable",
    "truncated 90.mp4": "unreadable",
    "faststart truncated 50.mp4": "ok",  # moov first: the frames before the cut are read
    "faststart truncated 3.mp4": "unreadable",  # cut inside the index
    "wav audio.mp4": "unreadable",  # audio only (a WAV renamed)
    "no tracks.mp4": "unreadable",  # an mp4 container without any track
    "sound track.mp4": "unreadable",  # the only track declared as sound
    "audio track.mkv": "unreadable",  # Matroska, the only track declared as audio
    "noface.mp4": "noface",
    "one frame.mp4": "ok",
    "tiny 64x64.mp4": "ok",
    "large 3840x2160.mp4": "ok",
    "rotated 90.mp4": "ok",
    "vidéo ñ 1.mp4": "ok",
    "clip [abc] [b].mp4": "ok",  # yt-dlp style name: brackets are not markup
}

# What the bundled default model (deterministic) gives each "ok" input: verdict, P(fake), faces scored.
GOOD = ("fake", 0.8718925712764638, 8)  # good.mp4, and every copy of it (the astronaut's face: see tests.helpers)
JUDGED = {
    "good.mp4": GOOD,
    "png inside.mp4": ("fake", 0.8956885016805887, 1),
    "faststart truncated 50.mp4": ("fake", 0.911216840042351, 3),
    "one frame.mp4": ("fake", 0.8664524702529722, 1),
    "tiny 64x64.mp4": ("uncertain", 0.5230853651419822, 6),
    "large 3840x2160.mp4": ("fake", 0.7526544173250569, 3),
    "rotated 90.mp4": ("fake", 0.8524365488056013, 6),  # found in every frame: each is turned upright first
    "vidéo ñ 1.mp4": ("fake", 0.8995638663920746, 6),
    "clip [abc] [b].mp4": ("fake", 0.8800750434401823, 6),
}


def make_hostile(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    good = write_video(root / "good.mp4", face_frames(8, 128))
    data = good.read_bytes()
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    _, png = cv2.imencode(".png", face_frames(1, 128)[0])
    (root / "png inside.mp4").write_bytes(png.tobytes())
    for pct in (10, 50, 90):
        (root / f"truncated {pct}.mp4").write_bytes(data[:len(data) * pct // 100])
    fast = faststart(data)
    (root / "faststart truncated 50.mp4").write_bytes(fast[:len(fast) // 2])
    (root / "faststart truncated 3.mp4").write_bytes(fast[:len(fast) * 3 // 100])
    with wave.open(str(root / "wav audio.mp4"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(np.zeros(8000, np.int16).tobytes())
    (root / "no tracks.mp4").write_bytes(without_tracks(data))
    handler = data.find(b"vide")
    assert handler > 0
    (root / "sound track.mp4").write_bytes(data[:handler] + b"soun" + data[handler + 4:])
    mkv = write_video(root / "tmp.mkv", face_frames(8, 128)).read_bytes()
    track_type = mkv.find(b"\x83\x81\x01")  # TrackType = 1 (video)
    assert track_type > 0
    (root / "audio track.mkv").write_bytes(mkv[:track_type] + b"\x83\x81\x02" + mkv[track_type + 3:])
    (root / "tmp.mkv").unlink()
    write_video(root / "noface.mp4", [np.full((96, 96, 3), 127, np.uint8)] * 6)
    write_video(root / "one frame.mp4", face_frames(1, 128))
    write_video(root / "tiny 64x64.mp4", face_frames(6, 64))
    big = []
    for face in face_frames(3, 1200):
        frame = np.full((2160, 3840, 3), 90, np.uint8)
        frame[480:1680, 1320:2520] = face
        big.append(frame)
    write_video(root / "large 3840x2160.mp4", big)
    # upright 160x120 landscape frames, stored turned a quarter counter-clockwise (120 wide, 160 high)
    # with the metadata saying "rotate 90 degrees clockwise to display"
    sideways = []
    for face in face_frames(6, 120):
        upright = np.full((120, 160, 3), 127, np.uint8)
        upright[:, 20:140] = face
        sideways.append(np.ascontiguousarray(np.rot90(upright, k=1)))
    rotated = write_video(root / "sideways.mp4", sideways)
    (root / "rotated 90.mp4").write_bytes(set_rotation(rotated.read_bytes(), 90))
    rotated.unlink()
    write_video(root / "vidéo ñ 1.mp4", face_frames(6, 128, shift=2))
    write_video(root / "clip [abc] [b].mp4", face_frames(6, 128, shift=4))
    assert sorted(p.name for p in root.iterdir()) == sorted(EXPECTED)
    return root


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    return make_hostile(tmp_path_factory.mktemp("hostile"))


def invoke(*args, expect: int | None = 0):
    result = runner.invoke(app, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, f"dfd {' '.join(map(str, args))} -> {result.exit_code}\n" \
                                           f"{result.output}\n{result.exception!r}"
    return result


# ---------------------------------------------------------------------- extract
def test_extract_records_bad_files_as_failed_and_adds_the_rest(hostile, tmp_path):
    store = tmp_path / "s.h5"
    summary = json.loads(invoke("extract", hostile, "--fpv", FPV, "--store", store, "--json", "--quiet").stdout)
    bad = {n for n, e in EXPECTED.items() if e == "unreadable"}
    assert summary["found"] == len(EXPECTED)
    assert summary["added"] == len(EXPECTED) - len(bad) and summary["failed"] == len(bad)
    assert {Path(f["path"]).name for f in summary["failures"]} == bad
    for failure in summary["failures"]:
        assert failure["path"] in failure["error"] and "\n" not in failure["error"]
    with Store.open(store) as reader:
        entries = {Path(e.path).name: e for e in reader.entries()}
        assert set(entries) == set(EXPECTED)  # the failed files are in the table too
        for name, entry in entries.items():
            if name in bad:
                assert entry.status == "failed" and name in entry.error, (name, entry.error)
                assert entry.video_id.startswith("f") and entry.stored_frames == 0
            else:
                assert entry.ok and entry.stored_frames >= 1, (name, entry.error)
                frames = reader.read_frames(entry.video_id)
                assert frames.pixels.shape == (entry.stored_frames, entry.height, entry.width, 3)
        assert "empty file" in entries["zero.mp4"].error
        assert entries["large 3840x2160.mp4"].width == 3840 and entries["large 3840x2160.mp4"].height == 2160
        assert entries["tiny 64x64.mp4"].width == 64
        assert entries["one frame.mp4"].stored_frames == 1 and entries["png inside.mp4"].stored_frames == 1
        assert 0 < entries["faststart truncated 50.mp4"].stored_frames <= FPV
        rotated = entries["rotated 90.mp4"]
        assert rotated.rotation == 90 and (rotated.width, rotated.height) == (160, 120)  # upright: landscape
        assert entries["vidéo ñ 1.mp4"].path.endswith("vidéo ñ 1.mp4")

    # the readable text output names every failure on one line each, brackets and all
    again = invoke("extract", hostile, "--fpv", FPV, "--store", tmp_path / "t.h5")
    for name in bad:
        assert sum(f"failed {hostile / name}:" in line for line in again.stdout.splitlines()) == 1, name
    # a rerun skips everything, failures included; --retry-failed tries them again
    rerun = json.loads(invoke("extract", hostile, "--fpv", FPV, "--store", store, "--json", "--quiet").stdout)
    assert rerun["already_done"] == len(EXPECTED) and rerun["added"] == 0
    retry = json.loads(invoke("extract", hostile, "--fpv", FPV, "--store", store, "--json", "--quiet",
                              "--retry-failed").stdout)
    assert retry["failed"] == len(bad) and retry["added"] == 0


def test_extract_of_only_bad_files_exits_1_and_records_them(hostile, tmp_path):
    store = tmp_path / "s.h5"
    result = invoke("extract", hostile / "zero.mp4", hostile / "text.mp4", "--store", store, expect=1)
    assert f"failed {hostile / 'zero.mp4'}: empty file (0 bytes)" in result.stdout
    with Store.open(store) as reader:
        assert sorted(e.status for e in reader.entries()) == ["failed", "failed"]


def test_extract_of_a_missing_path_is_an_error_naming_it(hostile, tmp_path):
    store = tmp_path / "s.h5"
    missing = tmp_path / "no such dir" / "clip.mp4"
    result = invoke("extract", hostile / "good.mp4", missing, "--store", store, expect=1)
    assert f"{missing}: no such file or folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
    with Store.open(store) as reader:  # a typo in the arguments: nothing is done
        assert len(reader) == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_among_the_videos_does_not_block_extract(hostile, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(hostile / "good.mp4", folder / "good.mp4")
    os.mkfifo(folder / "pipe.mp4")  # hashing it would wait forever for a writer
    result = subprocess.run([sys.executable, "-m", "deepfake_cli", "extract", str(folder), "--store",
                             str(tmp_path / "s.h5"), "--json", "--quiet"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["added"] == 1 and summary["failures"] == [
        {"path": str(folder / "pipe.mp4"), "error": f"{folder / 'pipe.mp4'}: cannot read (not a regular file)"}]


def test_an_unreadable_file_is_reported_and_the_rest_added(hostile, tmp_path, monkeypatch):
    """As root every file is readable, so the EACCES of `chmod 000` is simulated."""
    import deepfake_cli.data.extract as extract_module

    real_hash = extract_module.file_sha256

    def hash_or_deny(path, *args):
        if Path(path).name == "one frame.mp4":
            raise PermissionError(13, "Permission denied", str(path))
        return real_hash(path, *args)

    monkeypatch.setattr(extract_module, "file_sha256", hash_or_deny)
    store = tmp_path / "s.h5"
    result = invoke("extract", hostile / "good.mp4", hostile / "one frame.mp4", hostile / "tiny 64x64.mp4",
                    "--store", store)
    assert f"failed {hostile / 'one frame.mp4'}: cannot read (Permission denied)" in result.stdout
    with Store.open(store) as reader:
        assert sorted(Path(e.path).name for e in reader.entries()) == ["good.mp4", "tiny 64x64.mp4"]


class CountingCapture:
    """cv2.VideoCapture that counts the calls that decode or convert frames."""

    calls: Counter = Counter()

    def __init__(self, *args):
        self._cap = REAL_CAPTURE(*args)

    def __getattr__(self, name):
        attr = getattr(self._cap, name)
        if name in ("grab", "retrieve", "read", "set"):
            def counted(*args):
                CountingCapture.calls[name] += 1
                return attr(*args)
            return counted
        return attr


REAL_CAPTURE = cv2.VideoCapture


@pytest.mark.parametrize("sampling", ["consecutive", "uniform"])
def test_long_video_decodes_only_the_sampled_frames(tmp_path_factory, tmp_path, monkeypatch, sampling):
    folder = tmp_path_factory.getbasetemp() / "long"
    path = folder / "long.mp4"
    if not path.exists():
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        frames = [np.full((32, 32, 3), int(v), np.uint8) for v in rng.integers(0, 255, 3000)]
        write_video(path, frames, fps=30.0)
    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    CountingCapture.calls.clear()
    start = time.perf_counter()
    summary = json.loads(invoke("extract", path, "--fpv", 25, "--sampling", sampling, "--store",
                                tmp_path / "s.h5", "--json", "--quiet").stdout)
    seconds = time.perf_counter() - start
    assert summary["added"] == 1 and summary["frames"] == 25
    calls = CountingCapture.calls
    # probe reads one frame; then exactly the 25 sampled frames are retrieved (converted to RGB)
    assert calls["read"] == 1 and calls["retrieve"] == 25, dict(calls)
    if sampling == "consecutive":  # one seek to the middle, then 25 grabs: not 1500 frames walked
        assert calls["grab"] <= 25 + 1 and calls["set"] >= 1, dict(calls)
    else:  # gaps of 125 frames are shorter than SEEK_MIN_JUMP: walked with grab(), never converted
        assert calls["grab"] <= 3000, dict(calls)
    assert seconds < 30, seconds


def test_a_folder_of_2000_images(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2000):
        cv2.imwrite(str(folder / f"img{i:04d}.png"), rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    for i in range(3):
        (folder / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * i)  # a header and nothing
    store = tmp_path / "s.h5"
    start = time.perf_counter()
    summary = json.loads(invoke("extract", folder, "--store", store, "--json", "--quiet").stdout)
    seconds = time.perf_counter() - start
    assert summary["found"] == 2003 and summary["added"] == 2000 and summary["failed"] == 3
    assert summary["frames"] == 2000 and summary["short"] == 0  # an image is a one-frame video, not short
    with Store.open(store) as reader:
        assert len(reader) == 2003
        assert sum(not e.ok for e in reader.entries()) == 3
    print(f"2003 files extracted in {seconds:.1f} s")


# ---------------------------------------------------------------------- predict
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "deepfake_cli" / "serve" / "default_model"


@pytest.fixture(scope="module")
def model() -> list[str]:
    """`dfd predict` options naming the bundled default model: what a user runs, and no training here."""
    if not (DEFAULT_MODEL / "config.json").exists() or not (DEFAULT_MODEL / "cnn.weights.h5").exists():
        pytest.skip(f"no default model in {DEFAULT_MODEL}")
    return ["--model", str(DEFAULT_MODEL)]


def test_predict_on_every_hostile_input(hostile, model, tmp_path):
    missing = tmp_path / "does not exist.mp4"
    files = sorted(hostile.iterdir()) + [missing]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.mp4")
        files.append(tmp_path / "pipe.mp4")
    result = invoke("predict", *files, *model, "--json", expect=None)
    assert result.exit_code == 4, result.output  # the worst of the batch: a clip without a face
    by_name = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert by_name[missing.name]["exit_code"] == 3 and "no such file" in by_name[missing.name]["error"]
    if "pipe.mp4" in by_name:
        assert by_name["pipe.mp4"]["exit_code"] == 3 and "not a file" in by_name["pipe.mp4"]["error"]
    for file_name, expected in EXPECTED.items():
        r = by_name[file_name]
        if expected == "ok":
            verdict, probability, faces = JUDGED[file_name]
            assert r["exit_code"] == 0 and r["verdict"] == verdict, r
            assert r["probability"] == pytest.approx(probability, abs=1e-6) and r["faces"] == faces, r
        else:
            assert r["exit_code"] == (3 if expected == "unreadable" else 4), r
            assert r["verdict"] is None and r["probability"] is None, r  # never a made-up score
            assert file_name in r["error"], r
    assert set(JUDGED) == {name for name, expected in EXPECTED.items() if expected == "ok"}


def test_predict_error_lines_name_the_file_once_on_one_line(hostile, model, tmp_path):
    missing = tmp_path / "does not exist.mp4"
    cases = [(hostile / "truncated 50.mp4", 3, "cannot be opened"), (hostile / "zero.mp4", 3, "empty file"),
             (missing, 3, "no such file"), (hostile / "noface.mp4", 4, "no face found")]
    for path, code, reason in cases:
        result = invoke("predict", path, *model, expect=code)
        lines = [line for line in result.output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1, result.output
        assert errors[0].count(str(path)) == 1 and reason in errors[0], errors[0]
    good = invoke("predict", hostile / "clip [abc] [b].mp4", *model)
    assert "clip [abc] [b].mp4: " in good.stdout  # the name printed as it is


# ---------------------------------------------------------------------- fuzzing
FUZZ_WORKER = r"""
import json, sys
from deepfake_cli.data.video import VideoError, choose_indices, probe, read_frames
for line in sys.stdin:
    path = line.strip()
    print(json.dumps({"start": path}), flush=True)
    try:
        info = probe(path)
        kept, frames = read_frames(path, choose_indices(info.frame_count, 4, "uniform"), info)
        assert frames.dtype.name == "uint8" and frames.ndim == 4 and frames.shape[0] == len(kept) > 0
        assert frames.shape[3] == 3 and list(kept) == sorted(set(kept.tolist()))
        outcome = "ok"
    except VideoError as exc:
        outcome = "VideoError"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"done": path, "outcome": outcome}), flush=True)
"""


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One seeded mutation of a file: flipped bytes, a cut, a duplicated chunk, zeroed or swapped ranges."""
    data = bytearray(data)
    kind = ["flip", "truncate", "duplicate", "zero", "swap", "flip+truncate"][int(rng.integers(0, 6))]
    n = len(data)
    if kind in ("flip", "flip+truncate"):
        for _ in range(int(rng.integers(1, 40))):
            data[int(rng.integers(0, n))] ^= 1 << int(rng.integers(0, 8))
    if kind in ("truncate", "flip+truncate"):
        data = data[:int(rng.integers(0, n))]
    elif kind == "duplicate":
        a = int(rng.integers(0, n))
        b = min(n, a + int(rng.integers(1, 4096)))
        at = int(rng.integers(0, n))
        data = data[:at] + data[a:b] + data[at:]
    elif kind == "zero":
        a = int(rng.integers(0, n))
        end = min(n, a + int(rng.integers(1, 2048)))
        data[a:end] = bytes(end - a)
    elif kind == "swap":
        size = int(rng.integers(16, 1024))
        a, b = sorted(int(x) for x in rng.integers(0, max(1, n - size), 2))
        if b - a >= size:
            data[a:a + size], data[b:b + size] = data[b:b + size], data[a:a + size]
    return kind, bytes(data)


def make_fuzz_cases(folder: Path, sources: list[Path], n: int, seed: int) -> list[tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        source = sources[i % len(sources)]
        kind, data = mutate(source.read_bytes(), rng)
        path = folder / f"case{i:04d}{source.suffix}"
        path.write_bytes(data)
        cases.append((path, kind))
    return cases


def run_fuzz(paths: list[Path], case_timeout: float = 10.0) -> dict[str, str]:
    """Outcome of every path, decoded in a child process that is restarted after a crash or hang.

    Outcomes: ok, VideoError, another exception's text, "crash (signal N)" or "hang".
    """
    outcomes: dict[str, str] = {}
    todo = [str(p) for p in paths]
    while todo:
        proc = subprocess.Popen([sys.executable, "-c", FUZZ_WORKER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
        proc.stdin.write("".join(p + "\n" for p in todo))
        proc.stdin.close()
        current = None
        while True:
            try:
                line = lines.get(timeout=case_timeout + (20 if current is None else 0))  # start-up: imports
            except queue.Empty:
                proc.kill()
                proc.wait()
                outcomes[current or todo[0]] = "hang"
                break
            if line is None:
                code = proc.wait()
                if current is not None:
                    outcomes[current] = f"crash (exit {code})"
                break
            message = json.loads(line)
            if "start" in message:
                current = message["start"]
            else:
                outcomes[message["done"]] = message["outcome"]
                current = None
        proc.wait()
        todo = [p for p in todo if p not in outcomes]
    return outcomes


def fuzz_sources(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = face_frames(10, 64)
    return [write_video(folder / "seed.mp4", frames), write_video(folder / "seed.mkv", frames),
            write_video(folder / "seed.avi", frames, fourcc="MJPG")]


def test_fuzzed_videos_never_crash_or_hang(tmp_path):
    cases = make_fuzz_cases(tmp_path / "cases", fuzz_sources(tmp_path / "seeds"), n=200, seed=7)
    start = time.perf_counter()
    outcomes = run_fuzz([p for p, _ in cases])
    seconds = time.perf_counter() - start
    counts = Counter(outcomes.values())
    print(f"fuzz: {len(cases)} cases in {seconds:.1f} s: {dict(counts)}")
    assert len(outcomes) == len(cases)
    unexpected = {p: o for p, o in outcomes.items() if o not in ("ok", "VideoError")}
    assert not unexpected, unexpected
    assert counts["ok"] > 0 and counts["VideoError"] > 0


# ---------------------------------------------------------------------- batches: per entry, streamed, resumable
def test_each_bad_entry_of_a_batch_fails_alone_with_its_reason(hostile, model, tmp_path):
    (tmp_path / "x.mp4").mkdir()  # a folder named like a video
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "loop.mp4", tmp_path / "loop.mp4")
    inside = tmp_path / "folder"
    inside.mkdir()
    os.symlink(inside / "loop inside.mp4", inside / "loop inside.mp4")
    shutil.copy(hostile / "good.mp4", inside / "good copy.mp4")
    inputs = [hostile / "good.mp4", tmp_path / "x.mp4", tmp_path / "empty", tmp_path / "loop.mp4", inside]
    expected = {"x.mp4": "no video or image files", "empty": "no video or image files",
                "loop.mp4": "symbolic link loop", "loop inside.mp4": "symbolic link loop"}
    if os.geteuid() != 0:  # root reads any file: a permission cannot be denied to it
        locked = shutil.copy(hostile / "good.mp4", tmp_path / "locked.mp4")
        os.chmod(locked, 0)
        inputs.append(locked)
        expected["locked.mp4"] = "permission denied"
    result = invoke("predict", *inputs, *model, "--json", expect=3)
    by_name = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    for name in ("good.mp4", "good copy.mp4"):
        assert by_name[name]["exit_code"] == 0 and by_name[name]["verdict"] == GOOD[0]
        assert by_name[name]["probability"] == pytest.approx(GOOD[1], abs=1e-6)
    for name, reason in expected.items():
        assert by_name[name]["exit_code"] == 3 and reason in by_name[name]["error"], by_name[name]
    assert len(by_name) == len(expected) + 2


def test_unreadable_reasons():
    from deepfake_cli.data.video import unreadable_reason

    assert unreadable_reason(Path(__file__)) is None
    assert unreadable_reason(Path(__file__).parent) == "is a directory"
    assert unreadable_reason(Path("/nonexistent/x.mp4")) == "no such file"


INTERRUPTIBLE = r"""
import sys
from deepfake_cli.cli.app import app
sys.argv = ["dfd", *sys.argv[1:]]
app()
"""


def test_an_interrupted_batch_keeps_every_verdict_and_resumes(hostile, model, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(12):
        shutil.copy(hostile / "good.mp4", clips / f"clip{i:02d}.mp4")
    out = tmp_path / "out.csv"
    args = [sys.executable, "-c", INTERRUPTIBLE, "predict", str(clips), *model, "--csv", str(out), "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # wait for the first two verdicts on disk
        if out.exists() and len(out.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert 2 <= len(rows) < 12
    assert all(r["verdict"] == GOOD[0] and float(r["probability"]) == pytest.approx(GOOD[1], abs=1e-6) for r in rows)
    assert len(stdout.splitlines()) == len(rows)  # each verdict was printed as soon as it was known
    assert f"interrupted after {len(rows)} of 12" in stderr and "--skip-done" in stderr
    again = invoke("predict", clips, *model, "--csv", out, "--skip-done", out, "--quiet")
    assert len(again.stdout.splitlines()) == 12 - len(rows)
    final = list(csv.DictReader(out.read_text().splitlines()))
    assert sorted(r["path"] for r in final) == sorted(str(p) for p in clips.iterdir())  # each once


def test_skip_done_reads_jsonl_and_refuses_other_files(tmp_path):
    from deepfake_cli.serve.result_files import ResultFileError, ResultWriter, done_paths

    with ResultWriter(jsonl_path=tmp_path / "r.jsonl") as writer:
        writer.write({"path": "a.mp4", "verdict": "fake"})
        writer.write({"path": "b.mp4", "verdict": "", "error": "b.mp4: no such file"})
        writer.write({"path": "c.mp4", "verdict": "uncertain"})
    assert done_paths(tmp_path / "r.jsonl") == {"a.mp4", "c.mp4"}  # a failed input is tried again; uncertain is done
    assert done_paths(tmp_path / "none.csv") == set()
    (tmp_path / "other.csv").write_text("name,score\na.mp4,0.3\n")
    with pytest.raises(ResultFileError, match="no path and verdict columns"):
        done_paths(tmp_path / "other.csv")


def test_predict_scores_a_video_whose_header_lies_and_says_so(model, tmp_path):
    path = write_video(tmp_path / "lying.avi", face_frames(30, 160), fourcc="MJPG")
    data = bytearray(path.read_bytes())
    for tag, offset in ((b"avih", 8 + 16), (b"strh", 8 + 32)):
        struct.pack_into("<I", data, data.index(tag) + offset, 300)
    path.write_bytes(bytes(data))
    [result] = json.loads(invoke("predict", path, *model, "--json").stdout)
    # three windows of 25 frames over the 30 decoded (the default model's), whatever the header claims
    assert result["verdict"] == "fake" and result["probability"] == pytest.approx(0.8245149577434626, abs=1e-6)
    assert result["frames"] == 30 and result["faces"] == 75 and result["clip_frames"] == 30
    assert result["warnings"] == ["frame count in header: 300, decoded: 30"]
    text = invoke("predict", path, *model)
    assert "frame count in header: 300, decoded: 30" in text.output


def test_strict_turns_a_warning_into_exit_6(model, tmp_path):
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), face_frames(1, 200)[0])
    [lenient] = json.loads(invoke("predict", image, *model, "--json").stdout)
    assert lenient["verdict"] == "fake" and lenient["probability"] == pytest.approx(0.7870407902095455, abs=1e-6)
    assert lenient["faces"] == 1 and any("single image" in w for w in lenient["warnings"])
    assert lenient["track_reports"][0]["scored"] and lenient["track_reports"][0]["frames_seen"] == 1
    strict = invoke("predict", image, *model, "--strict", expect=6)
    assert "single image" in strict.output


def test_extract_records_symlink_loops_and_broken_links_as_failed(hostile, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(hostile / "good.mp4", folder / "good.mp4")
    os.symlink(folder / "loop.mp4", folder / "loop.mp4")
    os.symlink(folder / "gone.mp4", folder / "broken.mp4")
    summary = json.loads(invoke("extract", folder, "--fpv", FPV, "--store", tmp_path / "s.h5", "--json",
                                "--quiet").stdout)
    reasons = {Path(f["path"]).name: f["error"] for f in summary["failures"]}
    assert summary["added"] == 1 and summary["failed"] == 2
    assert "symbolic link loop" in reasons["loop.mp4"] and "broken symbolic link" in reasons["broken.mp4"]


def test_native_decoder_warnings_stay_off_the_terminal(hostile, model):
    """FFmpeg's own lines ("moov atom not found") and OpenCV's WARN lines: only with --verbose."""
    clip = hostile / "truncated 50.mp4"
    run = subprocess.run([sys.executable, "-m", "deepfake_cli", "predict", str(clip), *model],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 3
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(clip) in lines[0], run.stderr


def test_predict_writes_heatmaps_of_the_reported_track(hostile, model, tmp_path):
    [result] = json.loads(invoke("predict", hostile / "good.mp4", *model, "--heatmap", tmp_path / "maps",
                                 "--json").stdout)
    written = [Path(p) for p in result["heatmaps"]]
    assert len(written) == result["faces"] + 1 and all(p.is_file() for p in written)
    face = cv2.imread(str(written[0]))
    assert face.shape[1] == 2 * face.shape[0]  # the crop beside its overlay
    assert written[-1].name == "good.mp4_heatmaps.png"  # named after the input (suffix kept: x.jpg, x.mp4 differ)


def test_the_clip_report_is_self_contained_and_renders(hostile, model, tmp_path):
    import re

    page = tmp_path / "report.html"
    [result] = json.loads(invoke("predict", hostile / "good.mp4", *model, "--report", page, "--json").stdout)
    assert result["report"] == str(page)
    text = page.read_text()
    assert f">{result['verdict']}</span>" in text and f"{result['probability']:.3f}" in text
    sources = re.findall(r"src='([^']*)'", text)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # chart, colour bar, faces
    for source in sources:  # every image decodes
        import base64

        image = cv2.imdecode(np.frombuffer(base64.b64decode(source.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.size > 0
    markup = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)  # base64 can spell "http" by chance
    assert "http" not in markup.replace(str(hostile), "") and "<link" not in text and "<script" not in text
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium to render the page in (apt-get install chromium)")
    broken = tmp_path / "broken.html"  # the same page with every image missing: what a failed load looks like
    broken.write_text(re.sub(r"src='data:image/png;base64,[^']*'", "src='missing.png'", text))

    def colourful_share(html_page):
        shot = html_page.with_suffix(".png")
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1000,2400", f"--screenshot={shot}", html_page.as_uri()],
                       capture_output=True, timeout=120)
        image = cv2.imread(str(shot))
        assert image is not None and image.shape[:2] == (2400, 1000)
        return float((cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[..., 1] > 80).mean())

    rendered, missing = colourful_share(page), colourful_share(broken)
    assert rendered > 0.01 and rendered > 5 * missing, (rendered, missing)  # the images are on screen
