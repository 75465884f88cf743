"""A bundle's model card: what it was trained on and under which terms, what it is for, its
limits and its validation figures, kept in config.json (``card``) and written out as
MODEL_CARD.md beside it.

The card is derived from what the bundle records (its training datasets, the validation counts
and AUC) by :func:`build_card`; the training commands store it (:func:`write_card`), and a
bundle without one (made before cards) gets the derived one when it is read, so `dfd models`
shows terms for every model. :func:`validation_warnings` says when a model's validation figures
cannot be trusted: a class with fewer than TINY_CLASS videos, or an AUC within noise of 0.5.
"""

from __future__ import annotations

import math
from pathlib import Path

from deepfake_cli.files import atomic_write_text
from deepfake_cli.nets.bundle import BundleConfig, read_config, save_config

MODEL_CARD_FILE = "MODEL_CARD.md"
TINY_CLASS = 20  # fewer validation videos of a class than this: its figures are a sign, not a figure
NOISE_SE = 2.0  # an AUC within this many standard errors (under chance) of 0.5 is noise

# Terms of the datasets dfd reads (deepfake_cli.data.datasets names them), as their owners state them.
DATASET_TERMS = {
    "ffpp": ("FaceForensics++", "research only: the FaceForensics++ terms of use (non-commercial research; "
             "no redistribution of the videos)"),
    "dfdc": ("DFDC (Deepfake Detection Challenge)", "research only: the DFDC dataset licence (non-commercial "
             "research)"),
    "celebdf": ("Celeb-DF", "research only: the Celeb-DF terms of use (non-commercial research)"),
}
OWN_DATA_TERMS = "the terms of the data's owner (your own videos: yours to state)"
LANDMARK_TERMS = ("dlib's 68-point face landmark model (shape_predictor_68_face_landmarks, from "
                  "face-recognition-models), trained on iBUG 300-W, whose licence excludes commercial use")
INTENDED_USE = ("Research on face-manipulation detection: a second opinion on whether a clip of one "
                "frontal face was manipulated, read with its probability and warnings, never as proof.")
LIMITS = ("Trained and validated only on the datasets named here: on other media (other cameras, "
          "compressions, manipulation methods, lighting, ethnicities) its errors are unmeasured and "
          "likely higher. It judges the main face only; small, profile or occluded faces and very short "
          "clips weaken the verdict. Not for decisions about people, nor for commercial use where the "
          "training data's terms forbid it.")


def validation_figures(config: BundleConfig) -> dict:
    """The best video-level validation figures the bundle records: calibrated CNN + LSTM, else the
    CNN's video AUC; with the class counts behind them."""
    calibrated = config.metrics.get("val_video_calibrated") or {}
    if calibrated.get("auc") is not None:
        return {"level": "video, CNN + LSTM, calibrated", "auc": calibrated["auc"],
                "real": calibrated.get("n_real"), "fake": calibrated.get("n_fake")}
    cnn = config.metrics.get("cnn") or {}
    val = config.training.get("val") or {}
    auc = cnn.get("val_video_auc", cnn.get("val_auc"))
    if auc is None:
        return {}
    level = "video, CNN (mean)" if "val_video_auc" in cnn else "frame, CNN"
    return {"level": level, "auc": auc, "real": val.get("real"), "fake": val.get("fake")}


def build_card(config: BundleConfig) -> dict:
    """The card of a bundle, from what its config records; the fields only ``config.card`` holds
    (a maintainer's notes, held-out figures) are kept, the derived ones recomputed."""
    datasets = list(config.training.get("datasets") or [])
    training_data = [DATASET_TERMS.get(d, (d, ""))[0] for d in datasets]
    terms = [f"{DATASET_TERMS[d][0]}: {DATASET_TERMS[d][1]}" for d in datasets if d in DATASET_TERMS]
    if any(d not in DATASET_TERMS for d in datasets):
        terms.append(f"{', '.join(d for d in datasets if d not in DATASET_TERMS)}: {OWN_DATA_TERMS}")
    pseudo = (config.training.get("pseudo_fakes") or {}).get("method", "none")
    landmarks_used = pseudo != "none" or config.face.get("detector") == "dlib"
    derived = {
        "training_data": training_data,
        "training_videos": {k: (config.training.get(k) or {}).get("videos") for k in ("train", "val")},
        "terms": terms or ["unknown: this bundle records no training datasets"],
        "landmark_model": LANDMARK_TERMS + ("; used to make this model's training faces"
                                            if landmarks_used else "; `dfd crop` stores its landmarks, "
                                            "which this model's training did not use"),
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "validation": validation_figures(config),
    }
    return derived | {k: v for k, v in config.card.items() if k not in derived}


def card_of(bundle_dir: Path) -> dict:
    """The card of the bundle at ``bundle_dir`` (stored, completed by what its config records)."""
    return build_card(read_config(Path(bundle_dir)))


def validation_warnings(card: dict) -> list[str]:
    """What makes the model's validation figures untrustworthy: a class with fewer than TINY_CLASS
    videos, or an AUC within NOISE_SE standard errors of 0.5 (Hanley and McNeil's, under chance)."""
    val = card.get("validation") or {}
    if not val:
        return ["the model records no validation figures"]
    warnings = []
    real, fake, auc = val.get("real"), val.get("fake"), val.get("auc")
    if real is not None and fake is not None:
        if min(real, fake) < TINY_CLASS:
            warnings.append(f"its validation set is tiny ({real} real, {fake} fake videos; fewer than {TINY_CLASS} "
                            "of a class): its figures are a sign, not a measurement")
        if auc is not None and real and fake:
            se = auc_standard_error(0.5, real, fake)
            if abs(auc - 0.5) <= NOISE_SE * se:
                warnings.append(f"its validation AUC {auc:.3f} is within noise of 0.5 (chance; ± {NOISE_SE * se:.3f} "
                                f"on {real} real and {fake} fake videos): it may not tell real from fake")
    return warnings


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC over ``positives`` and ``negatives``."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives)
    return math.sqrt(max(variance, 0.0))


def card_markdown(name: str, card: dict) -> str:
    """MODEL_CARD.md of a bundle."""
    val = card.get("validation") or {}
    figures = (f"AUC {val['auc']:.3f} ({val['level']}; {val.get('real')} real, {val.get('fake')} fake videos)"
               if val else "none recorded")
    lines = [f"# Model card: {name}", "",
             "## Training data", "", *(f"- {d}" for d in card["training_data"] or ["(none recorded)"]), "",
             "## Terms", "", *(f"- {t}" for t in card["terms"]), f"- {card['landmark_model']}", "",
             "## Intended use", "", card["intended_use"], "",
             "## Limits", "", card["limits"], "",
             "## Validation", "", figures, ""]
    warnings = validation_warnings(card)
    if warnings:
        lines += ["Warnings:", "", *(f"- {w}" for w in warnings), ""]
    for key in sorted(set(card) - {"training_data", "training_videos", "terms", "landmark_model", "intended_use",
                                   "limits", "validation"}):
        lines += [f"## {key.replace('_', ' ').capitalize()}", "", str(card[key]), ""]
    return "\n".join(lines)


def write_card(bundle_dir: Path) -> dict:
    """Store the bundle's card in its config.json and write MODEL_CARD.md beside it (the training
    commands call this when they have written a bundle); returns the card."""
    bundle_dir = Path(bundle_dir)
    config = read_config(bundle_dir)
    config.card = build_card(config)
    save_config(bundle_dir, config)
    atomic_write_text(bundle_dir / MODEL_CARD_FILE, card_markdown(config.name, config.card))
    return config.card
