"""Crash safety of the store, through the command line.

* SIGKILL `dfd extract` and `dfd crop` at random (seeded) moments, rerun them, and check after
  every kill that the store opens, that no video lists an incomplete stage, that the next writer
  deletes `.tmp` leftovers, and at the end that the store equals one built without interruption.
* The writer lock: a second writer gets "locked by pid N" (exit 1), `--wait` waits, and a killed
  writer's lock does not block the next one.
* Disk full (a 2 MiB tmpfs; skipped where it cannot be mounted): a clear message, exit 1, no
  traceback or crash, a store that still opens with intact data, and a rerun that completes.

python -m benchmarks.kill_test drives the same helpers with many more kills.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.store import SCHEMA_VERSION, Store
from tests.helpers import write_face_clip

DFD = [sys.executable, "-m", "deepfake_cli"]


# ---------------------------------------------------------------------- material
def make_clips(root: Path, n: int = 8, frames: int = 10, size: int = 128) -> Path:
    """n face clips in real/ and fake/, plus one unreadable file (recorded as failed)."""
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = "fake" if i % 2 else "real"
        write_face_clip(root / label / f"{label}{i}.mp4", shift=3 * i, fake=label == "fake", frames=frames,
                        size=size)
    (root / "real" / "broken.mp4").write_text("not a video\n" * 10)
    # explicit splits, both labels in val, so that a model can be trained on the store
    rows = [f"{'fake' if i % 2 else 'real'}/{'fake' if i % 2 else 'real'}{i}.mp4,{'fake' if i % 2 else 'real'},"
            f"{'val' if i >= n - 2 else 'train'}" for i in range(n)]
    (root / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return root


def dfd_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


# ---------------------------------------------------------------------- store inspection
def segment_dir(store: Path) -> Path:
    return store.with_name(store.name + ".d")


def complete_segments(store: Path, stage: str) -> set[str]:
    """Video ids that have a complete (renamed into place) segment of `stage`."""
    suffix = f".{stage}.h5"
    try:
        return {e.name[: -len(suffix)] for e in os.scandir(segment_dir(store)) if e.name.endswith(suffix)}
    except FileNotFoundError:
        return set()


def leftovers(store: Path) -> list[str]:
    """Temporary files of a writer that was killed: half-written segments or index."""
    found = []
    if segment_dir(store).is_dir():
        found += [p.name for p in segment_dir(store).iterdir() if ".tmp" in p.name]
    if store.parent.is_dir():
        found += [p.name for p in store.parent.iterdir() if p.name.startswith(store.name + ".tmp")]
    return sorted(found)


def check_store(store: Path) -> dict:
    """Assert every invariant a reader relies on; return counts. Nothing written yet: {}."""
    if not store.exists() and not segment_dir(store).is_dir():
        return {}
    if store.exists():  # the index is replaced atomically, so it is always a whole HDF5 file
        with h5py.File(store, "r") as f:
            assert int(f.attrs["schema_version"]) == SCHEMA_VERSION
            for vid, group in f.get("media", {}).items():  # every link in the index resolves
                for name in group:
                    target = group[name]
                    if name == "features":
                        for model in target:
                            assert int(target[model].attrs["schema_version"]) == SCHEMA_VERSION, (vid, model)
                    else:
                        assert int(target.attrs["schema_version"]) == SCHEMA_VERSION, (vid, name)
    counts = {"videos": 0, "ok": 0, "failed": 0, "frames": 0, "faces_videos": 0, "faces": 0}
    with Store.open(store) as reader:
        for entry in reader.entries():
            vid = entry.video_id
            counts["videos"] += 1
            assert reader.has(vid, "frames"), f"{vid} is listed without its frames segment"
            frames = reader.read_frames(vid)
            if not entry.ok:
                counts["failed"] += 1
                assert entry.error and entry.stored_frames == 0 and len(frames.indices) == 0, asdict(entry)
                assert not reader.has(vid, "faces")
                continue
            counts["ok"] += 1
            n = len(frames.indices)
            counts["frames"] += n
            assert n == entry.stored_frames == frames.pixels.shape[0] > 0, (vid, n, entry.stored_frames)
            assert frames.pixels.shape[1:] == (entry.height, entry.width, 3), (vid, frames.pixels.shape)
            assert np.all(np.diff(frames.indices) > 0), vid
            if reader.has(vid, "faces"):
                faces = reader.read_faces(vid)
                k = len(faces.frame_indices)
                counts["faces_videos"] += 1
                counts["faces"] += k
                for name in ("crops", "boxes", "landmarks", "scores", "track_ids"):
                    assert len(getattr(faces, name)) == k, (vid, name, len(getattr(faces, name)), k)
                found, missing = set(faces.frame_indices.tolist()), set(faces.missing_frames.tolist())
                assert not found & missing and found | missing == set(frames.indices.tolist()), vid
                assert faces.crops.shape[1:] == (faces.settings["size"], faces.settings["size"], 3)
    orphans = complete_segments(store, "faces") - complete_segments(store, "frames")
    assert not orphans, f"faces without frames: {orphans}"
    return counts


def snapshot(store: Path) -> dict:
    """Everything the stages produced, for comparing two stores."""
    out = {}
    with Store.open(store) as reader:
        for e in reader.entries():
            item = {"label": e.label, "split": e.split, "status": e.status, "error": e.error, "path": e.path}
            if e.ok:
                frames = reader.read_frames(e.video_id)
                item["indices"], item["pixels"] = frames.indices, frames.pixels
                if reader.has(e.video_id, "faces"):
                    faces = reader.read_faces(e.video_id)
                    item["faces"] = {k: getattr(faces, k) for k in ("crops", "frame_indices", "boxes", "landmarks",
                                                                    "scores", "track_ids", "missing_frames")}
            out[e.video_id] = item
    return out


def compare_snapshots(got: dict, want: dict, crop_atol: int = 0) -> dict:
    """Assert got == want; frames bit-identical, crops within crop_atol grey levels. Returns the max diffs."""
    assert sorted(got) == sorted(want), f"video ids differ: {sorted(set(got) ^ set(want))}"
    worst = {"pixels": 0, "crops": 0, "boxes": 0.0}
    for vid, w in want.items():
        g = got[vid]
        for key in ("label", "split", "status", "error", "path"):
            assert g[key] == w[key], (vid, key, g[key], w[key])
        if "pixels" not in w:
            continue
        np.testing.assert_array_equal(g["indices"], w["indices"])
        np.testing.assert_array_equal(g["pixels"], w["pixels"])
        assert ("faces" in g) == ("faces" in w), vid
        if "faces" in w:
            gf, wf = g["faces"], w["faces"]
            for key in ("frame_indices", "track_ids", "missing_frames"):
                np.testing.assert_array_equal(gf[key], wf[key], err_msg=f"{vid} {key}")
            assert gf["crops"].shape == wf["crops"].shape, vid
            diff = int(np.abs(gf["crops"].astype(int) - wf["crops"].astype(int)).max(initial=0))
            worst["crops"] = max(worst["crops"], diff)
            worst["boxes"] = max(worst["boxes"], float(np.abs(gf["boxes"] - wf["boxes"]).max(initial=0)))
            assert diff <= crop_atol, f"{vid}: crops differ by up to {diff} grey levels"
    return worst


# ---------------------------------------------------------------------- killing
@dataclass
class Kill:
    command: str
    mode: str  # "progress": after k more segments plus jitter; "time": uniform in [0, stage duration]
    delay_s: float  # when the kill was sent, seconds after start
    segments_before: int
    segments_after: int
    total: int
    landed: str  # "startup" (nothing written), "mid-run" (some written), "finished" (exited first)
    leftovers: list

    def as_dict(self) -> dict:
        return asdict(self)


def run_dfd(args: list[str], log: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(DFD + [str(a) for a in args], capture_output=True, text=True, env=dfd_env(),
                            timeout=timeout)
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"$ dfd {' '.join(map(str, args))} -> {result.returncode}\n{result.stdout}{result.stderr}\n")
    return result


def run_and_kill(args: list, store: Path, stage: str, total: int, rng: np.random.Generator, mode: str,
                 per_segment_s: float, duration_s: float, log: Path) -> Kill:
    """Start `dfd args` and SIGKILL it at a random moment.

    progress: once the stage has written k more segments (k uniform over what is left), plus a
    jitter uniform in [0, per_segment_s]: the kill lands while work is being done, whatever the
    machine's speed. time: at a delay uniform in [0, duration_s] (the stage's uninterrupted run
    time), start-up included.
    """
    before = len(complete_segments(store, stage))
    k = int(rng.integers(0, max(total - before, 1)))
    jitter = float(rng.uniform(0, per_segment_s))
    delay = float(rng.uniform(0, duration_s))
    finished, sent, code = start_and_kill(args, log, mode, lambda: len(complete_segments(store, stage)),
                                          before + k, jitter, delay)
    if finished:
        assert code == 0, f"dfd {args[0]} failed on its own, see {log}"
    else:
        assert code == -signal.SIGKILL, code
    after = len(complete_segments(store, stage))
    landed = "finished" if finished else ("mid-run" if after > before else "startup")
    return Kill(str(args[0]), mode, round(sent, 3), before, after, total, landed, leftovers(store))


def start_and_kill(args: list, log: Path, mode: str, progress: Callable[[], int], target: int, jitter: float,
                   delay: float) -> tuple[bool, float, int]:
    """Start `dfd args` and SIGKILL it: once ``progress() >= target``, plus ``jitter`` seconds
    ("progress"), or ``delay`` seconds after the start ("time").

    Returns (whether it exited on its own, before or despite the kill; seconds until the kill; exit code).
    """
    with open(log, "a") as fh:
        fh.write(f"$ dfd {' '.join(map(str, args))}  # {mode} kill\n")
        fh.flush()
        start = time.monotonic()
        proc = subprocess.Popen(DFD + [str(a) for a in args], stdout=fh, stderr=fh, env=dfd_env())
        try:
            if mode == "progress":
                while proc.poll() is None and progress() < target:
                    time.sleep(0.005)
                deadline = time.monotonic() + jitter
            else:
                deadline = start + delay
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            sent = time.monotonic() - start
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        # Decided by how it ended, not by a poll before the kill: a run can finish between the
        # two, and a kill that lands after the exit changes nothing (it is counted as finished).
        finished = proc.returncode != -signal.SIGKILL
        fh.write(f"# {'finished' if finished else 'killed'} after {sent:.3f}s (exit {proc.returncode})\n")
    return finished, sent, proc.returncode


def kill_campaign(args: list, store: Path, stage: str, total: int, template: Path | None, kills: int,
                  rng: np.random.Generator, modes: list[str], per_segment_s: float, duration_s: float,
                  log: Path) -> list[Kill]:
    """`kills` SIGKILLs of `dfd args`, each followed by the checks; then one run to the end.

    A run that finishes before its kill makes the next one start again from `template` (a copy
    of the store before this stage; None: no store), so every kill finds work to interrupt.
    """
    done: list[Kill] = []
    pending_leftovers: list[str] = []
    for i in range(kills):
        if len(complete_segments(store, stage)) >= total:
            reset_store(store, template)
        kill = run_and_kill(args, store, stage, total, rng, modes[i % len(modes)], per_segment_s, duration_s, log)
        if kill.segments_after > kill.segments_before or kill.landed == "finished":
            # this run got past opening the store as a writer: the earlier leftovers must be gone
            still = set(pending_leftovers) & set(leftovers(store))
            assert not still, f"leftovers of a killed run were not deleted by the next writer: {still}"
        pending_leftovers = kill.leftovers
        check_store(store)
        done.append(kill)
    result = run_dfd(args, log)  # resume to the end, uninterrupted
    assert result.returncode == 0, result.stdout + result.stderr
    assert not leftovers(store), leftovers(store)
    check_store(store)
    return done


def extract_args(clips: Path, store: Path, fpv: int) -> list:
    return ["extract", clips, "--labels", clips / "labels.csv", "--fpv", fpv, "--store", store, "--quiet"]


def crop_args(store: Path, size: int) -> list:
    return ["crop", "--store", store, "--size", size, "--device", "cpu", "--quiet"]


def reset_store(store: Path, template: Path | None) -> None:
    for path in (store, segment_dir(store)):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if template is not None:
        shutil.copy2(template, store)
        shutil.copytree(segment_dir(template), segment_dir(store))


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copy2(src, dst)
    shutil.copytree(segment_dir(src), segment_dir(dst))
    return dst


def build_reference(clips: Path, work: Path, fpv: int, crop_size: int, log: Path) -> tuple[Path, Path, dict]:
    """The store built without interruption, a copy of it before crop, and how long each stage took."""
    store = work / "reference.h5"
    timing = {}
    start = time.monotonic()
    result = run_dfd(extract_args(clips, store, fpv), log)
    timing["extract_s"] = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    extracted = copy_store(store, work / "extracted.h5")
    start = time.monotonic()
    result = run_dfd(crop_args(store, crop_size), log)
    timing["crop_s"] = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    timing["frames_segments"] = len(complete_segments(store, "frames"))
    timing["faces_segments"] = len(complete_segments(store, "faces"))
    # a rough time per segment: half of a run is start-up (imports), the rest is per video
    timing["extract_per_segment_s"] = max(0.05, timing["extract_s"] / (2 * timing["frames_segments"]))
    timing["crop_per_segment_s"] = max(0.05, timing["crop_s"] / (2 * timing["faces_segments"]))
    return store, extracted, timing


# ---------------------------------------------------------------------- tests
FPV, CROP_SIZE = 8, 48


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_clips(tmp_path_factory.mktemp("clips"), n=8, frames=10, size=128)


@pytest.mark.slow
def test_sigkill_extract_and_crop_then_resume_equals_uninterrupted(clips, tmp_path):
    rng = np.random.default_rng(2024)
    log = tmp_path / "dfd.log"
    reference, extracted, timing = build_reference(clips, tmp_path, FPV, CROP_SIZE, log)
    check_store(reference)

    store = tmp_path / "killed.h5"
    kills = kill_campaign(extract_args(clips, store, FPV), store, "frames", timing["frames_segments"], None, 4,
                          rng, ["progress"], timing["extract_per_segment_s"], timing["extract_s"], log)
    compare_snapshots(snapshot(store), snapshot(extracted))  # before crop may restart from `extracted`
    kills += kill_campaign(crop_args(store, CROP_SIZE), store, "faces", timing["faces_segments"], extracted, 2,
                           rng, ["progress"], timing["crop_per_segment_s"], timing["crop_s"], log)
    assert sum(k.landed != "finished" for k in kills) >= 4, [k.as_dict() for k in kills]

    worst = compare_snapshots(snapshot(store), snapshot(reference))
    assert worst["crops"] == 0  # MTCNN and the warps are deterministic on CPU
    counts = check_store(store)
    assert counts["failed"] == 1 and counts["ok"] == 8 and counts["faces_videos"] == 8


def test_index_and_segment_leftovers_are_deleted_by_the_next_writer(tmp_path):
    store = tmp_path / "s.h5"
    with Store.open(store, write=True):
        pass
    planted = [tmp_path / "s.h5.tmp4242", segment_dir(store) / "0123456789abcdef.frames.h5.tmp4242"]
    for path in planted:
        path.write_bytes(b"\x89HDF half written")
    (tmp_path / "s.h5x.tmp1").write_bytes(b"not ours")  # another store's name: left alone
    with Store.open(store):  # readers touch nothing
        pass
    assert all(p.exists() for p in planted)
    with Store.open(store, write=True):
        pass
    assert not any(p.exists() for p in planted) and (tmp_path / "s.h5x.tmp1").exists()


runner = CliRunner()


def test_second_writer_is_refused_with_the_holders_pid(clips, tmp_path):
    store = tmp_path / "s.h5"
    with Store.open(store, write=True):
        result = runner.invoke(app, ["extract", str(clips / "real" / "real0.mp4"), "--store", str(store)])
        assert result.exit_code == 1
        assert f"locked by pid {os.getpid()}" in result.output
        with Store.open(store) as reader:  # readers need no lock
            assert len(reader) == 0
    result = runner.invoke(app, ["extract", str(clips / "real" / "real0.mp4"), "--store", str(store), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["added"] == 1


def opened_by(pid: int, path: Path) -> bool:
    """Whether process pid has path open (Linux /proc)."""
    try:
        return any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc to see the waiting writer")
def test_wait_waits_for_the_writer(clips, tmp_path):
    store = tmp_path / "s.h5"
    holder = Store.open(store, write=True)
    lock = (tmp_path / "s.h5.lock").resolve()
    try:
        proc = subprocess.Popen(DFD + ["extract", str(clips / "fake"), "--store", str(store), "--wait", "--json",
                                       "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dfd_env())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not opened_by(proc.pid, lock):
            time.sleep(0.05)
        assert opened_by(proc.pid, lock), "the second writer never reached the lock"
        time.sleep(1.0)  # it has the lock file open: it is waiting in flock, not starting up
        assert proc.poll() is None, proc.communicate()
        assert not complete_segments(store, "frames")
    finally:
        holder.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["added"] == 4


def test_killed_writer_does_not_block_the_next(clips, tmp_path):
    store = tmp_path / "s.h5"
    code = (f"from deepfake_cli.data.store import Store; import time; s = Store.open({str(store)!r}, write=True); "
            "print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        result = runner.invoke(app, ["extract", str(clips / "real" / "real0.mp4"), "--store", str(store)])
        assert result.exit_code == 1 and f"locked by pid {proc.pid}" in result.output
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "s.h5.lock").read_text().strip() == str(proc.pid)  # the file still names it...
    result = runner.invoke(app, ["extract", str(clips / "real" / "real0.mp4"), "--store", str(store), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["added"] == 1  # ...but the lock died with it


# ---------------------------------------------------------------------- disk full
@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs, unmounted afterwards; skip where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def noise_clip(path: Path, frames: int, size: int, seed: int) -> Path:
    """Random pixels: incompressible, so the size of a segment is known in advance."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    writer.release()
    return path


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_disk_full_is_a_clear_error_and_the_store_survives(small_fs, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    cv2.imwrite(str(videos / "a_small.png"), np.full((8, 8, 3), 100, np.uint8))  # fits
    for i in range(3):
        noise_clip(videos / f"noise{i}.mp4", frames=6, size=160, seed=i)  # ~460 kB segments each
    store = small_fs / "dfd.h5"
    log = tmp_path / "dfd.log"
    run_dfd(["extract", videos / "a_small.png", "--store", store, "--quiet"], log)
    # leave room for the small segments but not for a noise one, nor for the index at the end
    (small_fs / "filler").write_bytes(b"\0" * (free_bytes(small_fs) - 24 * 1024))

    result = run_dfd(["extract", videos, "--fpv", 6, "--store", store], log)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "disk full" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not leftovers(store)
    counts = check_store(store)  # opens, and every segment in it is whole
    assert counts["ok"] == 1

    (small_fs / "filler").unlink()  # free space and rerun: everything is added and intact
    result = run_dfd(["extract", videos, "--fpv", 6, "--store", store, "--json", "--quiet"], log)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["added"] == 3
    counts = check_store(store)
    assert counts["ok"] == 4 and counts["frames"] == 1 + 3 * 6
    from deepfake_cli.data.video import probe, read_frames

    with Store.open(store) as reader:
        for entry in reader.entries():
            want = read_frames(entry.path, list(range(6)), probe(entry.path))[1]
            np.testing.assert_array_equal(reader.read_frames(entry.video_id).pixels, want)


def test_disk_full_while_writing_the_index_at_exit(small_fs, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    cv2.imwrite(str(videos / "a_small.png"), np.full((8, 8, 3), 100, np.uint8))
    noise_clip(videos / "noise.mp4", frames=6, size=160, seed=0)
    store = small_fs / "dfd.h5"
    log = tmp_path / "dfd.log"
    run_dfd(["extract", noise_clip(tmp_path / "first.mp4", frames=2, size=64, seed=9), "--store", store,
             "--quiet"], log)
    index_size = store.stat().st_size
    # room for the small segment, not for the noise video nor for the index (a little larger now)
    (small_fs / "filler").write_bytes(b"\0" * (free_bytes(small_fs) - index_size // 2 - 8192))
    result = run_dfd(["extract", videos, "--store", store], log)
    assert result.returncode == 1
    assert "disk full while writing the index" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode != -signal.SIGSEGV
    counts = check_store(store)  # the index is stale, the segment scan finds what was added
    assert counts["ok"] >= 1 and not leftovers(store)
