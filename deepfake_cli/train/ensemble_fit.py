"""Fitting an ensemble of bundles: the combination rule's parameters and its calibration, fitted on
the members' common validation videos, written as ``ensemble.json`` (the rule itself, which
`predict` and `evaluate` apply, is deepfake_cli.scoring.ensemble)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from deepfake_cli.data.splits import group_key
from deepfake_cli.data.store import Store
from deepfake_cli.errors import OptionsError
from deepfake_cli.files import atomic_write_text
from deepfake_cli.nets.bundle import CONFIG_FILE, ENSEMBLE_FILE, Bundle, dfd_version, load_bundle, now_iso
from deepfake_cli.scoring.ensemble import (METHODS, Ensemble, EnsembleConfig, is_ensemble, member_hashes,
                                           member_probabilities)
from deepfake_cli.scoring.metrics import binary_metrics, logit, safe_auc
from deepfake_cli.train import TrainingDataError
from deepfake_cli.train.calibrate import fit_calibration

STACK_C = 1.0  # inverse L2 strength of the stacking / blending logistic regression


def fit_params(method: str, labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """The rule's parameters fitted on validation labels and member probabilities (n, m)."""
    m = probabilities.shape[1]
    if method in ("average", "vote"):
        return {}
    if method == "weighted":
        aucs = [safe_auc(labels, probabilities[:, i]) for i in range(m)]
        gains = np.array([max(0.0, a - 0.5) if np.isfinite(a) else 0.0 for a in aucs])
        weights = gains / gains.sum() if gains.sum() > 0 else np.full(m, 1.0 / m)
        return {"weights": [float(w) for w in weights], "val_auc": [float(a) for a in aucs],
                "rule": "weight_i = (val AUC_i - 0.5)+ / sum; all at chance: equal weights"}
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=STACK_C).fit(logit(probabilities), labels)
    return {"coef": [float(c) for c in model.coef_[0]], "intercept": float(model.intercept_[0]),
            "features": "logit of each member's calibrated P(fake)", "C": STACK_C}


def validation_ids(members: list[Bundle]) -> list[str]:
    """Videos every member validated on and none trained on (so no member has seen them)."""
    trained = set().union(*(set(b.config.split_ids.get("train", [])) for b in members))
    common = set(members[0].config.split_ids.get("val", []))
    for bundle in members[1:]:
        common &= set(bundle.config.split_ids.get("val", []))
    return sorted(common - trained)


