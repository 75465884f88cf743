"""The machine interface (docs/output.md): --json always an array, --jsonl, the CSV, the Python
API (Detector), each carrying the schema's identity keys, and docs/output.md listing exactly the
keys real output has."""

from __future__ import annotations

import ast
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli import app
from deepfake_cli.serve.model_choice import PACKAGED_MODEL
from deepfake_cli.serve.schema import CSV_COLUMNS, SCHEMA_VERSION
from tests.helpers import (ASTRONAUT, ASTRONAUT_PROBABILITY, ASTRONAUT_THRESHOLD, ASTRONAUT_VERDICT,
                           DEFAULT_MODEL_SHA256, DEFAULT_MODEL_WEIGHTS, ROOT)

DOC = ROOT / "docs" / "output.md"


def documented(section: str) -> list[str]:
    """The keys (first column, in backticks) of the table under ``section`` in docs/output.md."""
    text = DOC.read_text()
    block = text[text.index(section):]
    block = block[block.index("| key |"):]
    keys = []
    for line in block.splitlines()[2:]:
        if not line.startswith("|"):
            break
        keys.append(re.match(r"\|\s*`([^`]+)`", line).group(1))
    return keys


def all_strings_and_floats(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from all_strings_and_floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_strings_and_floats(v)
    else:
        yield value


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "corrupt.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


@pytest.fixture(scope="module")
def two_results(corrupt) -> list[dict]:
    result = CliRunner().invoke(app, ["predict", str(ASTRONAUT), str(corrupt), "--json"])
    assert result.exit_code == 3, result.output
    return json.loads(result.stdout)


def test_json_is_an_array_for_one_input_and_carries_the_identity_keys():
    result = CliRunner().invoke(app, ["predict", str(ASTRONAUT), "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert isinstance(records, list) and len(records) == 1
    record = records[0]
    assert (record["schema_version"], record["model"], record["model_sha256"]) == (SCHEMA_VERSION, "default",
                                                                                   DEFAULT_MODEL_SHA256)
    from importlib.metadata import version

    assert record["dfd_version"] == version("deepfake-cli")
    assert (record["verdict"], record["probability"]) == (ASTRONAUT_VERDICT,
                                                          pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-9))
    assert record["error"] is None and record["report"] is None
    band = json.loads((PACKAGED_MODEL / "config.json").read_text())["uncertain"]
    assert record["uncertain_band"] == pytest.approx(band) and band[1] == record["threshold"]
    overridden = json.loads(CliRunner().invoke(app, ["predict", str(ASTRONAUT), "--json", "--threshold", "0.5"]).stdout)
    assert overridden[0]["uncertain_band"] == [] and overridden[0]["verdict"] in ("real", "fake")


def test_the_model_digest_is_the_one_sha256sum_gives():
    import hashlib

    files = sorted(PACKAGED_MODEL.glob("*.weights.h5"))
    lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in files)
    assert [p.name for p in files] == DEFAULT_MODEL_WEIGHTS
    assert hashlib.sha256(lines.encode()).hexdigest() == DEFAULT_MODEL_SHA256


def test_an_error_record_has_null_for_what_is_missing(two_results):
    good, bad = two_results
    assert good["verdict"] == ASTRONAUT_VERDICT and bad["exit_code"] == 3 and "corrupt.mp4" in bad["error"]
    assert (bad["verdict"], bad["probability"], bad["cnn_probability"]) == (None, None, None)
    for record in two_results:
        values = list(all_strings_and_floats(record))
        assert "" not in values and not any(isinstance(v, float) and v != v for v in values)
        assert record["model_sha256"] == DEFAULT_MODEL_SHA256


def test_docs_output_lists_every_key_real_output_has_and_no_other(two_results):
    keys = documented("## Keys of a result object")
    for record in two_results:
        assert sorted(record) == sorted(keys), "docs/output.md and the result object differ"
    track_keys = documented("### track_reports")
    assert sorted(two_results[0]["track_reports"][0]) == sorted(track_keys)
    assert two_results[0]["windows"] and sorted(two_results[0]["windows"][0]) == sorted(documented("### windows"))
    columns = re.search(r"Columns, in\s+this order: (.*?) — ", DOC.read_text(), re.S).group(1)
    assert [c.strip(" `\n") for c in columns.replace("\n", " ").split(",")] == CSV_COLUMNS
    assert set(CSV_COLUMNS) <= set(keys)


def test_jsonl_on_stdout_gives_one_record_per_line(corrupt):
    result = CliRunner().invoke(app, ["predict", str(ASTRONAUT), str(corrupt), "--jsonl", "-"])
    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert [json.loads(line)["path"] for line in lines] == [str(ASTRONAUT), str(corrupt)]
    assert all(json.loads(line)["schema_version"] == SCHEMA_VERSION for line in lines)
    both = CliRunner().invoke(app, ["predict", str(ASTRONAUT), "--jsonl", "-", "--json"])
    assert both.exit_code == 2 and "not both" in both.output


def test_the_csv_rounds_to_6_decimals_keeps_warnings_and_the_identity_columns(tmp_path, corrupt):
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["predict", str(ASTRONAUT), str(corrupt), "--csv", str(out), "--quiet"])
    assert result.exit_code == 3
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS
    assert rows[0]["probability"] == str(round(ASTRONAUT_PROBABILITY, 6))
    assert rows[0]["threshold"] == str(round(ASTRONAUT_THRESHOLD, 6))
    assert (rows[0]["model_sha256"], rows[0]["schema_version"]) == (DEFAULT_MODEL_SHA256, str(SCHEMA_VERSION))
    assert rows[1]["probability"] == "" and rows[1]["verdict"] == "" and rows[1]["exit_code"] == "3"


