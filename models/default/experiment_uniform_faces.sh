#!/usr/bin/env bash
# An experiment, NOT the shipped model: a CNN on 40 uniformly spread faces per FF++ video plus
# DFDC crops, an LSTM on 25 consecutive frames. Measured in models/default/README.md: worse than
# the shipped default at this budget. Run from the repository root, with ../shared/data present.
#
# Two stores, because the CNN and the LSTM want different frames of the same videos:
# - $CNN_STORE: 40 faces spread uniformly over each FF++ video (many distinct faces per identity,
#   not 25 near-copies), plus all 10,000 DFDC crops; the CNN trains on it.
# - $SEQ_STORE: the FF++ videos again, 25 consecutive frames each (what `predict` samples), and a
#   seeded 2,000 of the DFDC crops; the LSTM, the calibration and the evaluation run on it. Videos are identified by content hash, so the
#   train/val split the CNN recorded in the bundle applies to both stores unchanged.
# Both stores crop faces with the same settings (train-lstm refuses faces cropped otherwise).
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
