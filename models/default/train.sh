#!/usr/bin/env bash
# How models/default was trained: run from the repository root, with ../shared/data present.
# Everything runs on a 2-core CPU; the figures it printed are in models/default/README.md.
set -euo pipefail
STORE=${STORE:-train-default.h5}
DATA=${DATA:-../shared/data}

dfd extract "$DATA/ffpp" --fpv 25 --sampling consecutive --store "$STORE"
python models/default/dfdc_subset.py "$DATA/dfdc-faces" dfdc_subset.csv --per-class 1000
dfd extract --labels dfdc_subset.csv --fpv 25 --store "$STORE"
dfd crop --store "$STORE" --size 160 --align --margin 0.2 --detect-size 480
# Frozen ImageNet backbone, trained head: on a 2-core CPU and ~1,800 faces per epoch this beat
# full fine-tuning (3 epochs at lr 1e-4 fell from val AUC 0.647 to 0.529). With a GPU, use
# --epochs 20 --warmup-epochs 2 --rounds 2 and all faces.
dfd train-cnn --store "$STORE" --model default --backbone efficientnet-lite0 --weights imagenet \
    --input-size 160 --epochs 5 --warmup-epochs 5 --rounds 1 --patience 3 --batch-size 32 \
    --max-frames-per-video 12 --lr 1e-3
dfd export-features --store "$STORE" --model default
dfd train-lstm --store "$STORE" --model default --units 64 --epochs 40 --patience 8
dfd evaluate --store "$STORE" --model default --out models/default/report
