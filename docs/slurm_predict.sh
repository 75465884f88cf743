#!/usr/bin/env bash
# Score a large folder of clips on a Slurm cluster: one array task per shard, each writing its own
# result file, then one job that joins them. Array indices count from 0; task i scores shard i+1 of N.
#     sbatch --array=0-31 docs/slurm_predict.sh /data/uploads /scratch/verdicts 32
#     sbatch --dependency=afterok:<array job id> --wrap "dfd merge-results /scratch/verdicts/all.csv /scratch/verdicts/part-*.csv"
# A clip belongs to the shard of its content hash (as in extract), so the parts never overlap and
# the merged file is the one a single `dfd predict FOLDER --csv` writes (rows sorted by path).
# A task that was killed goes on where it stopped when resubmitted alone, with N given:
#     sbatch --array=2 docs/slurm_predict.sh /data/uploads /scratch/verdicts 32
# Other predict options: DFD_PREDICT_OPTIONS (e.g. "--model my-model"), from the environment.
# tests/test_slurm.py runs this script on a one-node cluster (scripts/slurm-local.sh).
#SBATCH --job-name=dfd-predict
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=04:00:00
set -euo pipefail
DATA=$1
OUT=$2
K=$((${SLURM_ARRAY_TASK_ID:?run me as a Slurm array task: sbatch --array=0-N-1 ...} + 1))
N=${3:-${SLURM_ARRAY_TASK_COUNT:?give N, the number of shards}}
PART="$OUT/part-$K.csv"
mkdir -p "$OUT"
status=0
# shellcheck disable=SC2086  # the options are words
dfd predict "$DATA" --shard "$K/$N" --csv "$PART" --skip-done "$PART" ${DFD_PREDICT_OPTIONS:-} --quiet || status=$?
# 3, 4, 5: a clip unreadable, without a face, or scored NaN; its row says so: not the task's failure
case $status in 0|3|4|5) ;; *) exit "$status" ;; esac
