"""Accuracy of a bundle on a folder of labelled videos (any layout `dfd extract` knows).

    python -m benchmarks.bench_accuracy PATH... [--model NAME] [--limit N]

Prints video-level AUC, ACC at the bundle's threshold and log-loss, and frame-level AUC of
the CNN's per-frame scores, so anyone can measure a model on their own data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import machine

from deepfake_cli.data.datasets import discover
from deepfake_cli.scoring.metrics import binary_metrics
from deepfake_cli.serve.predict import load_predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=0, help="score at most N videos (evenly spread)")
    args = parser.parse_args()
    records = [r for r in discover(args.paths) if r.label in ("real", "fake")]
    if args.limit and len(records) > args.limit:
        records = [records[i] for i in np.linspace(0, len(records) - 1, args.limit).astype(int)]
    predictor = load_predictor(args.model, device="cpu")
    video_y, video_p, frame_y, frame_p, errors = [], [], [], [], 0
    for record in records:
        result = predictor.predict(record.path)
        if result.error:
            errors += 1
            continue
        y = int(record.label == "fake")
        video_y.append(y)
        video_p.append(result.probability)
        frame_y += [y] * len(result.frame_scores)
        frame_p += result.frame_scores
    video = binary_metrics(video_y, video_p, threshold=predictor.threshold)
    frame = binary_metrics(frame_y, frame_p)
    print(f"machine: {machine()}; videos scored: {len(video_y)}, errors: {errors}")
    print(f"video level (CNN+BiLSTM, threshold {predictor.threshold:.3f}): AUC {video['auc']:.4f}  "
          f"ACC {video['acc']:.4f}  log-loss {video['logloss']:.4f}  EER {video['eer']:.4f}")
    print(f"frame level (CNN): AUC {frame['auc']:.4f}  ACC@0.5 {frame['acc']:.4f}  ({len(frame_y)} faces)")


if __name__ == "__main__":
    main()
