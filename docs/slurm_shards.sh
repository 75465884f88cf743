#!/usr/bin/env bash
# Extract and crop a large dataset on a Slurm cluster: one array task per shard, each into its
# own store, then one job that merges them. Submit with:
#     sbatch --array=1-32 docs/slurm_shards.sh /data/dfdc /scratch/dfd
#     sbatch --dependency=afterok:<array job id> --wrap "dfd merge /scratch/dfd/all.h5 /scratch/dfd/shard-*.h5"
# Every task sees the same files and keeps the videos whose content hash falls in its shard, so
# tasks never touch each other's videos; a task that is killed or pre-empted is simply rerun
# (extract and crop skip what its store already holds).
#SBATCH --job-name=dfd-shards
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
set -euo pipefail
DATA=$1
OUT=$2
K=${SLURM_ARRAY_TASK_ID:?run me as a Slurm array task}
N=${SLURM_ARRAY_TASK_COUNT:?run me as a Slurm array task}
STORE="$OUT/shard-$K.h5"
mkdir -p "$OUT"
dfd extract "$DATA" --fpv 25 --store "$STORE" --shard "$K/$N" --quiet
dfd crop --store "$STORE" --shard "$K/$N" --quiet
