"""Ensembles of bundles: several models' verdicts combined into one calibrated probability.

An ensemble is a directory like a bundle (``models/<name>/``), holding ``ensemble.json``: its
members (directories relative to the ensemble, with the SHA-256 of each member's config and
weight files, so a member changed after the ensemble was built is refused), the combination
rule and its fitted parameters, and a temperature and thresholds fitted on validation like a
single bundle's. Every member gives the calibrated P(fake) it would report alone (p_i, at its
own threshold t_i); the ensemble's raw score is then

* ``average``: the mean of the p_i (what bagging writes);
* ``vote``: the share of members calling the clip fake (p_i >= t_i), smoothed as
  (votes + 1/2) / (members + 1) so that no vote is ever read as certainty;
* ``weighted``: the p_i averaged with weights proportional to each member's validation
  AUC - 0.5 (a member at chance gets none; all at chance: equal weights);
* ``stack``: a logistic regression (scikit-learn) on the logits of the p_i, fitted on the
  validation videos;
* ``blend``: the same, fitted on one half of the validation identities and calibrated and
  judged on the other half (the stack's validation figure is in-sample; the blend's is not).

and the probability it reports is sigmoid(logit(raw) / T). `predict`, `evaluate` and the fit
all call :meth:`Ensemble.probability` / :func:`combine`, so the measured rule is the served one. Fitting an
ensemble (the parameters, its calibration) is training: deepfake_cli.train.ensemble_fit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from deepfake_cli.nets.bundle import CNN_WEIGHTS, CONFIG_FILE, ENSEMBLE_FILE, LSTM_WEIGHTS, Bundle, BundleError, load_bundle
from deepfake_cli.files import file_sha256
from deepfake_cli.scoring.metrics import called_fake, logit
from deepfake_cli.scoring.scorer import calibrate, require_finite
from deepfake_cli.data.store import Store
from deepfake_cli.scoring.stored_scores import StoredScores

FORMAT_VERSION = 1
METHODS = ("average", "vote", "weighted", "stack", "blend")
MEMBER_FILES = (CONFIG_FILE, CNN_WEIGHTS, LSTM_WEIGHTS)


class EnsembleError(BundleError):
    """An ensemble is malformed, or one of its members is missing or changed."""


@dataclass
class EnsembleConfig:
    """The contents of ensemble.json."""

    name: str
    method: str
    members: list  # [{"name": dir name, "path": relative to the ensemble, "sha256": {file: digest}}]
    params: dict = field(default_factory=dict)  # the rule's fitted parameters (see the module doc)
    temperature: float = 1.0
    threshold: float = 0.5
    thresholds_at_fpr: dict = field(default_factory=dict)
    uncertain: list = field(default_factory=list)  # [lo, hi): calibrated P where the verdict is "uncertain" ([] before 2026-12-08)
    split_ids: dict = field(default_factory=dict)  # {"val": [...]}; blend: also "val_fit", "val_calibrate"
    metrics: dict = field(default_factory=dict)
    commands: list = field(default_factory=list)
    kind: str = "ensemble"
    format_version: int = FORMAT_VERSION
    dfd_version: str = ""
    created: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> "EnsembleConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EnsembleError(f"{source} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise EnsembleError(f"{source} must hold a JSON object")
        known = {f.name for f in fields(cls)}
        if set(data) - known or "members" not in data or "method" not in data or "name" not in data:
            raise EnsembleError(f"{source}: unknown or missing keys ({', '.join(sorted(set(data) ^ known))})")
        if not isinstance(data["format_version"], int) or data["format_version"] > FORMAT_VERSION:
            raise EnsembleError(f"{source} was written by a newer dfd (ensemble format {data['format_version']}); "
                                "upgrade dfd to use it")
        config = cls(**data)
        if config.method not in METHODS:
            raise EnsembleError(f"{source}: method must be one of {', '.join(METHODS)}, not {config.method!r}")
        if not isinstance(config.members, list) or len(config.members) < 2 or not all(
                isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("path"), str)
                and isinstance(m.get("sha256"), dict) for m in config.members):
            raise EnsembleError(f"{source}: members must be a list of two or more {{name, path, sha256}}")
        needed = {"weighted": ("weights",), "stack": ("coef", "intercept"), "blend": ("coef", "intercept")}
        params = config.params if isinstance(config.params, dict) else {}
        missing = [k for k in needed.get(config.method, ()) if k not in params]
        sizes = [len(params[k]) for k in ("weights", "coef") if k in params and isinstance(params[k], list)]
        if missing or any(n != len(config.members) for n in sizes):
            raise EnsembleError(f"{source}: params of method {config.method} must hold "
                                f"{', '.join(needed[config.method])}, one weight per member")
        if not (0.0 <= float(config.threshold) <= 1.0 and float(config.temperature) > 0):
            raise EnsembleError(f"{source}: threshold must lie in [0, 1] and temperature be positive")
        return config


def is_ensemble(path: Path) -> bool:
    """Whether a directory holds an ensemble (not a single bundle)."""
    return (Path(path) / ENSEMBLE_FILE).is_file()


def member_hashes(bundle_dir: Path) -> dict[str, str]:
    """SHA-256 of each file of a member that decides its scores (config and weights)."""
    return {name: file_sha256(Path(bundle_dir) / name) for name in MEMBER_FILES if (Path(bundle_dir) / name).is_file()}


# ---------------------------------------------------------------------- the rule
def combine(method: str, params: dict, probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Raw ensemble scores (n,) from members' calibrated probabilities (n, m) and thresholds (m,)."""
    p = np.asarray(probabilities, np.float64)
    if method == "average":
        return p.mean(axis=1)
    if method == "vote":
        votes = called_fake(p, np.asarray(thresholds, np.float64)[None, :]).sum(axis=1)
        return (votes + 0.5) / (p.shape[1] + 1)
    if method == "weighted":
        return p @ np.asarray(params["weights"], np.float64)
    if method in ("stack", "blend"):
        z = logit(p) @ np.asarray(params["coef"], np.float64) + float(params["intercept"])
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    raise EnsembleError(f"unknown ensemble method {method!r}")


