"""Pseudo-fakes in CNN training: real training faces turned into labelled fakes on the fly.

``dfd train-cnn --pseudo-fakes sbi --pseudo-ratio R``: each time a real training face is
drawn, with probability R it is replaced by a self-blended copy of itself
(:func:`deepfake_cli.train.sbi.self_blend`) and labelled fake. Labelled fakes stay as they are.
The draw and the blend take their randomness from the batch's generator (seeded by
seed, phase, epoch and batch), so an epoch, and a resumed run, replay exactly.

Class weights follow the expected mix: with n_r real and n_f fake faces, an epoch holds
about (1 - R) n_r real and n_f + R n_r fake ones, and both classes weigh the same. With
``--balance dataset`` a pseudo-fake keeps its video's (dataset, real) weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepfake_cli.errors import OptionsError
from deepfake_cli.train.sbi import self_blend
from deepfake_cli.data.store import Store

METHODS = ("none", "sbi")
KINDS = ("real", "fake", "pseudo_fake")  # the three kinds of training face


def check_options(method: str, ratio: float) -> None:
    """Refuse an unknown method, or a ratio outside [0, 1) (1 would leave no real face)."""
    if method not in METHODS:
        raise OptionsError(f"pseudo_fakes must be one of {', '.join(METHODS)}, not {method!r}")
    if not 0.0 <= float(ratio) < 1.0:
        raise OptionsError(f"pseudo_ratio must be in [0, 1), got {ratio}")


@dataclass(frozen=True)
class PseudoFakes:
    """Replaces a real face by its self-blended fake with probability ``ratio``."""

    ratio: float
    method: str = "sbi"

    def __call__(self, crop: np.ndarray, landmarks68: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray | None:
        """The pseudo-fake of ``crop``, or None when this draw keeps the real face."""
        if rng.random() >= self.ratio:
            return None
        return self_blend(crop, landmarks68, rng)[0]


def make_pseudo_fakes(method: str, ratio: float) -> PseudoFakes | None:
    """The pseudo-fake maker for the options, None for ``none``."""
    check_options(method, ratio)
    return None if method == "none" else PseudoFakes(float(ratio), method)


def require_landmarks68(store: Store, video_ids: list[str]) -> None:
    """Raise StoreError (one line, says to re-run `dfd crop --force`) unless every video
    has 68-point landmarks for its faces."""
    for vid in video_ids:
        store.read_landmarks68(vid)


def expected_class_weights(labels: np.ndarray, ratio: float) -> dict[int, float]:
    """Weights n / (2 n_c) over the expected labels once a share ``ratio`` of reals are fakes."""
    n = len(labels)
    real = float(np.sum(labels == 0)) * (1.0 - ratio)
    fake = n - real
    return {0: n / (2.0 * real) if real else 0.0, 1: n / (2.0 * fake) if fake else 0.0}


def mix_shares(counts: dict[str, int]) -> dict[str, float]:
    """Shares of real, labelled-fake and pseudo-fake faces (they sum to 1)."""
    total = sum(counts.values())
    return {kind: (counts.get(kind, 0) / total if total else 0.0) for kind in KINDS}


def describe(pseudo: PseudoFakes | None) -> dict:
    """The `training.pseudo_fakes` section of a bundle's config."""
    if pseudo is None:
        return {"method": "none"}
    return {"method": pseudo.method, "ratio": pseudo.ratio,
            "recipe": ("Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): a real training face is, "
                       "with probability ratio, blended with a recoloured, re-sharpened, slightly moved "
                       "copy of itself inside a deformed, soft hull of its 68 landmarks, and labelled fake"),
            "class_weights": "from the expected mix: (1 - ratio) of reals stay real"}
