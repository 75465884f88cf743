"""`dfd predict --engine ray`: a batch scored by Ray actors on a local cluster of 2 CPUs equals the
plain run (same rows, same probabilities, same errors, input order)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.serve.batch import BatchPrediction
from tests.helpers import write_face_clip

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "astronaut.mp4"


def test_engine_ray_without_ray_says_which_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(app, ["predict", str(EXAMPLE), "--engine", "ray"])
    assert result.exit_code == 2
    assert "--engine ray needs Ray" in result.output and "deepfake-cli[ray]" in result.output


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'deepfake-cli[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_batch_equals_the_plain_run(tmp_path, ray_cluster):
    from deepfake_cli.serve.ray_batch import RayBatchPrediction

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        write_face_clip(clips / f"real{i}.mp4", shift=3 * i, fake=False)
        write_face_clip(clips / f"fake{i}.mp4", shift=3 * i + 1, fake=True)
    shutil.copy(EXAMPLE, clips / "astronaut.mp4")
    (clips / "notes.mp4").write_text("not a video")  # its error is its own row; the batch goes on

    plain = BatchPrediction([clips], csv_path=tmp_path / "plain.csv", jsonl_path=tmp_path / "plain.jsonl").run()
    seen = []
    outcome = RayBatchPrediction([clips], workers=2, csv_path=tmp_path / "ray.csv",
                                 jsonl_path=tmp_path / "ray.jsonl").run(on_result=lambda r: seen.append(r.path))
    assert seen == [r.path for r in plain.results] == [str(f) for f in sorted(clips.iterdir())]  # input order
    assert outcome.exit_code == plain.exit_code == 3 and not outcome.bugs
    assert [(r.verdict, repr(r.probability), r.error, r.exit_code) for r in outcome.results] == \
        [(r.verdict, repr(r.probability), r.error, r.exit_code) for r in plain.results]
    verdicts = {r.verdict for r in outcome.results}
    assert "" in verdicts and verdicts - {""} and verdicts <= {"real", "fake", "uncertain", ""}  # verdicts, and the error row
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()

    def rows(path):  # the timings (`seconds`) differ between any two runs
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]
    assert rows(tmp_path / "ray.jsonl") == rows(tmp_path / "plain.jsonl")

    # the command line, on the cluster the caller started (left running)
    result = CliRunner().invoke(app, ["predict", str(clips), "--engine", "ray", "--workers", "2", "--device", "cpu",
                                      "--csv", str(tmp_path / "cli.csv"), "--quiet"])
    assert result.exit_code == 3, result.output
    assert (tmp_path / "cli.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    assert ray_cluster.is_initialized()
    result = CliRunner().invoke(app, ["predict", str(clips), "--engine", "ray", "--workers", "3"])
    assert result.exit_code == 2 and "--workers 3 needs 3 CPUs; the Ray cluster has 2" in result.output
    # an option the model refuses while the workers load it: the plain run's one-line error
    both = ["predict", str(clips), "--threshold", "0.5", "--max-fpr", "0.1"]
    plain_error, ray_error = (CliRunner().invoke(app, both + engine) for engine in ([], ["--engine", "ray"]))
    assert ray_error.exit_code == plain_error.exit_code == 1
    assert ray_error.output == plain_error.output == "error: give --threshold or --max-fpr, not both\n"


def test_a_dead_worker_fails_only_the_inputs_it_held(tmp_path, ray_cluster):
    from deepfake_cli.serve.ray_batch import IN_FLIGHT_PER_WORKER, RayBatchPrediction

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(4):
        shutil.copy(EXAMPLE, clips / f"clip{i}.mp4")
    batch = RayBatchPrediction([clips], workers=2, csv_path=tmp_path / "out.csv")
    first, _ = batch.load()
    ray_cluster.kill(first)  # as if its node went away
    outcome = batch.run()
    assert [r.path for r in outcome.results] == [str(p) for p in sorted(clips.iterdir())]
    failed = [r for r in outcome.results if r.error]
    assert 1 <= len(failed) <= IN_FLIGHT_PER_WORKER and all("its Ray worker failed" in r.error for r in failed), \
        [r.error for r in failed]
    (alone,) = BatchPrediction([clips / "clip0.mp4"]).run().results  # the plain run's verdict of each copy
    assert all((r.verdict, r.probability) == (alone.verdict, alone.probability)
               for r in outcome.results if not r.error), [(r.verdict, r.probability) for r in outcome.results]
    assert outcome.exit_code == 1 and len((tmp_path / "out.csv").read_text().splitlines()) == 5
