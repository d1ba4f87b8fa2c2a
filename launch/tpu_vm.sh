#!/usr/bin/env bash
# Train on a Cloud TPU VM (any slice, single- or multi-host), run from your workstation:
# `gcloud compute tpus tpu-vm ssh --worker=all` runs the same command on every worker, and
# each process joins the others through jax.distributed.initialize() (main.py --multiprocess).
#
# Usage: launch/tpu_vm.sh [--dry-run] [--setup] --tpu NAME --zone ZONE [--project PROJECT]
#                         [--repo_dir DIR] [--python PY] --config FILE[:METHOD]
#                         --workdir DIR [--data_dir DIR] [-- MAIN_PY_FLAGS...]
#
#   --tpu NAME, --zone ZONE, --project PROJECT   the TPU VM (gcloud's default project if unset)
#   --repo_dir DIR          the checkout on the workers (default alignmix_jax, relative
#                           paths are relative to the home directory)
#   --setup                 first copy this checkout (git's tracked and untracked, non-ignored
#                           files) to every worker, create .venv there and install
#                           requirements.txt and jax[tpu] (--config is then optional)
#   --python PY             interpreter that --setup creates .venv with (default python3;
#                           requirements.txt needs Python 3.11 or 3.12)
#   --config FILE[:METHOD]  config file (and method), relative to the checkout
#   --workdir DIR           on a multi-host slice a filesystem all workers mount at the same
#                           path (e.g. Filestore NFS): the processes write one checkpoint
#                           together (a local path works on a single-host TPU VM only;
#                           gs:// paths are not supported for the workdir)
#   --data_dir DIR          sets --config.dataset.data_dir; a gs:// tfds data_dir is read
#                           directly; a local path must hold the data on every worker
#   --dry-run               print the commands, one per line, and run nothing
#   -- FLAGS...             passed to main.py on every worker
#
# The run lasts as long as the ssh session: start it inside tmux or screen. A run that is
# cut off resumes from its last checkpoint when the same command is run again.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TPU='' ZONE='' PROJECT='' REMOTE_DIR=alignmix_jax PYTHON=python3 SETUP=0
CONFIG='' WORKDIR='' DATA_DIR='' EXTRA=()
while (($#)); do
  case ${1%%=*} in
    --tpu) take_value "$@"; TPU=$VALUE ;;
    --zone) take_value "$@"; ZONE=$VALUE ;;
    --project) take_value "$@"; PROJECT=$VALUE ;;
    --repo_dir) take_value "$@"; REMOTE_DIR=${VALUE#\~/} ;;
    --python) take_value "$@"; PYTHON=$VALUE ;;
    --setup) no_value "$1"; SETUP=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) common_option "$@" ||
         usage_error "unknown argument $1" "main.py flags go after --, e.g. -- --config.seed=1" ;;
  esac
  shift "$TAKEN"
done
require "$TPU" --tpu NAME
require "$ZONE" --zone ZONE
if ((!SETUP)) || [[ -n $CONFIG ]]; then
  require "$CONFIG" --config configs/imagenet_resnet50.py
  require "$WORKDIR" --workdir /mnt/shared/runs/NAME
  check_workdir "$WORKDIR"
fi

WORKERS=(--zone "$ZONE" --worker=all ${PROJECT:+"--project=$PROJECT"})
if ((SETUP)); then
  TARBALL=${TMPDIR:-/tmp}/alignmix_jax_launch.tgz
  run_shell "git -C $(quote "$REPO_ROOT") ls-files -z --cached --others --exclude-standard \
| tar -C $(quote "$REPO_ROOT") --null -T - -czf $(quote "$TARBALL")"
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU:alignmix_jax_launch.tgz" "${WORKERS[@]}"
  run gcloud compute tpus tpu-vm ssh "$TPU" "${WORKERS[@]}" --command "$(quote mkdir -p "$REMOTE_DIR") \
&& $(quote tar -xzf alignmix_jax_launch.tgz -C "$REMOTE_DIR") && rm alignmix_jax_launch.tgz \
&& $(quote cd "$REMOTE_DIR") && $(quote "$PYTHON" -m venv .venv) \
&& .venv/bin/python -m pip install -q -r requirements.txt \
&& $(quote .venv/bin/python -m pip install -q -U "jax[tpu]==$JAX_VERSION")"
fi
[[ -n $CONFIG ]] || exit 0
MAIN=(.venv/bin/python -m main --config "$CONFIG" --workdir "$WORKDIR")
if [[ -n $DATA_DIR ]]; then MAIN+=("--config.dataset.data_dir=$DATA_DIR"); fi
MAIN+=(--multiprocess ${EXTRA[@]+"${EXTRA[@]}"})  # (an empty array is unset in bash 3.2)
run gcloud compute tpus tpu-vm ssh "$TPU" "${WORKERS[@]}" --command "$(quote cd "$REMOTE_DIR") \
&& $(quote env "TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}" "${MAIN[@]}")"
