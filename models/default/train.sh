#!/usr/bin/env bash
# How the bundled default model (deepfake_cli/default_model) was trained: run from the repository root, with ../shared/data present.
# Everything runs on a 2-core CPU (about 35 minutes); the figures it printed are in the README.
set -euo pipefail
STORE=${STORE:-runs/default.h5}
DATA=${DATA:-../shared/data}
REPORT=${REPORT:-runs/default-report}
MODELS=${MODELS:-runs/models}
mkdir -p "$(dirname "$STORE")"

dfd extract "$DATA/ffpp" --fpv 25 --sampling consecutive --store "$STORE"
python models/default/dfdc_subset.py "$DATA/dfdc-faces" "$(dirname "$STORE")/dfdc_subset.csv" --per-class 1000
dfd extract --labels "$(dirname "$STORE")/dfdc_subset.csv" --fpv 25 --store "$STORE"
dfd crop --store "$STORE" --size 160 --align --margin 0.2 --detect-size 480
# ImageNet start, one epoch of the head alone, then every layer fine-tuned with the backbone's
# batch-norm statistics frozen (--batchnorm auto); round 2 restarts from round 1's best weights
# at a tenth of the learning rate. At most 12 faces per FF++ video keep an epoch near 40 s.
# On this data lr 1e-4 learns steadily; 3e-4 oscillated and 1e-3 collapsed to a constant.
dfd train-cnn --store "$STORE" --model default --models-dir "$MODELS" --backbone efficientnet-lite0 --weights imagenet \
    --input-size 160 --epochs 6 --warmup-epochs 1 --rounds 2 --patience 3 --batch-size 32 \
    --max-frames-per-video 12 --lr 1e-4
dfd export-features --store "$STORE" --model default --models-dir "$MODELS"
dfd train-lstm --store "$STORE" --model default --models-dir "$MODELS" --units 64 --epochs 40 --patience 8
dfd evaluate --store "$STORE" --model default --models-dir "$MODELS" --out "$REPORT"
# What `dfd predict` uses when no --model is given: the bundle shipped inside the package.
cp "$MODELS/default/config.json" "$MODELS/default/cnn.weights.h5" "$MODELS/default/lstm.weights.h5" \
    deepfake_cli/default_model/
