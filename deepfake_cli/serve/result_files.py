"""`dfd predict`'s result files: CSV and JSON Lines written row by row, and read back to resume.

Each result is written and flushed (and fsynced) as soon as it is known, so a batch that is
interrupted or killed keeps every verdict it reached; `--skip-done FILE` reads such a file back
and skips the inputs that already have a verdict (inputs that failed are tried again). A
resumed run appends to the files it continues instead of overwriting them.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from deepfake_cli.errors import DfdError

CSV_COLUMNS = ["path", "verdict", "probability", "threshold", "cnn_probability", "frames", "faces", "tracks",
               "error", "exit_code"]


class ResultFileError(DfdError):
    """A --skip-done file cannot be read, or a --csv/--jsonl file cannot be written."""


def _open(path: Path, mode: str, **kwargs) -> IO:
    try:
        return open(path, mode, **kwargs)
    except OSError as exc:
        raise ResultFileError(f"cannot write {path}: {exc.strerror or exc}") from None


class ResultWriter:
    """Appends one result (a PredictResult.as_dict()) at a time to a CSV and/or JSONL file."""

    def __init__(self, csv_path: Path | None = None, jsonl_path: Path | None = None, append: bool = False):
        self._csv: IO | None = None
        self._jsonl: IO | None = None
        self._rows = None
        if csv_path is not None:
            keep = append and csv_path.is_file() and csv_path.stat().st_size > 0
            self._csv = _open(csv_path, "a" if keep else "w", newline="")
            self._rows = csv.DictWriter(self._csv, fieldnames=CSV_COLUMNS, extrasaction="ignore")
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
        """Write one result and flush it to disk before returning."""
        if self._rows is not None:
            self._rows.writerow(row)
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


def done_paths(path: Path) -> set[str]:
    """Inputs that a previous run's --csv or --jsonl file gives a verdict for."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return set()  # nothing done yet: the first run of a resumable batch
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"cannot read --skip-done file {path}: {exc}") from None
    try:
        if text.lstrip().startswith("{"):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = list(csv.DictReader(text.splitlines()))
    except (json.JSONDecodeError, csv.Error) as exc:
        raise ResultFileError(f"--skip-done file {path} is neither dfd's CSV nor its JSON Lines ({exc})") from None
    if rows and not all(isinstance(r, dict) and "path" in r and "verdict" in r for r in rows):
        raise ResultFileError(f"--skip-done file {path} has no path and verdict columns: "
                              "give a file written by `dfd predict --csv` or `--jsonl`")
    return {str(r["path"]) for r in rows if r.get("verdict") in ("real", "fake")}


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
