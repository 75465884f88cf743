"""`dfd merge-results OUT PART...`: join the --csv or --jsonl files of `predict --shard K/N` runs
(or of any batches) into the one file a single run would have written.

Rows come out sorted by input path (as `predict` orders a folder's files), whatever order the
parts are given in. An input found in two parts is written once when both rows agree (the
``seconds`` timings aside), and refused (:class:`ResultFileError`) when they disagree, as are
parts made by different models, CSV parts with different columns, and a part whose last row was
cut mid-line (rerun that shard with ``--skip-done PART``). OUT keeps the parts' schema: CSV parts
give a CSV with their header, JSON Lines parts JSON Lines; JSON Lines parts may also be written
as CSV (OUT ending in ``.csv``), CSV parts not as JSON Lines (the CSV lacks the arrays).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from deepfake_cli.files import atomic_write_text
from deepfake_cli.serve.result_files import ResultFileError, read_results
from deepfake_cli.serve.schema import CSV_COLUMNS, csv_row

UNSTABLE_KEYS = ("seconds",)  # timings: two runs of one input differ there and still agree


@dataclass
class MergeResultsSummary:
    out: str
    parts: int
    rows: int  # inputs written
    duplicates: int  # inputs found in more than one part, with agreeing rows

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in UNSTABLE_KEYS}


def _read_part(path: Path) -> tuple[list[dict], str | None]:
    """(rows, the CSV header line, or None for JSON Lines or an empty file) of one part."""
    if not Path(path).is_file():
        raise ResultFileError(f"no result file {path}")
    rows, header, torn = read_results(path)
    if torn:
        raise ResultFileError(f"{path}: its last row was cut mid-line: rerun that shard with --skip-done {path}")
    if header:
        return rows, header
    return rows, None


def merge_results(out: Path, parts: list[Path]) -> MergeResultsSummary:
    """Write the rows of ``parts`` into ``out`` (atomically), sorted by input path, one per input."""
    if not parts:
        raise ResultFileError("give the result files to merge: dfd merge-results OUT PART...")
    out = Path(out)
    if any(Path(p).absolute() == out.absolute() for p in parts):
        raise ResultFileError(f"{out} is one of the parts: write the merged results to a new file")
    headers: dict[str, Path] = {}
    jsonl_parts: list[Path] = []
    by_path: dict[str, tuple[dict, Path]] = {}
    duplicates = 0
    models: dict[tuple, Path] = {}
    read = [(Path(part), *_read_part(Path(part))) for part in parts]
    for part, rows, header in read:
        if header is not None:
            headers.setdefault(header, part)
        elif rows:
            jsonl_parts.append(part)
    if len(headers) > 1:
        first, second = list(headers.values())[:2]
        raise ResultFileError(f"{first} and {second} have different CSV columns: merge files of one dfd version")
    if headers and jsonl_parts:
        raise ResultFileError(f"{jsonl_parts[0]} is JSON Lines and {next(iter(headers.values()))} CSV: "
                              "merge parts of one format")
    for part, rows, _ in read:
        for row in rows:
            model = (row.get("model"), row.get("model_sha256"))
            models.setdefault(model, Path(part))
            key = str(row["path"])
            if key in by_path:
                earlier, where = by_path[key]
                if _stable(earlier) != _stable(row):
                    raise ResultFileError(f"{key} has two different results, in {where} and in {part}: "
                                          "rerun it in one shard")
                duplicates += 1
                continue
            by_path[key] = (row, Path(part))
    if len(models) > 1:
        (m1, p1), (m2, p2) = list(models.items())[:2]
        raise ResultFileError(f"{p1} and {p2} were made by different models ({m1[0]} {str(m1[1])[:12]}, "
                              f"{m2[0]} {str(m2[1])[:12]}): merge the results of one model")
    rows = [by_path[k][0] for k in sorted(by_path, key=Path)]  # predict's order of a folder's files
    want_csv = out.suffix.lower() == ".csv"
    if headers:
        if not want_csv:
            raise ResultFileError(f"the parts are CSV, which lacks the arrays of JSON Lines: give OUT a .csv name, "
                                  f"not {out.name}")
        text = _csv_text(next(csv.reader([next(iter(headers))])), rows)
    elif want_csv:
        text = _csv_text(list(CSV_COLUMNS), [csv_row(r) for r in rows])
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        raise ResultFileError(f"cannot write {out}: {exc.strerror or exc}") from None
    return MergeResultsSummary(out=str(out), parts=len(parts), rows=len(rows), duplicates=duplicates)


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    """The CSV ResultWriter writes: a header, then one row per result."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
