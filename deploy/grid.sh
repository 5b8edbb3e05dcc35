#!/usr/bin/env bash
# The robustness grid in three steps on a cluster's scheduler (docs/ci.md, "Slurm and Kubernetes"), the same
# chain as the GitLab pipeline's: train the universal perturbations once, run the grid's cases in N shards
# that load them, merge the shards into one session.
#
#   deploy/grid.sh train   pytest --iqa-train-only into $GRID_RESULTS/train
#   deploy/grid.sh shard   shard K of N into $GRID_RESULTS/shard-K; K from SHARD_INDEX (1..N), else from
#                          Slurm's SLURM_ARRAY_TASK_ID (K = id - SLURM_ARRAY_TASK_MIN + 1), else from a
#                          Kubernetes Indexed Job's JOB_COMPLETION_INDEX (K = index + 1)
#   deploy/grid.sh merge   iqa-robustness merge of $GRID_RESULTS/shard-* into $GRID_RESULTS/merged
#
# Settings, from the environment:
#   GRID_ARGS     the grid's pytest options, the same for every step (--metric ... --attack ... --dataset ...)
#   GRID_RESULTS  a folder every task sees (default: results)
#   SHARD_COUNT   N (default: Slurm's SLURM_ARRAY_TASK_COUNT; a Kubernetes Job sets it to its completions)
#   MERGE_ARGS    options of iqa-robustness merge, e.g. --tracking-uri "$MLFLOW_TRACKING_URI"
#   PYTEST, IQA_ROBUSTNESS   the commands (default: pytest and iqa-robustness, from PATH)
#
# A step run again resumes (--resume): a preempted or failed task, rerun, skips the cases its folder holds.
set -euo pipefail

results=${GRID_RESULTS:-results}
pytest=${PYTEST:-pytest}
cli=${IQA_ROBUSTNESS:-iqa-robustness}
read -r -a grid <<< "${GRID_ARGS:-}"
read -r -a merge_args <<< "${MERGE_ARGS:-}"

fail() { echo "deploy/grid.sh: $*" >&2; exit 2; }

shard_number() {
  if [ -n "${SHARD_INDEX:-}" ]; then
    echo "$SHARD_INDEX"
  elif [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    echo $(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-1} + 1 ))
  elif [ -n "${JOB_COMPLETION_INDEX:-}" ]; then
    echo $(( JOB_COMPLETION_INDEX + 1 ))
  else
    fail "no shard index: run it as a Slurm array task, a Kubernetes Indexed Job's pod, or set SHARD_INDEX=K (1..N)"
  fi
}

case "${1:-}" in
  train)
    exec "$pytest" --pyargs iqa_robustness.robustness_tests "${grid[@]}" --iqa-train-only --iqa-resume \
      --iqa-results-dir "$results/train"
    ;;
  shard)
    k=$(shard_number)
    n=${SHARD_COUNT:-${SLURM_ARRAY_TASK_COUNT:-}}
    [ -n "$n" ] || fail "no shard count: set SHARD_COUNT=N (a Slurm array task has SLURM_ARRAY_TASK_COUNT)"
    { [ "$k" -ge 1 ] && [ "$k" -le "$n" ]; } || fail "shard $k is not one of 1..$n"
    folder="$results/shard-$k"
    mkdir -p "$folder"
    # the training step's perturbations, where the shard finds them instead of training again
    if [ -d "$results/train/perturbations" ] && [ ! -d "$folder/perturbations" ]; then
      cp -rp "$results/train/perturbations" "$folder/"
    fi
    exec "$pytest" --pyargs iqa_robustness.robustness_tests "${grid[@]}" --iqa-shard "$k/$n" --iqa-resume \
      --iqa-results-dir "$folder"
    ;;
  merge)
    shopt -s nullglob
    shards=("$results"/shard-*)
    [ ${#shards[@]} -gt 0 ] || fail "no shard folders in $results (run the shards first)"
    exec "$cli" merge "${shards[@]}" --out "$results/merged" "${merge_args[@]}"
    ;;
  *)
    fail "usage: deploy/grid.sh train|shard|merge (settings in GRID_ARGS, GRID_RESULTS, SHARD_COUNT)"
    ;;
esac
