"""Rendering evaluation results: a rich table, metrics.json, scores.csv and PNG plots.

Plots are drawn on ``matplotlib.figure.Figure`` objects directly (no pyplot), so no
global backend or figure state is touched; saving a Figure without a canvas renders
through Agg.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from rich.table import Table
from sklearn.metrics import roc_auc_score, roc_curve

from deepfake_cli.files import to_jsonable
from deepfake_cli.scoring.metrics import COUNT_NAMES, METRIC_NAMES, label_to_int

MISSING = "–"  # en dash, shown for NaN / missing metrics
METRICS_JSON = "metrics.json"
SCORES_CSV = "scores.csv"
CSV_COLUMNS = (
    "video_id",
    "split",
    "level",
    "model",
    "label",
    "score",
    "dataset",
    "method",
    "compression",
)
PLOT_KEYS = ("split", "level", "model")
HIST_BINS = 20
PLOT_DPI = 100


# --------------------------------------------------------------------------- table


def format_metric(name: str, value) -> str:
    """Counts as ints, other numbers with 4 decimals, NaN/None as an en dash."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return MISSING
    if name in COUNT_NAMES:
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):.4f}"
    return str(value)


def _metric_columns(results: Mapping[str, Mapping]) -> list[str]:
    """METRIC_NAMES that occur in any row, in that order, then any other keys."""
    present: dict[str, None] = {}
    for metrics in results.values():
        present.update(dict.fromkeys(metrics))
    known = [m for m in METRIC_NAMES if m in present]
    return known + [m for m in present if m not in METRIC_NAMES]


def metrics_table(title: str, results: dict[str, dict[str, float]]) -> Table:
    """A rich Table: one row per result name (e.g. "train / video / cnn+lstm"), one column
    per metric. NaN shows as "–", counts as ints, everything else with 4 decimals."""
    columns = _metric_columns(results)
    table = Table(title=title)
    table.add_column("", style="bold", no_wrap=True)
    for column in columns:
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(format_metric(c, metrics.get(c)) for c in columns))
    return table


# --------------------------------------------------------------------------- JSON / CSV


def write_metrics_json(path: Path, results: Mapping) -> Path:
    text = json.dumps(to_jsonable(results), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _csv_columns(rows: Sequence[Mapping]) -> list[str]:
    """The usual columns that occur (all of them when there are no rows), then the rest."""
    present: dict[str, None] = {}
    for row in rows:
        present.update(dict.fromkeys(row))
    if not present:
        return list(CSV_COLUMNS)
    return [c for c in CSV_COLUMNS if c in present] + [c for c in present if c not in CSV_COLUMNS]


def write_scores_csv(path: Path, rows: Sequence[Mapping]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_csv_columns(rows), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------- plots


def _safe_name(text: str) -> str:
    """A file-name-safe version of one name part ("" becomes "all")."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "all"


def _plot_groups(rows: Sequence[Mapping]) -> dict[tuple[str, ...], list[Mapping]]:
    """Rows with a finite score and a label, grouped by (split, level, model)."""
    groups: dict[tuple[str, ...], list[Mapping]] = {}
    for row in rows:
        score = row.get("score")
        if score is None or score == "" or not math.isfinite(float(score)):
            continue
        key = tuple(str(row.get(k) or "") for k in PLOT_KEYS)
        groups.setdefault(key, []).append(row)
    return groups


def _labels_scores(rows: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([label_to_int(r["label"]) for r in rows], dtype=np.int64)
    scores = np.array([float(r["score"]) for r in rows], dtype=np.float64)
    return labels, scores


def _roc_curves(rows: Sequence[Mapping]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curves to draw: "all", plus one per manipulation method (its fakes vs. all reals)
    when the fakes come from more than one method."""
    curves = {"all": _labels_scores(rows)}
    fakes = [r for r in rows if label_to_int(r["label"]) == 1]
    reals = [r for r in rows if label_to_int(r["label"]) == 0]
    methods = sorted({str(r.get("method") or "") for r in fakes} - {""})
    if len(methods) > 1:
        for method in methods:
            group = [r for r in fakes if str(r.get("method") or "") == method] + reals
            curves[method] = _labels_scores(group)
    return curves


def _title(key: tuple[str, ...]) -> str:
    return " / ".join(part or "all" for part in key)


def plot_roc(path: Path, key: tuple[str, ...], rows: Sequence[Mapping]) -> Path:
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.subplots()
    for name, (y, s) in _roc_curves(rows).items():
        fpr, tpr, _ = roc_curve(y, s)
        label = f"{name} (AUC = {roc_auc_score(y, s):.4f}, n = {y.size})"
        ax.plot(fpr, tpr, lw=2 if name == "all" else 1.2, label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", lw=1, label="chance")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.02),
        title=f"ROC: {_title(key)}",
        xlabel="False positive rate (reals called fake)",
        ylabel="True positive rate (fakes caught)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path, dpi=PLOT_DPI)
    return path


def plot_score_histogram(path: Path, key: tuple[str, ...], rows: Sequence[Mapping]) -> Path:
    y, s = _labels_scores(rows)
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(0.0, 1.0, HIST_BINS + 1)
    for label, name, color in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        chosen = s[y == label]
        if chosen.size:
            ax.hist(chosen, bins=bins, alpha=0.6, color=color, label=f"{name} (n = {chosen.size})")
    ax.set(xlim=(0, 1), title=f"Scores: {_title(key)}", xlabel="score = P(fake)", ylabel="count")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=PLOT_DPI)
    return path


def write_plots(out_dir: Path, rows: Sequence[Mapping]) -> list[Path]:
    """roc_<split>_<level>_<model>.png (only when both classes are present) and
    scores_<split>_<level>_<model>.png for every (split, level, model) among the rows."""
    written = []
    for key, group in sorted(_plot_groups(rows).items()):
        stem = "_".join(_safe_name(part) for part in key)
        labels = {label_to_int(r["label"]) for r in group}
        if labels == {0, 1}:
            written.append(plot_roc(out_dir / f"roc_{stem}.png", key, group))
        written.append(plot_score_histogram(out_dir / f"scores_{stem}.png", key, group))
    return written


# --------------------------------------------------------------------------- report


def write_report(out_dir: Path, results: dict, rows: list[dict]) -> list[Path]:
    """Write metrics.json (NaN -> null), scores.csv and the PNG plots into ``out_dir``
    (created if needed). ``rows`` are score rows with keys such as video_id, split, level,
    model, label (0/1 or real/fake), score, dataset, method, compression. A group with a
    single class gets no ROC plot (it is undefined) but still gets its score histogram.
    Returns the paths written, JSON and CSV first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    return [
        write_metrics_json(out_dir / METRICS_JSON, results),
        write_scores_csv(out_dir / SCORES_CSV, rows),
        *write_plots(out_dir, rows),
    ]