@dataclass
class Ensemble:
    """An opened ensemble: its config and its (checked) member bundles."""

    path: Path
    config: EnsembleConfig
    members: list[Bundle]

    @property
    def thresholds(self) -> np.ndarray:
        return np.array([float(b.config.threshold) for b in self.members])

    def raw_scores(self, probabilities: np.ndarray) -> np.ndarray:
        """Uncalibrated ensemble scores (n,) of members' calibrated probabilities (n, m)."""
        return combine(self.config.method, self.config.params, probabilities, self.thresholds)

    def probability(self, member_probabilities) -> float:
        """Calibrated P(fake) of one clip from its members' calibrated probabilities."""
        p = np.asarray(member_probabilities, np.float64).reshape(1, -1)
        require_finite(p, "member probability", self)
        score = calibrate(float(self.raw_scores(p)[0]), float(self.config.temperature))
        require_finite(score, "ensemble probability", self)
        return score


def load_ensemble(path: Path | str) -> Ensemble:
    """Open an ensemble; refuse one whose member is missing or changed since it was built."""
    path = Path(path)
    source = path / ENSEMBLE_FILE
    try:
        config = EnsembleConfig.from_json(source.read_text(), str(source))
    except (OSError, UnicodeDecodeError) as exc:
        raise EnsembleError(f"cannot read {source}: {exc}") from None
    members = []
    for member in config.members:
        directory = path / member["path"]
        if not (directory / CONFIG_FILE).is_file():
            raise EnsembleError(f"ensemble {path}: member {member['name']} is missing (no bundle at {directory})")
        now = member_hashes(directory)
        recorded = member["sha256"]
        changed = sorted(name for name in set(now) | set(recorded) if now.get(name) != recorded.get(name))
        if changed:
            raise EnsembleError(f"ensemble {path}: member {member['name']} ({directory}) changed since the ensemble "
                                f"was built ({', '.join(changed)} differ): rebuild it with `dfd ensemble`")
        members.append(load_bundle(directory))
    return Ensemble(path=path, config=config, members=members)


def model_bundles(path: Path | str) -> list[Bundle]:
    """The bundles of the model at ``path``: an ensemble's (checked) members, or the one bundle."""
    return load_ensemble(path).members if is_ensemble(path) else [load_bundle(path)]


# ---------------------------------------------------------------------- measuring
def member_probabilities(store: Store, members: list[Bundle], video_ids: list[str],
                         scorers: list[StoredScores] | None = None) -> tuple[list[str], np.ndarray]:
    """(video ids every member could score, their calibrated probabilities (n, m))."""
    scorers = scorers or [StoredScores(store, b) for b in members]
    kept, rows = [], []
    for vid in video_ids:
        if not store.has(vid, "frames") or store.entry(vid).label not in ("real", "fake"):
            continue
        row = [s.probability(vid) for s in scorers]
        if all(p is not None for p in row):
            kept.append(vid)
            rows.append(row)
    return kept, np.array(rows, np.float64).reshape(len(rows), len(members))