def blend_halves(store: Store, video_ids: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Validation split in two by identity group (a person is never on both sides), stratified:
    groups ordered by their majority label, then by a seeded hash, go to the halves in turn, so
    each half holds about half the real and half the fake groups."""
    groups: dict[str, list[str]] = {}
    for vid in video_ids:
        groups.setdefault(group_key(store.entry(vid)), []).append(vid)

    def order(key: str) -> tuple[bool, str]:
        fakes = sum(store.entry(v).label == "fake" for v in groups[key])
        return 2 * fakes > len(groups[key]), hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

    halves: tuple[list[str], list[str]] = ([], [])
    for i, key in enumerate(sorted(groups, key=order)):
        halves[i % 2].extend(groups[key])
    return sorted(halves[0]), sorted(halves[1])


def _both_labels(labels: np.ndarray, what: str) -> None:
    if len(set(labels.tolist())) < 2:
        raise TrainingDataError(f"{what} needs real and fake videos that every member can score; it has "
                                f"{len(labels)} video(s), labelled {sorted({'fake' if v else 'real' for v in labels})}")


def relative_member_path(ensemble_dir: Path, member_dir: Path) -> str:
    return os.path.relpath(Path(member_dir).resolve(), Path(ensemble_dir).resolve())


def build_ensemble(store: Store, ensemble_dir: Path, member_dirs: list[Path], method: str, seed: int = 0,
                   command: str = "") -> dict:
    """Fit an ensemble of ``member_dirs`` on their common validation videos in ``store``, calibrate it,
    and write ``ensemble_dir/ensemble.json``; returns its validation table (members and ensemble)."""
    if method not in METHODS:
        raise OptionsError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if len(member_dirs) < 2:
        raise OptionsError("an ensemble needs at least two members")
    ensemble_dir = Path(ensemble_dir)
    if (ensemble_dir / CONFIG_FILE).is_file():
        raise OptionsError(f"{ensemble_dir} holds a single bundle: choose another name for the ensemble")
    member_dirs = [Path(d) for d in member_dirs]
    for d in member_dirs:
        if is_ensemble(d):
            raise OptionsError(f"{d} is an ensemble: members must be single bundles")
    names = [d.name for d in member_dirs]
    if len(set(names)) < len(names):  # members are named by directory in every table and in predict's output
        twice = sorted({n for n in names if names.count(n) > 1})
        raise OptionsError(f"two members share a directory name ({', '.join(twice)}): give each its own name")
    members = [load_bundle(d) for d in member_dirs]
    ids, probabilities = member_probabilities(store, members, validation_ids(members))
    labels = np.array([int(store.entry(v).label == "fake") for v in ids], int)
    _both_labels(labels, "fitting the ensemble")
    split_ids = {"val": ids}
    fit_rows = calibrate_rows = np.arange(len(ids))
    if method == "blend":
        fit_ids, calibrate_ids = blend_halves(store, ids, seed)
        fit_rows = np.array([ids.index(v) for v in fit_ids], int)
        calibrate_rows = np.array([ids.index(v) for v in calibrate_ids], int)
        _both_labels(labels[fit_rows], "the blend's fitting half")
        _both_labels(labels[calibrate_rows], "the blend's held-out half")
        split_ids |= {"val_fit": fit_ids, "val_calibrate": calibrate_ids}
    config = EnsembleConfig(
        name=ensemble_dir.name, method=method, params=fit_params(method, labels[fit_rows], probabilities[fit_rows]),
        split_ids=split_ids, members=[{"name": d.name, "path": relative_member_path(ensemble_dir, d),
                                       "sha256": member_hashes(d)} for d in member_dirs],
        commands=[{"step": "ensemble", "command": command, "at": now_iso()}], dfd_version=dfd_version(),
        created=now_iso())
    ensemble = Ensemble(path=ensemble_dir, config=config, members=members)
    datasets = np.array([store.entry(v).dataset or "" for v in ids], str)  # the threshold caps each one's real FPR
    fitted = fit_calibration(labels[calibrate_rows], ensemble.raw_scores(probabilities)[calibrate_rows],
                             datasets[calibrate_rows])
    config.temperature, config.threshold = fitted["temperature"], fitted["threshold"]
    config.uncertain = fitted["uncertain"]
    config.thresholds_at_fpr = fitted["thresholds_at_fpr"]
    calibrated = np.array([ensemble.probability(row) for row in probabilities])
    table = validation_table(labels, probabilities, calibrated, members, config, fit_rows, calibrate_rows)
    config.metrics = {"val": table}
    ensemble_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ensemble_dir / ENSEMBLE_FILE, config.to_json())
    return {"ensemble": str(ensemble_dir), "method": method, "val_videos": len(ids),
            "temperature": config.temperature, "threshold": config.threshold, "uncertain": config.uncertain,
            "params": config.params, "val": table}


def validation_table(labels, probabilities, calibrated, members, config, fit_rows, calibrate_rows) -> dict:
    """{row name: metrics}: each member at its own threshold, and the ensemble at its threshold;
    a blend also on each half (the fitting half is in-sample, the held-out half is not)."""
    table = {}
    for i, bundle in enumerate(members):
        table[bundle.path.name] = binary_metrics(labels, probabilities[:, i], float(bundle.config.threshold))
    name = f"ensemble ({config.method})"
    table[name] = binary_metrics(labels, calibrated, config.threshold)
    if config.method == "blend":
        table[f"{name}, fitting half"] = binary_metrics(labels[fit_rows], calibrated[fit_rows], config.threshold)
        table[f"{name}, held-out half"] = binary_metrics(labels[calibrate_rows], calibrated[calibrate_rows],
                                                         config.threshold)
    return table
