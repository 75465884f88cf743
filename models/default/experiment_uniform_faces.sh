#!/usr/bin/env bash
# An experiment, NOT the shipped model (stop 8): a CNN on 40 uniformly spread faces per FF++
# video plus DFDC crops, batch-norm frozen at lr 1e-4, an LSTM on 25 consecutive frames. Measured
# in models/default/README.md: worse than the default shipped then. Run from the repository root,
# with ../shared/data present; models/default/stores.sh builds the two stores.
set -euo pipefail
. models/default/stores.sh  # the two stores: see that file

# ImageNet start: one epoch of the head alone, then every layer at lr 1e-4 with the backbone's
# batch-norm statistics frozen; round 2 restarts from round 1's best weights at lr 1e-5; best
# epoch by validation frame AUC. At most 20 of each video's 40 faces per epoch (evenly spread).
# Each (dataset, label) pair weighs the same, so FF++'s 1 real : 3 fake mix is not a cue.
dfd train-cnn --store "$CNN_STORE" --model uniform-faces --models-dir "$MODELS" \
    --backbone efficientnet-lite0 --weights imagenet --input-size 160 --epochs 3 --warmup-epochs 1 \
    --rounds 2 --patience 2 --max-frames-per-video 20 --batch-size 32 --lr 1e-4 --batchnorm frozen \
    --balance dataset
dfd export-features --store "$SEQ_STORE" --model uniform-faces --models-dir "$MODELS"
dfd train-lstm --store "$SEQ_STORE" --model uniform-faces --models-dir "$MODELS" --units 64 --epochs 40 --patience 8
dfd evaluate --store "$SEQ_STORE" --model uniform-faces --models-dir "$MODELS" --out "$REPORT"
