#!/usr/bin/env bash
# How the bundled default model (deepfake_cli/default_model) was trained: run from the repository
# root, with ../shared/data present. Everything runs on a 2-core CPU: about 35 min for the CNN,
# 5 for the features, 2 for the LSTM, plus about an hour of extract and crop (10,000 DFDC crops).
# The figures are in models/default/README.md and the README.
#
# Two stores, because the CNN and the LSTM want different frames of the same videos:
# - $CNN_STORE: 40 faces spread uniformly over each FF++ video (many distinct faces per
#   identity, not 25 near-copies) and all 10,000 DFDC crops.
# - $SEQ_STORE: the FF++ videos again, 25 consecutive frames each (what `predict` samples), and
#   a seeded 2,000 DFDC crops; the LSTM, the calibration and the evaluation run on it. Videos are
#   identified by content hash, so the train/val split the CNN recorded applies to both stores.
# Both crop faces with the same settings (train-lstm refuses faces cropped otherwise); crop stores
# the 68 dlib landmarks the self-blended pseudo-fakes need.
set -euo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
CNN_STORE=${CNN_STORE:-$RUNS/cnn.h5}
SEQ_STORE=${SEQ_STORE:-$RUNS/seq.h5}
REPORT=${REPORT:-$RUNS/default-report}
MODELS=${MODELS:-$RUNS/models}
mkdir -p "$RUNS"
CROP=(--size 160 --align --margin 0.2 --detect-size 480)

python models/default/dfdc_subset.py "$DATA/dfdc-faces" "$RUNS/dfdc_all.csv" --per-class 5000
dfd extract "$DATA/ffpp" --fpv 40 --sampling uniform --store "$CNN_STORE"
dfd extract --labels "$RUNS/dfdc_all.csv" --fpv 40 --sampling uniform --store "$CNN_STORE"
dfd crop --store "$CNN_STORE" "${CROP[@]}"
dfd extract "$DATA/ffpp" --fpv 25 --sampling consecutive --store "$SEQ_STORE"
python models/default/dfdc_subset.py "$DATA/dfdc-faces" "$RUNS/dfdc_2000.csv" --per-class 1000
dfd extract --labels "$RUNS/dfdc_2000.csv" --fpv 25 --store "$SEQ_STORE"
dfd crop --store "$SEQ_STORE" "${CROP[@]}"

# ImageNet start; every layer fine-tuned from the first epoch with batch-norm in training mode
# (batch statistics, momentum 0.9), Adam at lr 2e-4; round 2 restarts from round 1's best weights
# at 2e-5 (early stopping after one epoch without gain); best epoch by validation frame AUC.
# At most 16 of each FF++ video's 40 faces per epoch; every (dataset, label) pair weighs the same;
# a quarter of the real faces drawn become self-blended pseudo-fakes (SBI), fresh every epoch.
# The bundle serves each face averaged with its mirror image (--test-time-flip): export-features,
# evaluate and predict all do.
dfd train-cnn --store "$CNN_STORE" --model default --models-dir "$MODELS" \
    --backbone efficientnet-lite0 --weights imagenet --input-size 160 --epochs 3 --warmup-epochs 0 \
    --rounds 2 --patience 1 --max-frames-per-video 16 --batch-size 32 --lr 2e-4 --batchnorm train \
    --balance dataset --pseudo-fakes sbi --pseudo-ratio 0.25 --test-time-flip
dfd export-features --store "$SEQ_STORE" --model default --models-dir "$MODELS"
dfd train-lstm --store "$SEQ_STORE" --model default --models-dir "$MODELS" --units 64 --epochs 40 --patience 8
dfd evaluate --store "$SEQ_STORE" --model default --models-dir "$MODELS" --out "$REPORT"
# What `dfd predict` uses when no --model is given: the bundle shipped inside the package.
cp "$MODELS/default/config.json" "$MODELS/default/cnn.weights.h5" "$MODELS/default/lstm.weights.h5" \
    deepfake_cli/default_model/
