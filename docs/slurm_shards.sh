#!/usr/bin/env bash
# Extract and crop a large dataset on a Slurm cluster: one array task per shard, each into its
# own store, then one job that merges them. Array indices count from 0; task i runs shard i+1 of N.
#     sbatch --array=0-31 docs/slurm_shards.sh /data/dfdc /scratch/dfd 32
#     sbatch --dependency=afterok:<array job id> --wrap "dfd merge --out /scratch/dfd/all.h5 /scratch/dfd/shard-*.h5"
# Every task sees the same files and keeps the videos whose content hash falls in its shard, so
# tasks never touch each other's videos. A task that was killed or pre-empted is resubmitted
# alone, with N given (here task 2, shard 3/32): extract and crop keep what its store holds.
#     sbatch --array=2 docs/slurm_shards.sh /data/dfdc /scratch/dfd 32
# Options of each stage: DFD_EXTRACT_OPTIONS (default "--fpv 25") and DFD_CROP_OPTIONS (default
# none), read from the environment sbatch passes on. tests/test_slurm.py runs this script on a
# one-node cluster (scripts/slurm-local.sh).
#SBATCH --job-name=dfd-shards
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
set -euo pipefail
DATA=$1
OUT=$2
K=$((${SLURM_ARRAY_TASK_ID:?run me as a Slurm array task: sbatch --array=0-N-1 ...} + 1))
N=${3:-${SLURM_ARRAY_TASK_COUNT:?give N, the number of shards}}
STORE="$OUT/shard-$K.h5"
mkdir -p "$OUT"
# shellcheck disable=SC2086  # the options are words
dfd extract "$DATA" --store "$STORE" --shard "$K/$N" ${DFD_EXTRACT_OPTIONS:---fpv 25} --quiet
# shellcheck disable=SC2086
dfd crop --store "$STORE" --shard "$K/$N" ${DFD_CROP_OPTIONS:-} --quiet
