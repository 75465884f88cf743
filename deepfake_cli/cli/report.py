"""`dfd evaluate`: the measured figures of a model on a store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from deepfake_cli.cli.common import (JsonOption, ModelsDirOption, QuietOption, StoreOption, consoles, handled,
                                     import_keras_quietly, open_store, print_json, print_table_that_fits,
                                     render_summary, warn_of_weak_validation)


@handled
def evaluate(
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name or directory."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write metrics.json, scores.csv and plots here."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """ACC, AUC, EER, AP and log-loss at frame and video level, per split, dataset, method and compression."""
    import_keras_quietly("dfd evaluate")
    from deepfake_cli.report.evaluate import evaluate as run_evaluate
    from deepfake_cli.report.tables import metrics_table, write_report
    from deepfake_cli.serve.model_choice import locate_model

    out, _ = consoles(quiet)
    path = locate_model(model, models_dir)
    with open_store(store, write=False) as opened:
        evaluation = run_evaluate(opened, path)
    warn_of_weak_validation(path)
    if evaluation.results.get("note"):  # what the figures are not: shown under --quiet too
        Console(stderr=True).print(f"[yellow]note:[/] {escape(evaluation.results['note'])}", highlight=False,
                                   soft_wrap=True)
    written = write_report(out_dir, evaluation.results, evaluation.rows) if out_dir else []
    if as_json:
        print_json({"results": evaluation.results, "files": [str(p) for p in written]})
        return
    if not quiet:
        print_table_that_fits(out, metrics_table("overall (by split / level / model)", evaluation.results["overall"]))
        for by in ("dataset", "method", "compression"):
            if evaluation.results.get(by):
                print_table_that_fits(out, metrics_table(f"by {by} ({evaluation.results['breakdown_rows']})",
                                                         evaluation.results[by]))
        for split, band in evaluation.results.get("uncertain", {}).items():
            per = ", ".join(f"{d}: {r['uncertain']:.0%} uncertain" + (
                f", real called fake {r['real_called_fake']:.0%}" if r["real_called_fake"] is not None else "")
                for d, r in band["per_dataset"].items())
            accuracy = "-" if band["accuracy_outside"] is None else f"{band['accuracy_outside']:.1%}"
            out.print(f"{split}: {band['uncertain']:.0%} of videos uncertain (P in [{band['band'][0]:.3f}, "
                      f"{band['band'][1]:.3f})), accuracy outside {accuracy}; {per}", highlight=False)
        for path in written:
            out.print(f"wrote {path}")


@handled
def calibrate(
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name or directory (rewritten in place)."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Re-fit a bundle's temperature, threshold (no dataset's real videos over 10 % called fake) and
    uncertain band on the store's videos of its validation split, scored as predict scores them."""
    import_keras_quietly("dfd calibrate")
    from deepfake_cli.serve.model_choice import locate_model
    from deepfake_cli.train.calibrate import calibrate_bundle

    out, _ = consoles(quiet)
    path = locate_model(model, models_dir, packaged=False)
    with open_store(store, write=False) as opened:
        fitted = calibrate_bundle(opened, path)
    render_summary(out, "calibrate", fitted, quiet, as_json)
    if not (quiet or as_json):
        lo, hi = fitted["uncertain"]
        per = ", ".join(f"{d} {rate:.0%}" for d, rate in fitted["val_real_fpr"].items())
        out.print(f"uncertain band [{lo:.3f}, {hi:.3f}): {fitted['val_uncertain']:.0%} of val videos; "
                  f"real videos called fake: {per}", highlight=False)
