"""docs/slurm_shards.sh under a real Slurm: a one-node cluster on 127.0.0.1 (scripts/slurm-local.sh)
runs `sbatch --array=0-3` (extract and crop, shard i+1 of 4, each into its own store), one task
killed while it runs and resubmitted alone, then a `dfd merge` job that depends on the array; the
merged store holds byte for byte the frames and faces one process makes of the same videos."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.store import Store
from tests.helpers import face_frames, write_video

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "slurm_shards.sh"
EXTRACT = ["--fpv", "4"]
CROP = ["--size", "64", "--device", "cpu"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("sbatch", "slurmctld", "slurmd", "munged")),
                       reason="Slurm is not installed (apt-get install -y slurm-wlm munge)"),
]


@pytest.fixture()
def cluster(tmp_path):
    """A one-node Slurm cluster in tmp_path/slurm; yields the environment sbatch and the jobs run with."""
    folder = tmp_path / "slurm"
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # this venv's dfd
           "DFD_EXTRACT_OPTIONS": " ".join(EXTRACT), "DFD_CROP_OPTIONS": " ".join(CROP)}
    started = subprocess.run([str(ROOT / "scripts" / "slurm-local.sh"), "start", str(folder)], env=env,
                             capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        yield env
    finally:
        subprocess.run([str(ROOT / "scripts" / "slurm-local.sh"), "stop", str(folder)], env=env, timeout=60)


def sbatch(env: dict, *args) -> str:
    """Submit; the job id."""
    run = subprocess.run(["sbatch", "--parsable", *map(str, args)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().split(";")[0]


def job_states(env: dict, job: str) -> dict[str, str]:
    """{job or array task id: state} of the jobs squeue still lists."""
    run = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i %T"], env=env, capture_output=True, text=True,
                         timeout=60)
    return dict(line.split() for line in run.stdout.splitlines() if line.strip())


def wait_for(env: dict, job: str, limit: float = 400) -> None:
    deadline = time.monotonic() + limit
    while job_states(env, job):
        assert time.monotonic() < deadline, f"job {job} still queued or running after {limit} s"
        time.sleep(0.5)


def dataset(root: Path) -> Path:
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            write_video(root / label / f"{label}{i}.mp4", face_frames(6, 96, shift=4 * i + (label == "fake")))
    return root


def segments(store_path: Path) -> int:
    """Frame and face segments a store holds (0: no store yet)."""
    if not store_path.exists():
        return 0
    with Store.open(store_path) as store:
        return sum(store.has(e.video_id, stage) for e in store.entries() for stage in ("frames", "faces"))


def contents(store_path: Path) -> dict:
    """Every stored array of every video (frames and faces), as bytes, with its label and path."""
    out = {}
    with Store.open(store_path) as store:
        for e in store.entries():
            frames, faces = store.read_frames(e.video_id), store.read_faces(e.video_id)
            arrays = [frames.indices, frames.pixels, faces.crops, faces.frame_indices, faces.boxes, faces.landmarks,
                      faces.scores, faces.track_ids, faces.missing_frames]
            out[e.video_id] = (e.label, e.path, [(a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes())
                                                 for a in arrays])
    return out


def test_slurm_array_killed_task_resubmitted_then_merged_equals_one_process(tmp_path, cluster):
    data = dataset(tmp_path / "data")
    out = tmp_path / "shards"
    logs = tmp_path / "logs"
    logs.mkdir()
    limits = ["--cpus-per-task=1", "--mem=500M", "--time=00:10:00", f"--output={logs}/%A_%a.out"]
    start = time.monotonic()
    array = sbatch(cluster, "--array=0-3", *limits, SCRIPT, data, out, 4)
    # kill task 1 (shard 2/4) as soon as it runs
    deadline = time.monotonic() + 120
    while (state := job_states(cluster, array).get(f"{array}_1")) not in ("RUNNING", None):
        assert time.monotonic() < deadline, "task 1 never started"
        time.sleep(0.1)
    subprocess.run(["scancel", f"{array}_1"], env=cluster, check=True, timeout=60)
    assert state == "RUNNING"  # killed mid-run (starting Python and dfd alone takes seconds)
    wait_for(cluster, array)
    killed = segments(out / "shard-2.h5")
    again = sbatch(cluster, "--array=1", *limits, SCRIPT, data, out, 4)  # resubmitted alone
    merge = sbatch(cluster, f"--dependency=afterok:{again}", f"--output={logs}/merge.out",
                   "--wrap", f"dfd merge --out {tmp_path / 'merged.h5'} {out}/shard-*.h5 --quiet")
    wait_for(cluster, merge)
    seconds = time.monotonic() - start
    failures = {p.name: p.read_text() for p in logs.glob("*.out") if re.search(r"error|Traceback", p.read_text())}
    assert (tmp_path / "merged.h5").exists(), failures

    whole = tmp_path / "whole.h5"
    runner = CliRunner()
    started = time.monotonic()
    assert runner.invoke(app, ["extract", str(data), "--store", str(whole), *EXTRACT, "--quiet"]).exit_code == 0
    assert runner.invoke(app, ["crop", "--store", str(whole), *CROP, "--quiet"]).exit_code == 0
    one = time.monotonic() - started
    sizes = [len(Store.open(out / f"shard-{k}.h5").entries()) for k in (1, 2, 3, 4)]
    assert killed < segments(out / "shard-2.h5")  # the kill left shard 2 unfinished; the rerun finished it
    assert sum(sizes) == 8 and max(sizes) < 8  # each shard its own part
    merged, expected = contents(tmp_path / "merged.h5"), contents(whole)
    assert len(expected) == 8 and merged == expected  # frames and faces byte-equal
    print(f"slurm: 4 tasks (one killed and resubmitted) and the merge in {seconds:.1f} s; one process {one:.1f} s")


def test_slurm_predict_array_merged_equals_one_run(tmp_path, cluster):
    """docs/slurm_predict.sh as `sbatch --array=0-2`, a `dfd merge-results` job after it: the CSV
    one `dfd predict FOLDER --csv` writes."""
    from tests.helpers import write_face_clip

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        write_face_clip(clips / f"real{i}.mp4", shift=3 * i, fake=False)
        write_face_clip(clips / f"fake{i}.mp4", shift=3 * i + 1, fake=True)
    (clips / "notes.mp4").write_text("not a video")  # its row is its error, in one part
    out = tmp_path / "verdicts"
    limits = ["--cpus-per-task=1", "--mem=500M", "--time=00:10:00", f"--output={tmp_path}/%A_%a.out"]
    env = {**cluster, "DFD_PREDICT_OPTIONS": "--device cpu"}
    start = time.monotonic()
    array = sbatch(env, "--array=0-2", *limits, ROOT / "docs" / "slurm_predict.sh", clips, out, 3)
    merge = sbatch(env, f"--dependency=afterok:{array}", f"--output={tmp_path}/merge.out",
                   "--wrap", f"dfd merge-results {tmp_path / 'all.csv'} {out}/part-*.csv --quiet")
    wait_for(env, merge)
    seconds = time.monotonic() - start
    assert (tmp_path / "all.csv").exists(), (tmp_path / "merge.out").read_text()
    assert all(len((out / f"part-{k}.csv").read_text().splitlines()) < 8 for k in (1, 2, 3))  # a part each
    result = CliRunner().invoke(app, ["predict", str(clips), "--device", "cpu", "--csv", str(tmp_path / "one.csv"),
                                      "--quiet"])
    assert result.exit_code == 3, result.output
    assert (tmp_path / "all.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert len((tmp_path / "one.csv").read_text().splitlines()) == 8  # a header, 7 inputs
    print(f"slurm: predict in 3 tasks and merge-results in {seconds:.1f} s")
