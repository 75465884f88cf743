#!/usr/bin/env bash
# How the bundled default model (deepfake_cli/serve/default_model, run C) was trained: run from the repository
# root, with ../shared/data present. Everything runs on a 2-core CPU; measured: 62 min for the
# CNN (tests and benchmarks shared the CPU), 5 for the features and 3 for the LSTM. The two
# stores, from nothing, 32 min (2026-12-02, on a fresh clone; tests shared the CPU during the
# CNN store's crop): CNN store extract 6 + 1 min (FF++, DFDC), crop 16 min; sequence store
# extract 4 + 0.3 min, crop 4 min. The figures are in models/default/README.md.
#
# Two stores, because the CNN and the LSTM want different frames of the same videos
# (models/default/stores.sh builds them).
set -euo pipefail
. models/default/stores.sh  # the two stores: see that file

# ImageNet start; every layer fine-tuned from the first epoch with batch-norm in training mode
# (batch statistics, momentum 0.9), Adam at lr 2e-4; round 2 restarts from round 1's best weights
# at 2e-5 (early stopping after one epoch without gain); best epoch by validation frame AUC.
# At most 16 of each FF++ video's 40 faces per epoch; every (dataset, label) pair weighs the same.
# No self-blended pseudo-fakes: with them (--pseudo-fakes sbi --pseudo-ratio 0.25, run B of
# models/default/README.md) DFDC test fell from 0.796 to 0.747 at this budget.
# The bundle serves each face averaged with its mirror image (--test-time-flip): export-features,
# evaluate and predict all do.
dfd train-cnn --store "$CNN_STORE" --model default --models-dir "$MODELS" \
    --backbone efficientnet-lite0 --weights imagenet --input-size 160 --epochs 3 --warmup-epochs 0 \
    --rounds 2 --patience 1 --max-frames-per-video 16 --batch-size 32 --lr 2e-4 --batchnorm train \
    --balance dataset --test-time-flip
dfd export-features --store "$SEQ_STORE" --model default --models-dir "$MODELS"
dfd train-lstm --store "$SEQ_STORE" --model default --models-dir "$MODELS" --units 64 --epochs 40 --patience 8
dfd evaluate --store "$SEQ_STORE" --model default --models-dir "$MODELS" --out "$REPORT"
# The same CNN and LSTM as ONNX files, checked against Keras: `dfd predict` then runs on onnxruntime
# and starts in under 2 s instead of 19 (no TensorFlow or PyTorch import).
dfd export-onnx default --models-dir "$MODELS"
# What `dfd predict` uses when no --model is given: the bundle shipped inside the package.
cp "$MODELS/default/config.json" "$MODELS/default/cnn.weights.h5" "$MODELS/default/lstm.weights.h5" \
    "$MODELS/default/cnn.onnx" "$MODELS/default/lstm.onnx" "$MODELS/default/onnx.json" deepfake_cli/serve/default_model/
