"""`dfd predict --shard K/N` and `dfd merge-results`: three shards merged equal one run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.shards import Shard, file_shard_key
from deepfake_cli.serve.merge_results import merge_results
from deepfake_cli.serve.result_files import ResultFileError
from tests.helpers import write_face_clip

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "astronaut.mp4"


def clips_folder(root: Path) -> Path:
    """Seven inputs: four made clips (two real, two fake), the example clip under two names (one
    content: one shard), and a file that is no video (an error row, in exactly one shard)."""
    root.mkdir()
    for i in range(2):
        write_face_clip(root / f"real{i}.mp4", shift=3 * i, fake=False)
        write_face_clip(root / f"fake{i}.mp4", shift=3 * i + 1, fake=True)
    shutil.copy(EXAMPLE, root / "astronaut.mp4")
    (root / "more").mkdir()
    shutil.copy(EXAMPLE, root / "more" / "astronaut-copy.mp4")
    (root / "notes.mp4").write_text("not a video")
    return root


def predict(*args) -> None:
    result = CliRunner().invoke(app, ["predict", *map(str, args), "--device", "cpu", "--quiet"])
    assert result.exit_code in (0, 3), result.output  # 3: notes.mp4 is no video


def test_three_shards_merged_equal_one_run(tmp_path):
    folder = clips_folder(tmp_path / "clips")
    predict(folder, "--csv", tmp_path / "all.csv", "--jsonl", tmp_path / "all.jsonl")
    for k in (1, 2, 3):
        predict(folder, "--shard", f"{k}/3", "--csv", tmp_path / f"part{k}.csv", "--jsonl", tmp_path / f"part{k}.jsonl")
    parts = [json.loads(line) for k in (1, 2, 3) for line in (tmp_path / f"part{k}.jsonl").read_text().splitlines()]
    assert len(parts) == 7 and len({p["path"] for p in parts}) == 7  # every input in exactly one shard
    assert sum(p["error"] is not None for p in parts) == 1
    assert any(0 < len((tmp_path / f"part{k}.jsonl").read_text().splitlines()) < 7 for k in (1, 2, 3))

    # parts given in any order: the rows come out as one run wrote them
    summary = merge_results(tmp_path / "merged.csv", [tmp_path / f"part{k}.csv" for k in (3, 1, 2)])
    assert (summary.rows, summary.duplicates) == (7, 0)
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "all.csv").read_bytes()  # same rows, same probabilities

    result = CliRunner().invoke(app, ["merge-results", str(tmp_path / "merged.jsonl"),
                                      *(str(tmp_path / f"part{k}.jsonl") for k in (2, 3, 1)), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 7

    def rows(path):  # the timings (`seconds`) differ between any two runs
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]
    assert rows(tmp_path / "merged.jsonl") == rows(tmp_path / "all.jsonl")
    # JSON Lines parts may be written as the CSV one run writes
    merge_results(tmp_path / "from-jsonl.csv", [tmp_path / f"part{k}.jsonl" for k in (1, 2, 3)])
    assert (tmp_path / "from-jsonl.csv").read_bytes() == (tmp_path / "all.csv").read_bytes()


def test_predict_shards_as_extract_does(tmp_path):
    """A clip goes to the shard of its content hash (extract's video id); what cannot be hashed,
    by its path."""
    clip = write_face_clip(tmp_path / "a.mp4", shift=0, fake=False)
    from deepfake_cli.data.extract import video_id_for
    from deepfake_cli.files import file_sha256

    assert file_shard_key(clip) == video_id_for(file_sha256(clip))
    missing = tmp_path / "missing.mp4"
    assert file_shard_key(missing) == file_shard_key(missing) != file_shard_key(tmp_path / "other.mp4")
    assert sum(Shard(k, 4).holds_file(missing) for k in (1, 2, 3, 4)) == 1


def write_jsonl(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def record(path: str, p: float, model: str = "m", seconds: float = 1.0) -> dict:
    return {"schema_version": 1, "dfd_version": "x", "model": model, "model_sha256": "ab" * 32, "path": path,
            "verdict": "fake" if p >= 0.5 else "real", "probability": p, "threshold": 0.5, "error": None,
            "exit_code": 0, "warnings": [], "seconds": {"cnn": seconds}}


def test_merge_results_keeps_agreeing_duplicates_and_refuses_the_rest(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", record("x/b.mp4", 0.9), record("x/a.mp4", 0.1))
    same = write_jsonl(tmp_path / "same.jsonl", record("x/a.mp4", 0.1, seconds=7.0))  # a rerun: other timings
    summary = merge_results(tmp_path / "out.jsonl", [a, same])
    assert (summary.rows, summary.duplicates) == (2, 1)
    assert [json.loads(line)["path"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == \
        ["x/a.mp4", "x/b.mp4"]

    other = write_jsonl(tmp_path / "other.jsonl", record("x/a.mp4", 0.2))
    with pytest.raises(ResultFileError, match="x/a.mp4 has two different results"):
        merge_results(tmp_path / "out2.jsonl", [a, other])
    model = write_jsonl(tmp_path / "model.jsonl", record("x/c.mp4", 0.2, model="n"))
    with pytest.raises(ResultFileError, match="different models"):
        merge_results(tmp_path / "out2.jsonl", [a, model])
    torn = tmp_path / "torn.jsonl"
    torn.write_text(json.dumps(record("x/d.mp4", 0.3)) + "\n" + '{"path": "x/e')
    with pytest.raises(ResultFileError, match="cut mid-line: rerun that shard with --skip-done"):
        merge_results(tmp_path / "out2.jsonl", [a, torn])
    csv_part = tmp_path / "p.csv"
    merge_results(csv_part, [a])
    with pytest.raises(ResultFileError, match="one format"):
        merge_results(tmp_path / "out2.csv", [csv_part, other])
    with pytest.raises(ResultFileError, match="give OUT a .csv name"):
        merge_results(tmp_path / "out2.jsonl", [csv_part])
    assert not (tmp_path / "out2.jsonl").exists() and not (tmp_path / "out2.csv").exists()

    result = CliRunner().invoke(app, ["merge-results", str(tmp_path / "out3.jsonl"), str(a), str(other)])
    assert result.exit_code == 1 and "two different results" in result.output
