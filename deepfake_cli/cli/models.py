"""`dfd models`: the models predict can use (the default, and each bundle or ensemble under
--models-dir), with what each was trained on, under which terms, and its validation AUC."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from deepfake_cli.cli.common import JsonOption, ModelsDirOption, QuietOption, consoles, handled, print_json


def model_rows(models_dir: Path) -> list[dict]:
    """One row per model: the default first (the one `dfd predict` uses without --model), then every
    bundle and ensemble under ``models_dir`` by name; a damaged one says why instead."""
    from deepfake_cli.nets.bundle import CONFIG_FILE, ENSEMBLE_FILE, read_config
    from deepfake_cli.nets.card import card_of, validation_warnings
    from deepfake_cli.scoring.ensemble import is_ensemble, load_ensemble
    from deepfake_cli.serve.model_choice import locate_model

    default = locate_model(None, models_dir)
    found = sorted({p.parent for f in (CONFIG_FILE, ENSEMBLE_FILE) for p in Path(models_dir).glob(f"*/{f}")})
    rows = []
    for path in [default] + [p for p in found if p.resolve() != default.resolve()]:
        row = {"name": "default" if path == default else path.name, "path": str(path), "default": path == default}
        try:
            if is_ensemble(path):
                ensemble = load_ensemble(path)
                members = [m.path for m in ensemble.members]
                cards = [card_of(m) for m in members]
                own = ensemble.config.metrics.get("val", {}).get(f"ensemble ({ensemble.config.method})") or {}
                validation = {"level": f"video, ensemble ({ensemble.config.method}), calibrated", "auc": own["auc"],
                              "real": own.get("n_real"), "fake": own.get("n_fake")} if own.get("auc") is not None else {}
                row |= {"backbone": "ensemble of " + ", ".join(m.name for m in members),
                        "training_data": sorted({d for c in cards for d in c["training_data"]}),
                        "terms": list(dict.fromkeys(t for c in cards for t in c["terms"] + [c["landmark_model"]])),
                        "validation_auc": validation.get("auc"), "validation": validation,
                        "warnings": validation_warnings({"validation": validation})}
            else:
                card = card_of(path)
                row |= {"backbone": read_config(path).backbone, "training_data": card["training_data"],
                        "terms": card["terms"] + [card["landmark_model"]],
                        "validation_auc": (card["validation"] or {}).get("auc"),
                        "validation": card["validation"], "warnings": validation_warnings(card)}
        except Exception as exc:  # noqa: BLE001 (one damaged bundle must not hide the others)
            row |= {"error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
    return rows


@handled
def models(
    models_dir: Path = ModelsDirOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """List the models (the default first), with their training data, its terms and validation AUC.

    The default is the model `dfd predict` uses without --model; the others are the bundles and
    ensembles under --models-dir. Each bundle's MODEL_CARD.md has the rest of its card.
    """
    out, _ = consoles(quiet)
    rows = model_rows(models_dir)
    if as_json:
        print_json(rows)
        return
    if quiet:  # no table: the names, one a line
        for row in rows:
            out.print(escape(row["name"]), highlight=False)
        return
    table = Table("model", "backbone", "trained on", "val AUC", title="models (the first is the default)")
    for row in rows:
        if "error" in row:
            table.add_row(escape(row["name"]), f"[red]{escape(row['error'])}[/]", "", "")
            continue
        auc = "-" if row["validation_auc"] is None else f"{row['validation_auc']:.3f}"
        if row["warnings"]:
            auc += " [yellow](!)[/]"
        table.add_row(escape(row["name"]), escape(row["backbone"]), escape(", ".join(row["training_data"]) or "-"), auc)
    out.print(table)
    for row in rows:
        if "error" in row:
            continue
        out.print(f"[bold]{escape(row['name'])}[/] ({escape(row['path'])}), terms:", highlight=False, soft_wrap=True)
        for term in row["terms"]:
            out.print(f"  - {escape(term)}", highlight=False, soft_wrap=True)
        for warning in row["warnings"]:
            out.print(f"  [yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
