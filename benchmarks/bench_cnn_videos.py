"""Video AUC of a bundle's CNN alone, on the videos of a store it was not trained on.

    python -m benchmarks.bench_cnn_videos --store runs/cnn.h5 --model runs/models/NAME [--max-faces 16]

Each video's score is the mean of its frame scores (each face averaged with its mirror image
when the bundle says so), computed by the bundle's own ``scoring.Scorer`` from the faces
train-cnn validates on (``face_dataset.index_faces``: the --spread faces when the store has
them, at most ``--max-faces`` spread over the video). Printed per set: the
bundle's val split (``split_ids["val"]``) as a whole and by dataset, and the store's ``test``
split by dataset (held out at extract time, never trained on). This is how the one-epoch
backbone and input-size arms of models/default/README.md were compared: it needs no
export-features and no LSTM, so it ranks CNNs before the rest of the recipe is run.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import machine

from deepfake_cli.nets.bundle import load_bundle
from deepfake_cli.errors import DfdError
from deepfake_cli.train.face_dataset import index_faces
from deepfake_cli.scoring.metrics import safe_auc
from deepfake_cli.scoring.scorer import Scorer
from deepfake_cli.data.store import Store


def video_scores(store: Store, scorer: Scorer, video_ids: list[str], max_faces: int) -> dict[str, float]:
    """Mean CNN frame score of each video that has faces, over the faces train-cnn's
    validation reads (``face_dataset.index_faces``)."""
    rows = defaultdict(list)
    for vid, row in index_faces(store, video_ids, limit=max_faces):
        rows[vid].append(row)
    return {vid: float(np.mean(scorer.frames(store.read_faces(vid).crops[picked])[1]))
            for vid, picked in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="bundle directory")
    parser.add_argument("--max-faces", type=int, default=16)
    args = parser.parse_args()
    try:
        bundle = load_bundle(args.model)
        if bundle.config.input != "face":
            raise SystemExit(f"error: {args.model} reads whole frames; bench_cnn_videos measures face models")
        with Store.open(args.store) as store:
            report(store, bundle, args)
    except DfdError as exc:  # a missing or damaged store or bundle: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None


def report(store: Store, bundle, args: argparse.Namespace) -> None:
    """Score the sets and print one line each."""
    entries = {e.video_id: e for e in store.entries() if e.label in ("real", "fake")}
    sets = defaultdict(list)
    for vid in bundle.config.split_ids.get("val", []):
        if vid in entries:
            sets["val"].append(vid)
            sets[f"val {entries[vid].dataset}"].append(vid)
    for vid, entry in entries.items():
        if entry.split == "test":
            sets[f"test {entry.dataset}"].append(vid)
    if not sets:
        raise SystemExit(f"error: {args.store} holds none of {args.model}'s val videos and no test split")
    scorer = Scorer(bundle, lstm=False)
    scores = video_scores(store, scorer, sorted({v for ids in sets.values() for v in ids}), args.max_faces)
    print(f"machine: {machine()}; bundle {args.model}; store {args.store}; at most {args.max_faces} faces a video")
    for name in sorted(sets):
        ids = [v for v in sets[name] if v in scores]
        labels = np.array([int(entries[v].label == "fake") for v in ids])
        auc = safe_auc(labels, np.array([scores[v] for v in ids]))
        print(f"{name:<16} videos {len(ids):>5} (real {int((labels == 0).sum()):>4})  video AUC {auc:.3f}")


if __name__ == "__main__":
    main()
