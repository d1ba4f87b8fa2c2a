# shellcheck shell=bash disable=SC2034  # (TAKEN, CONFIG, ...: used by the sourcing scripts)
# Helpers shared by the launch scripts; sourced by them, not run.
#
# Conventions: options are `--name VALUE` or `--name=VALUE`; usage errors exit with status 2
# and name the problem and its fix; with --dry-run the commands are printed, one per line and
# shell-quoted, and nothing is run. A script's --help is its leading comment block.

PROG=${0##*/}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=0
# The version pinned in requirements.txt, for the accelerator builds of jax.
JAX_VERSION=$(sed -n 's/^jax==//p' "$REPO_ROOT/requirements.txt")

show_help() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

# usage_error PROBLEM [FIX]
usage_error() {
  printf '%s: error: %s\n' "$PROG" "$1" >&2
  if (($# > 1)); then printf '%s: fix: %s\n' "$PROG" "$2" >&2; fi
  printf 'Run %s --help for the usage.\n' "$0" >&2
  exit 2
}

# take_value "$@": the value of the option in $1 (`--opt VALUE` or `--opt=VALUE`) into VALUE,
# and into TAKEN the number of arguments to shift.
take_value() {
  if [[ $1 == --*=* ]]; then
    VALUE=${1#*=}
    TAKEN=1
  elif (($# < 2)) || [[ $2 == --* ]]; then
    usage_error "$1 needs a value" "give it as $1 VALUE or $1=VALUE"
  else
    VALUE=$2
    TAKEN=2
  fi
  [[ -n $VALUE ]] || usage_error "${1%%=*} needs a non-empty value"
}

# no_value OPTION: for flags without a value; sets TAKEN.
no_value() {
  [[ $1 != *=* ]] || usage_error "${1%%=*} takes no value" "write ${1%%=*} alone"
  TAKEN=1
}

# common_option "$@": the options every script takes (--config, --workdir, --data_dir,
# --dry-run, --help), into CONFIG, WORKDIR, DATA_DIR, DRY_RUN; sets TAKEN. Returns 1 for
# any other option.
common_option() {
  case ${1%%=*} in
    --config) take_value "$@"; CONFIG=$VALUE ;;
    --workdir) take_value "$@"; WORKDIR=$VALUE ;;
    --data_dir) take_value "$@"; DATA_DIR=$VALUE ;;
    --dry-run) no_value "$1"; DRY_RUN=1 ;;
    -h | --help) show_help; exit 0 ;;
    *) return 1 ;;
  esac
}

# require VALUE OPTION EXAMPLE: fail if a required option was not given.
require() {
  [[ -n $1 ]] || usage_error "missing $2" "add $2 $3"
}

# check_workdir DIR: main.py creates and writes its workdir (checkpoints, metrics) through
# the local filesystem, so a gs:// path would end up as a local folder named gs:.
check_workdir() {
  [[ $1 != gs://* ]] || usage_error "--workdir $1: main.py writes the workdir through the \
local filesystem and cannot write to a bucket" "give a local path, or for several hosts a \
filesystem they all mount (NFS)"
}

# quote ARGS...: the arguments as one line a POSIX shell reads back as the same arguments.
quote() {
  local arg words=() safe='^[A-Za-z0-9_./:=@%+,-]+$' escaped="'\\''"
  for arg in "$@"; do
    if [[ $arg =~ $safe ]]; then
      words+=("$arg")
    else
      words+=("'${arg//\'/$escaped}'")
    fi
  done
  printf '%s\n' "${words[*]}"
}

# run ARGS...: print the command (to stdout with --dry-run, else to stderr after `+ `) and,
# without --dry-run, run it.
run() {
  if ((DRY_RUN)); then
    quote "$@"
  else
    printf '+ %s\n' "$(quote "$@")" >&2
    "$@"
  fi
}

# run_shell LINE: as run, for a command line that needs a shell (a pipeline).
run_shell() {
  if ((DRY_RUN)); then
    printf '%s\n' "$1"
  else
    printf '+ %s\n' "$1" >&2
    bash -o pipefail -c "$1"
  fi
}

# write_file PATH TEXT: write TEXT to PATH; with --dry-run print the equivalent here-document.
write_file() {
  if ((DRY_RUN)); then
    printf "cat > %s <<'EOF'\n%s\nEOF\n" "$(quote "$1")" "$2"
  else
    printf '+ writing %s\n' "$1" >&2
    printf '%s\n' "$2" >"$1"
  fi
}
