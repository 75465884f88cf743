# Sourced by train_c.sh and experiment_uniform_faces.sh (run from the repository root): builds the
# two stores they train and evaluate on. Rerunning skips what the stores already hold.
# - $CNN_STORE: 40 faces spread uniformly over each FF++ video (many distinct faces per
#   identity, not 25 near-copies) and all 10,000 DFDC crops; the CNN trains on it.
# - $SEQ_STORE: the FF++ videos again, 25 consecutive frames each (what `predict` samples), and
#   a seeded 2,000 DFDC crops; the LSTM, the calibration and the evaluation run on it. Videos are
#   identified by content hash, so the train/val split the CNN recorded applies to both stores.
# Both crop faces with the same settings (train-lstm refuses faces cropped otherwise); crop
# stores the 68 dlib landmarks that self-blended pseudo-fakes need.
# The shipped bundle was trained on these two stores. `dfd extract --fpv 25 --spread 40` now puts
# both samplings in one store, decoded and cropped once (train-cnn reads the spread faces,
# export-features and the LSTM the consecutive ones): the way to train on your own data. This
# recipe keeps the two stores it was measured with.
set -euo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
CNN_STORE=${CNN_STORE:-$RUNS/cnn.h5}
SEQ_STORE=${SEQ_STORE:-$RUNS/seq.h5}
REPORT=${REPORT:-$RUNS/default-report}
MODELS=${MODELS:-$RUNS/models}
mkdir -p "$RUNS"
FACE_SIZE=${FACE_SIZE:-160}  # the crop size of both stores; run F of models/default/README.md used 224
CROP=(--size "$FACE_SIZE" --align --margin 0.2 --detect-size 480)

python models/default/dfdc_subset.py "$DATA/dfdc-faces" "$RUNS/dfdc_all.csv" --per-class 5000
dfd extract "$DATA/ffpp" --fpv 40 --sampling uniform --store "$CNN_STORE"
dfd extract --labels "$RUNS/dfdc_all.csv" --fpv 40 --sampling uniform --store "$CNN_STORE"
dfd crop --store "$CNN_STORE" "${CROP[@]}"
dfd extract "$DATA/ffpp" --fpv 25 --sampling consecutive --store "$SEQ_STORE"
python models/default/dfdc_subset.py "$DATA/dfdc-faces" "$RUNS/dfdc_2000.csv" --per-class 1000
dfd extract --labels "$RUNS/dfdc_2000.csv" --fpv 25 --store "$SEQ_STORE"
dfd crop --store "$SEQ_STORE" "${CROP[@]}"
