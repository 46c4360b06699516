#!/usr/bin/env bash
# Train with srun: GPUS tasks, GPUS_PER_NODE per node (gloo on nodes without CUDA).
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]
# A 4th argument that does not start with '-' is the work dir (mmdet style);
# otherwise every argument after CONFIG goes to train.py (mmseg style).
# Environment (as mmseg's): GPUS (4), GPUS_PER_NODE (4), CPUS_PER_TASK (5), SRUN_ARGS;
# GRES (gpu:$GPUS_PER_NODE) is srun's --gres: GRES=none on CPU-only clusters.
# PYTHON picks the interpreter (default: python).
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]" >&2
    exit 2
fi
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
PY_ARGS=()
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    PY_ARGS=(--work-dir="$1")
    shift
fi
PY_ARGS+=("$@")
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES:-gpu:${GPUS_PER_NODE}}
read -r -a SRUN_EXTRA <<< "${SRUN_ARGS:-}"
PYTHON=${PYTHON:-python}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="${TOOLS_DIR}/..${PYTHONPATH:+:${PYTHONPATH}}" \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres="${GRES}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    "${SRUN_EXTRA[@]}" \
    "${PYTHON}" -u "${TOOLS_DIR}/train.py" "${CONFIG}" --launcher=slurm "${PY_ARGS[@]}"
