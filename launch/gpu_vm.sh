#!/usr/bin/env bash
# Train on one GPU machine: one process that uses all its GPUs (the train step shards the
# batch over every device jax sees).
#
# Usage: launch/gpu_vm.sh [--dry-run] [--setup] --config FILE[:METHOD] --workdir DIR
#                         [--data_dir DIR] [--python PY] [-- MAIN_PY_FLAGS...]
#
#   --config FILE[:METHOD]  config file (and method), e.g. configs/cifar100_preactresnet18.py
#   --workdir DIR           checkpoints, metrics, evaluation; the same command resumes
#   --data_dir DIR          sets --config.dataset.data_dir (tfds data_dir or image folder)
#   --setup                 first create .venv and install requirements.txt and the CUDA
#                           build of jax (--config is then optional)
#   --python PY             interpreter that --setup creates .venv with (default python3)
#   --dry-run               print the commands, one per line, and run nothing
#   -- FLAGS...             passed to main.py, e.g. -- --mode eval --checkpoint_step 1000
#
# Relative paths are relative to the repository root, where the commands run. Set
# CUDA_VISIBLE_DEVICES to use a subset of the GPUs.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CONFIG='' WORKDIR='' DATA_DIR='' SETUP=0 PYTHON=python3 EXTRA=()
while (($#)); do
  case ${1%%=*} in
    --python) take_value "$@"; PYTHON=$VALUE ;;
    --setup) no_value "$1"; SETUP=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) common_option "$@" ||
         usage_error "unknown argument $1" "main.py flags go after --, e.g. -- --mode eval" ;;
  esac
  shift "$TAKEN"
done
if ((!SETUP)) || [[ -n $CONFIG ]]; then
  require "$CONFIG" --config configs/cifar100_preactresnet18.py
  require "$WORKDIR" --workdir DIR
  check_workdir "$WORKDIR"
fi

run cd "$REPO_ROOT"
if ((SETUP)); then
  run "$PYTHON" -m venv .venv
  run .venv/bin/python -m pip install -q -r requirements.txt
  run .venv/bin/python -m pip install -q -U "jax[cuda13]==$JAX_VERSION"
fi
[[ -n $CONFIG ]] || exit 0
if ((!DRY_RUN)) && [[ ! -x .venv/bin/python ]]; then
  usage_error "no .venv in $REPO_ROOT" "run $PROG --setup once"
fi
MAIN=(.venv/bin/python -m main --config "$CONFIG" --workdir "$WORKDIR")
if [[ -n $DATA_DIR ]]; then MAIN+=("--config.dataset.data_dir=$DATA_DIR"); fi
run env "TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}" "${MAIN[@]}" "${EXTRA[@]}"
