#!/usr/bin/env bash
# Train on a Slurm GPU cluster: writes an sbatch script to LOG_DIR/JOB_NAME.sbatch and
# submits it. Its `srun python -m main ... --multiprocess` starts every process of the job;
# jax.distributed.initialize() finds the others through the Slurm variables.
#
# Usage: launch/slurm.sh [--dry-run] --gpus_per_node G [--nodes N] [--per gpu|node]
#                        [--partition P] [--time T] [--account A] [--cpus_per_task C]
#                        [--job_name NAME] [--log_dir DIR] --config FILE[:METHOD]
#                        --workdir DIR [--data_dir DIR] [-- MAIN_PY_FLAGS...]
#
#   --nodes N               nodes (default 1)
#   --gpus_per_node G       GPUs of each node the job uses
#   --per gpu|node          one process per GPU (default; each sees one GPU) or one process
#                           per node that uses all its GPUs
#   --partition, --time, --account, --cpus_per_task   the sbatch options of the same name
#   --job_name NAME         default alignmix
#   --log_dir DIR           where the sbatch script and the job's output go (default
#                           WORKDIR/slurm); must be on a filesystem all nodes share
#   --config FILE[:METHOD]  config file (and method)
#   --workdir DIR           checkpoints, metrics; on a filesystem all nodes share
#   --data_dir DIR          sets --config.dataset.data_dir
#   --dry-run               print the commands (the script as a here-document), run nothing
#   -- FLAGS...             passed to main.py in every process
#
# Relative paths are relative to the repository root, where the job runs (its .venv, made
# with `launch/gpu_vm.sh --setup` on a node, must be on the shared filesystem too).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NODES=1 GPUS='' PER=gpu PARTITION='' TIME='' ACCOUNT='' CPUS='' JOB_NAME=alignmix LOG_DIR=''
CONFIG='' WORKDIR='' DATA_DIR='' EXTRA=()
while (($#)); do
  case ${1%%=*} in
    --nodes) take_value "$@"; NODES=$VALUE ;;
    --gpus_per_node) take_value "$@"; GPUS=$VALUE ;;
    --per) take_value "$@"; PER=$VALUE ;;
    --partition) take_value "$@"; PARTITION=$VALUE ;;
    --time) take_value "$@"; TIME=$VALUE ;;
    --account) take_value "$@"; ACCOUNT=$VALUE ;;
    --cpus_per_task) take_value "$@"; CPUS=$VALUE ;;
    --job_name) take_value "$@"; JOB_NAME=$VALUE ;;
    --log_dir) take_value "$@"; LOG_DIR=$VALUE ;;
    --) shift; EXTRA=("$@"); break ;;
    *) common_option "$@" ||
         usage_error "unknown argument $1" "main.py flags go after --, e.g. -- --config.seed=1" ;;
  esac
  shift "$TAKEN"
done
require "$GPUS" --gpus_per_node 8
require "$CONFIG" --config configs/imagenet_resnet50.py
require "$WORKDIR" --workdir DIR
check_workdir "$WORKDIR"
[[ $NODES =~ ^[1-9][0-9]*$ ]] || usage_error "--nodes $NODES is not a positive integer"
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || usage_error "--gpus_per_node $GPUS is not a positive integer"
[[ $PER == gpu || $PER == node ]] || usage_error "--per $PER is not gpu or node" \
  "--per gpu (one process per GPU) or --per node (one per node)"
LOG_DIR=${LOG_DIR:-$WORKDIR/slurm}
for option in "--job_name=$JOB_NAME" "--log_dir=$LOG_DIR" "--partition=$PARTITION" \
              "--time=$TIME" "--account=$ACCOUNT" "--cpus_per_task=$CPUS"; do
  [[ ! $option =~ [[:space:]] ]] || usage_error "${option%%=*} '${option#*=}' contains white space" \
    "#SBATCH lines cannot hold it; choose a value without"
done

if [[ $PER == gpu ]]; then
  TASKS=$GPUS
  DEVICES='# One process per GPU: jax.distributed.initialize() gives process SLURM_LOCALID the
# GPU with that index.'
else
  TASKS=1
  DEVICES="# One process per node using all its GPUs (jax.distributed.initialize() would give it
# only GPU SLURM_LOCALID, 0).
export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((GPUS - 1)))"
fi
HEADER=(--job-name="$JOB_NAME" --nodes="$NODES" --ntasks-per-node="$TASKS"
        --gpus-per-node="$GPUS" ${PARTITION:+"--partition=$PARTITION"} ${TIME:+"--time=$TIME"}
        ${ACCOUNT:+"--account=$ACCOUNT"} ${CPUS:+"--cpus-per-task=$CPUS"}
        --chdir="$REPO_ROOT" --output="$LOG_DIR/%x-%j.out")
MAIN=(.venv/bin/python -m main --config "$CONFIG" --workdir "$WORKDIR")
if [[ -n $DATA_DIR ]]; then MAIN+=("--config.dataset.data_dir=$DATA_DIR"); fi
MAIN+=(--multiprocess "${EXTRA[@]}")
# (srun is given --cpus-per-task again: since Slurm 22.05 it does not take sbatch's.)
SCRIPT="#!/bin/bash
$(printf '#SBATCH %s\n' "${HEADER[@]}")
set -euo pipefail
$DEVICES
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
$(quote srun --kill-on-bad-exit=1 ${CPUS:+"--cpus-per-task=$CPUS"} "${MAIN[@]}")"

run cd "$REPO_ROOT"
run mkdir -p "$LOG_DIR"
write_file "$LOG_DIR/$JOB_NAME.sbatch" "$SCRIPT"
run sbatch "$LOG_DIR/$JOB_NAME.sbatch"