def test_resuming_an_older_csv_keeps_its_columns(tmp_path):
    from deepfake_cli.serve.result_files import ResultWriter

    out = tmp_path / "old.csv"
    out.write_text("path,verdict,probability\r\na.mp4,real,0.1\r\n")
    with ResultWriter(csv_path=out, append=True) as writer:
        writer.write({"path": "b.mp4", "verdict": "fake", "probability": 0.123456789, "model": "default"})
    assert out.read_text().splitlines() == ["path,verdict,probability", "a.mp4,real,0.1", "b.mp4,fake,0.123457"]


# ---------------------------------------------------------------------- the Python API
@pytest.fixture(scope="module")
def detector():
    from deepfake_cli import Detector

    return Detector()


def astronaut_frames() -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(ASTRONAUT)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_the_documented_one_liner_works_in_a_fresh_process_without_a_framework():
    script = ("import sys; from deepfake_cli import Detector; print(Detector().predict('examples/astronaut.mp4')); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed, frameworks = proc.stdout.strip().splitlines()
    record = ast.literal_eval(printed)
    assert (record["verdict"], record["probability"]) == (ASTRONAUT_VERDICT,
                                                          pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-9))
    assert record["schema_version"] == SCHEMA_VERSION and frameworks == "[]"


def test_a_str_a_path_and_the_frames_in_memory_score_the_same(detector):
    by_str = detector.predict(str(ASTRONAUT))
    by_path = detector.predict(ASTRONAUT)
    frames = astronaut_frames()
    by_frames = detector.predict(frames, fps=25)
    by_array = detector.predict(np.stack(frames))
    assert by_str["probability"] == pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-9)
    for other in (by_path, by_frames, by_array):
        assert other["probability"] == pytest.approx(by_str["probability"], abs=1e-6)
        assert other["frame_scores"] == pytest.approx(by_str["frame_scores"], abs=1e-6)
    assert by_frames["path"] == "<frames>" and by_frames["frames"] == by_str["frames"]
    one = detector.predict(frames[:1])
    assert one["frames"] == 1 and any("single image" in w for w in one["warnings"])


def test_an_input_without_a_verdict_raises_with_its_record(detector, corrupt):
    from deepfake_cli import DfdError, InputError

    with pytest.raises(InputError) as caught:
        detector.predict(corrupt)
    assert caught.value.exit_code == 3 and caught.value.record["verdict"] is None
    assert str(corrupt) in caught.value.record["error"]
    with pytest.raises(DfdError, match="H x W x 3 uint8"):
        detector.predict([np.zeros((8, 8), np.uint8)])
    with pytest.raises(DfdError, match="share one size"):
        detector.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])
    with pytest.raises(DfdError, match="no frames"):
        detector.predict([])
