"""Every output path checked before scoring, and evidence that cannot be written fails alone
(issue 27, findings 3 and 9).

* `--csv`, `--jsonl`, `--report`, `--heatmap` and `--annotate` into a missing folder, onto a
  folder or beneath a file, with a name too long (once `.tmp<pid>` is appended), on a read-only
  or full file system: one line naming the option and the path, exit 2, before the model is
  loaded or any clip decoded (was: a traceback, or exit 1 after the model loaded).
* An input whose legal 255-byte name is too long once `.html.tmp<pid>` is appended, and a report
  folder that refuses a page mid-batch: that input keeps its verdict (printed, in the CSV) and
  gets its own error line; the batch goes on (was: no verdict and "a bug in dfd").
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.errors import EXIT_USAGE
from deepfake_cli.serve.output_paths import OutputPathError, check_output_paths
from tests.helpers import ASTRONAUT, ASTRONAUT_PROBABILITY, ASTRONAUT_VERDICT

LONG = "x" * 251 + ".mp4"  # 255 bytes: the longest name Linux file systems take


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")


@pytest.fixture
def read_only(tmp_path):
    """A read-only tmpfs (as root, a chmod would not stop a write), unmounted afterwards."""
    mount = tmp_path / "ro"
    mount_tmpfs(mount, "ro,size=1m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


@pytest.fixture
def full(tmp_path):
    """A 1 MiB tmpfs filled up, unmounted afterwards."""
    mount = tmp_path / "full"
    mount_tmpfs(mount, "size=1m")
    try:
        with open(mount / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def refused(match: str, **paths) -> None:
    with pytest.raises(OutputPathError, match=match) as caught:
        check_output_paths(**paths)
    assert "\n" not in str(caught.value) and caught.value.exit_code == EXIT_USAGE


def test_bad_output_paths_are_named(tmp_path):
    (tmp_path / "a_file").write_text("x")
    refused(r"^--csv .*/missing/out\.csv: its folder .*/missing does not exist$", csv=tmp_path / "missing" / "out.csv")
    refused(r"^--jsonl .* is a folder; give a file name$", jsonl=tmp_path)
    refused(r"^--report .*/a_file is a file, not a folder$", report=tmp_path / "a_file", several=True)
    refused(r"^--heatmap .*/a_file/maps: .*/a_file is a file, not a folder$", heatmap=tmp_path / "a_file" / "maps")
    refused(r"^--annotate .*: the name 'yyy.* is 256 bytes, over the 255-byte limit",
            annotate=tmp_path / ("y" * 252 + ".mp4"))
    # 253 bytes fit, but not once an atomic write appends .tmp<pid>
    refused(r"^--report .*: the name .* is 253 bytes, over the 255-byte limit of file names here \(with the 11 bytes",
            report=tmp_path / ("r" * 248 + ".html"))
    refused(r"^--report .*: the name .* is 256 bytes", report=tmp_path / ("d" * 256) / "page.html", several=False)


def test_good_output_paths_pass_and_the_check_writes_nothing(tmp_path):
    existing = tmp_path / "out.csv"
    existing.write_text("path,verdict\n")
    check_output_paths(csv=existing, jsonl=tmp_path / "new.jsonl", report=tmp_path / "new" / "pages", several=True,
                       heatmap=tmp_path / "maps", annotate=tmp_path / "deeper" / "still" / "a.mp4")
    check_output_paths(report=tmp_path / "one" / "page.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"] and existing.read_text() == "path,verdict\n"


def test_a_read_only_or_full_file_system_is_refused(read_only, full):
    refused(rf"^--csv {read_only}/out\.csv: cannot write in {read_only} \(read-only file system\)$",
            csv=read_only / "out.csv")
    refused(rf"^--report {read_only}/pages/x: cannot write in {read_only} \(read-only file system\)$",
            report=read_only / "pages" / "x", several=True)
    refused(rf"^--jsonl {full}/out\.jsonl: cannot write in {full} \(disk full\)$", jsonl=full / "out.jsonl")
    refused(rf"^--heatmap {full}/maps: cannot write in {full} \(disk full\)$", heatmap=full / "maps")
    assert sorted(p.name for p in full.iterdir()) == ["filler"]  # the probe is gone


def test_an_immutable_result_file_is_refused(tmp_path):
    """`chattr +i`: the file cannot be appended to (--skip-done) or replaced, as root too."""
    out = tmp_path / "out.csv"
    out.write_text("path,verdict\n")
    try:
        flagged = subprocess.run(["chattr", "+i", str(out)], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        flagged = False
    if not flagged:
        pytest.skip("chattr +i is not available here")
    try:
        refused(rf"^--csv {out} cannot be written \(Operation not permitted\)$", csv=out)
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True, timeout=30)


@pytest.mark.parametrize("option", ["--csv", "--jsonl", "--report", "--heatmap", "--annotate"])
def test_predict_refuses_a_bad_output_path_before_loading_the_model(read_only, tmp_path, monkeypatch, option):
    from deepfake_cli.serve.batch import BatchPrediction

    def never(self):
        raise AssertionError("the model was loaded before the output paths were checked")

    monkeypatch.setattr(BatchPrediction, "load", never)
    target = read_only / ("out" if option in ("--report", "--heatmap") else "out.file")
    result = CliRunner().invoke(app, ["predict", str(ASTRONAUT), str(ASTRONAUT), option, str(target)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stdout == ""
    assert result.stderr == f"error: {option} {target}: cannot write in {read_only} (read-only file system)\n"


def test_evidence_that_cannot_be_written_is_that_inputs_error_and_keeps_its_verdict(tmp_path, monkeypatch):
    """A 255-byte input name (its page's name, + `.html.tmp<pid>`, is too long) and a page the
    report folder refuses (simulated: as root, no permission refuses a write) each get an error
    line beside their verdict; every input is scored and in the CSV."""
    import deepfake_cli.serve.predict as serving

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mp4", LONG, "z.mp4"):
        shutil.copy(ASTRONAUT, folder / name)
    real_write = serving.write_clip_report

    def refuse_z(out, *args, **kwargs):
        if Path(out).name == "z.mp4.html":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out))
        return real_write(out, *args, **kwargs)

    monkeypatch.setattr(serving, "write_clip_report", refuse_z)
    pages, out = tmp_path / "pages", tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["predict", str(folder), "--report", str(pages), "--csv", str(out)])
    assert result.exit_code == 1, result.output
    long, z = folder / LONG, folder / "z.mp4"
    printed = f"{ASTRONAUT_VERDICT} (P(fake) = {ASTRONAUT_PROBABILITY:.3f}"
    assert result.stdout.count(printed) == 3  # every verdict printed
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {long}: verdict reached, but its evidence could not be written {pages / LONG}.html.tmp{os.getpid()}: "
        "File name too long",
        f"error: {z}: verdict reached, but its evidence could not be written {pages / 'z.mp4.html'}: Permission denied"]
    assert "Traceback" not in result.output and "bug in dfd" not in result.output
    with open(out, newline="") as fh:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    assert sorted(rows) == sorted(["a.mp4", LONG, "z.mp4"])
    for name, row in rows.items():
        assert row["verdict"] == ASTRONAUT_VERDICT
        assert float(row["probability"]) == pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6)
        assert (row["error"] == "") == (name == "a.mp4") and row["exit_code"] == ("0" if name == "a.mp4" else "1")
    assert sorted(p.name for p in pages.iterdir()) == ["a.mp4.html"]  # no temporary file left behind
