"""`dfd merge-results`: join the --csv or --jsonl files of `predict --shard K/N` runs into one
(deepfake_cli.serve.merge_results has the rules)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfake_cli.cli.common import JsonOption, QuietOption, consoles, handled, print_json, summary_table


@handled
def merge_results(
    out: Path = typer.Argument(..., help="The merged file (.csv for CSV, else JSON Lines); replaced if present."),
    parts: list[Path] = typer.Argument(..., help="The shards' --csv or --jsonl files."),
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Join predict's result files (the shards of --shard K/N) into one, sorted by input path."""
    from deepfake_cli.serve.merge_results import merge_results as run_merge

    out_console, _ = consoles(quiet)
    summary = run_merge(out, list(parts))
    if as_json:
        print_json(summary.as_dict())
    elif not quiet:
        out_console.print(summary_table("merge-results", {"into": summary.out, "files merged": summary.parts,
                                                           "inputs": summary.rows,
                                                           "found twice, agreeing": summary.duplicates}))
