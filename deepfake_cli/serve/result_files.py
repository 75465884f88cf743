"""`dfd predict`'s result files: CSV and JSON Lines written row by row, and read back to resume.

Each result is written whole (one write of a complete line) and flushed (and fsynced) as soon
as it is known, so a batch that is interrupted or killed keeps every verdict it reached;
`--skip-done FILE` reads such a file back and skips the inputs that already have a verdict.
A resumed run appends to the files it continues instead of overwriting them, after
:func:`compact_for_resume` has dropped (atomically) what a resumed run writes again: a last row
cut mid-line by a crash (its input is scored again) and the rows of inputs that failed (they are
tried again and get a new row), so each input has one row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from deepfake_cli.errors import DfdError
from deepfake_cli.files import atomic_write_text
from deepfake_cli.serve.schema import CSV_COLUMNS, VERDICTS, csv_row  # noqa: F401 (CSV_COLUMNS: re-exported)



class ResultFileError(DfdError):
    """A --skip-done file cannot be read, or a --csv/--jsonl file cannot be written."""


def _open(path: Path, mode: str, **kwargs) -> IO:
    try:
        return open(path, mode, **kwargs)
    except OSError as exc:
        raise ResultFileError(f"cannot write {path}: {exc.strerror or exc}") from None


class ResultWriter:
    """Appends one result (a schema record, deepfake_cli.serve.schema.result_record) at a time to a
    CSV and/or JSONL file. A CSV appended to keeps the columns its header names (one written by an
    older dfd gets no new columns, so its rows stay aligned)."""

    def __init__(self, csv_path: Path | None = None, jsonl_path: Path | None = None, append: bool = False):
        self._csv: IO | None = None
        self._jsonl: IO | None = None
        self._rows = None
        self.notes: list[str] = []  # what resuming dropped from the files (see compact_for_resume)
        if append:
            for path in (csv_path, jsonl_path):
                if path is not None and path.is_file() and path.stat().st_size > 0:
                    self.notes += compact_for_resume(path)
        if csv_path is not None:
            keep = append and csv_path.is_file() and csv_path.stat().st_size > 0
            self._csv = _open(csv_path, "a" if keep else "w", newline="")
            self._columns = _header(csv_path) if keep else list(CSV_COLUMNS)
            self._rows = csv.DictWriter(self._csv, fieldnames=self._columns, extrasaction="ignore")
            if not keep:
                self._rows.writeheader()
                self._flush(self._csv)
        if jsonl_path is not None:
            try:
                self._jsonl = _open(jsonl_path, "a" if append else "w")
            except ResultFileError:
                self.close()
                raise

    def write(self, row: dict) -> None:
        """Write one result, each file's line in one write, and flush it to disk before returning."""
        if self._rows is not None:
            line = io.StringIO()
            csv.DictWriter(line, fieldnames=self._columns, extrasaction="ignore").writerow(csv_row(row))
            self._csv.write(line.getvalue())
            self._flush(self._csv)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(row) + "\n")
            self._flush(self._jsonl)

    @staticmethod
    def _flush(fh: IO) -> None:
        fh.flush()
        os.fsync(fh.fileno())

    def close(self) -> None:
        for fh in (self._csv, self._jsonl):
            if fh is not None:
                fh.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _header(path: Path) -> list[str]:
    """The column names of an existing CSV (its first line)."""
    with _open(path, "r", newline="") as fh:
        return next(csv.reader(fh), None) or list(CSV_COLUMNS)


def read_results(path: Path) -> tuple[list[dict], str, str]:
    """(complete rows, the header line of a CSV or "", the torn last line or "") of a --csv or
    --jsonl file: a last line without its newline was cut mid-write (a crash, a kill, a full
    disk) and is not a row."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"cannot read --skip-done file {path}: {exc}") from None
    lines = text.splitlines(keepends=True)
    torn = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
    try:
        if "".join(lines).lstrip().startswith("{") or (not lines and torn.lstrip().startswith("{")):
            rows, header = [json.loads(line) for line in lines if line.strip()], ""
        else:
            header = lines[0] if lines else ""
            rows = list(csv.DictReader(lines))
    except (json.JSONDecodeError, csv.Error) as exc:
        raise ResultFileError(f"--skip-done file {path} is neither dfd's CSV nor its JSON Lines ({exc})") from None
    if rows and not all(isinstance(r, dict) and "path" in r and "verdict" in r for r in rows):
        raise ResultFileError(f"--skip-done file {path} has no path and verdict columns: "
                              "give a file written by `dfd predict --csv` or `--jsonl`")
    return rows, header, torn


def has_verdict(row: dict) -> bool:
    """Whether a previous run scored this row's input (an 'uncertain' verdict is a verdict too)."""
    return row.get("verdict") in VERDICTS


def done_paths(path: Path) -> set[str]:
    """Inputs that a previous run's --csv or --jsonl file gives a verdict for (a torn last row
    does not count: that input is scored again)."""
    if not Path(path).exists():
        return set()  # nothing done yet: the first run of a resumable batch
    rows, _, _ = read_results(path)
    return {str(r["path"]) for r in rows if has_verdict(r)}


def resume_notes(path: Path) -> list[str]:
    """What resuming onto ``path`` will drop and do again (see :func:`compact_for_resume`)."""
    if not Path(path).is_file():
        return []
    return _dropped(path, *read_results(path))


def _dropped(path: Path, rows: list[dict], header: str, torn: str) -> list[str]:
    failed = [r for r in rows if not has_verdict(r)]
    notes = [f"{path}: its last row was cut mid-line ({torn.strip()[:80]!r}): it is dropped and that input "
             "scored again"] if torn else []
    if failed:
        notes.append(f"{path}: {len(failed)} row(s) of inputs that failed are replaced by this run's")
    return notes


def compact_for_resume(path: Path) -> list[str]:
    """Rewrite a results file (atomically) with only its complete verdict rows, before a resumed
    run appends to it; returns what was dropped, as notes ([] and no rewrite when nothing)."""
    rows, header, torn = read_results(path)  # one read: what is dropped and what is kept
    notes = _dropped(path, rows, header, torn)
    if not notes:
        return []
    kept = [r for r in rows if has_verdict(r)]
    if header:
        out = io.StringIO()
        fields = next(csv.reader([header]))
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        text = out.getvalue()
    else:
        text = "".join(json.dumps(r) + "\n" for r in kept)
    try:
        atomic_write_text(Path(path), text)
    except OSError as exc:
        raise ResultFileError(f"cannot rewrite {path} to resume: {exc.strerror or exc}") from None
    return notes


class Interrupts:
    """SIGTERM and SIGINT stop work as Ctrl-C does, except inside ``with interrupts.held():``
    (a verdict being written and printed): a signal there takes effect when the block ends, so
    a verdict in the CSV is always on the terminal too."""

    def __init__(self):
        self.holding = False
        self.pending = False

    def handle(self, signum, frame):
        if self.holding:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.pending:
                self.pending = False
                raise KeyboardInterrupt


@contextmanager
def interrupt_on_sigterm() -> Iterator[Interrupts]:
    """Within the block, SIGTERM (a timeout, a scheduler) stops work as Ctrl-C does; both wait
    for the end of an :meth:`Interrupts.held` block."""
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield interrupts
        return
    previous = {s: signal.signal(s, interrupts.handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield interrupts
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
