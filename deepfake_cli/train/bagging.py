"""`dfd train-cnn --bagging N`: N CNNs on bootstrap resamples of identity groups, averaged.

Member k is an ordinary bundle, ``<name>-bag<k>`` beside the ensemble, trained by
:func:`deepfake_cli.train.cnn.train_cnn` on its own resample of the train split's identity groups
(``CNNTrainOptions.bootstrap = k``: groups drawn with replacement, never frames or videos,
which would leak a person across the comparison), validated on the common val split, and
calibrated on it. Each member checkpoints and resumes on its own, so a killed bagging run
rerun with ``--resume`` continues the member it was in and skips the finished ones. The
ensemble ``<name>`` averages the members' calibrated probabilities (method ``average``) and
is calibrated on val like a single bundle.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from deepfake_cli.nets.card import write_card
from deepfake_cli.train.calibrate import calibrate_bundle
from deepfake_cli.train.cnn import CNNTrainOptions, train_cnn
from deepfake_cli.train.ensemble_fit import build_ensemble
from deepfake_cli.errors import OptionsError
from deepfake_cli.data.store import Store


def member_dirs(ensemble_dir: Path, count: int) -> list[Path]:
    """Where the members of a bagging ensemble live: ``<name>-bag1`` ... beside it."""
    ensemble_dir = Path(ensemble_dir)
    return [ensemble_dir.with_name(f"{ensemble_dir.name}-bag{k}") for k in range(1, count + 1)]


def train_bagging(store: Store, ensemble_dir: Path, options: CNNTrainOptions, count: int, resume: bool = False,
                  on_epoch: Callable[[dict], None] | None = None, command: str | None = None) -> dict:
    """Train ``count`` bootstrap members, calibrate each, and write their averaging ensemble."""
    if count < 2:
        raise OptionsError("--bagging needs at least 2 members")
    members = []
    for k, directory in enumerate(member_dirs(ensemble_dir, count), start=1):
        def tagged(info: dict, k: int = k) -> None:
            if on_epoch is not None:
                on_epoch(info | {"member": k})

        summary = train_cnn(store, directory, replace(options, bootstrap=k), resume=resume, on_epoch=tagged,
                            command=command)
        calibration = calibrate_bundle(store, directory)
        write_card(directory)  # before the ensemble records the members' config.json
        members.append({"bundle": str(directory), "best_val_auc": summary["best_val_auc"],
                        "epochs_run": summary["epochs_run"], "threshold": calibration["threshold"]})
    built = build_ensemble(store, ensemble_dir, member_dirs(ensemble_dir, count), "average", seed=options.seed,
                           command=command or "")
    return built | {"members": members}
