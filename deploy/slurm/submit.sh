#!/usr/bin/env bash
# Submits the chain: training, then the shards' array once it succeeded, then the merge once every shard did.
# Run it from the folder the tasks work in (the results land in $GRID_RESULTS there), with the settings in the
# environment, which sbatch passes on to the tasks:
#   GRID_ARGS="--metric linearity --dataset nips2017 --train-dataset coco --device cuda" deploy/slurm/submit.sh
set -euo pipefail
here=$(dirname "$0")
train=$(sbatch --parsable "$here/train.sbatch")
shards=$(sbatch --parsable --dependency="afterok:$train" "$here/shards.sbatch")
merge=$(sbatch --parsable --dependency="afterok:$shards" "$here/merge.sbatch")
echo "submitted: training $train, shards $shards, merge $merge"
