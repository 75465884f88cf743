#!/usr/bin/env bash
# Sourced by train.sh and train_default.sh (after they build their stores): cross-validate a recipe,
# score its folds as predict judges clips, train it on every training video, calibrate it out of
# fold and export it. Needs RECIPE, MODEL, MODELS, CV (the folds' folder), STORE (the training
# store), W3STORE (the same videos in three windows); CROSSVAL_FLAGS (e.g. --cross-dataset) optional.

# Three identity-group folds per dataset (an FF++ person, a DFDC source video never on both
# sides): each fold's model is trained on the other two (on $STORE) ...
dfd crossval --recipe "$RECIPE" --store "$STORE" --out "$CV" --folds 3 ${CROSSVAL_FLAGS:-}
# ... and its held-out videos are scored as predict serves them: the fold bundles, copied without
# their scores, score the three windows of $W3STORE (crossval finds each fold trained and only scores).
rm -rf "$CV-w3" && cp -r "$CV" "$CV-w3"
rm -f "$CV"-w3/fold-*/scores.json "$CV"-w3/fold-*/frame_scores.json
dfd crossval --recipe "$RECIPE" --store "$W3STORE" --out "$CV-w3" --folds 3
# The model users get: the same recipe on every training video (train-cnn checkpoints each epoch:
# after a killed run, the same command with --resume continues it).
dfd train-cnn --recipe "$RECIPE" --store "$STORE" --model "$MODEL" --models-dir "$MODELS"
# It judges three windows of the clip, as the folds were scored; temperature, threshold (the lowest
# at or above the balanced one that calls at most 10 % of any dataset's real videos fake) and
# uncertain band fitted on the pooled out-of-fold scores of those windows.
python - "$MODELS/$MODEL/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["windows"] = 3
json.dump(config, open(sys.argv[1], "w"), indent=1)
PY
dfd crossval --recipe "$RECIPE" --store "$W3STORE" --out "$CV-w3" --folds 3 \
    --calibrate-model "$MODEL" --models-dir "$MODELS"
# The CNN and its class-activation head as ONNX, checked against Keras: predict runs them on
# onnxruntime (no TensorFlow or PyTorch import).
dfd export-onnx "$MODEL" --models-dir "$MODELS"
dfd predict examples/astronaut.mp4 --model "$MODEL" --models-dir "$MODELS"
