#!/usr/bin/env bash
# One LlamaGate inference worker per visible NVIDIA GPU on this machine, each pinned to its GPU
# with CUDA_VISIBLE_DEVICES and given its own metrics port. Run it on every GPU machine, with the
# same LLAMAGATE_BROKER_URL, LLAMAGATE_REDIS_URL and LLAMAGATE_WORKER_MODELS everywhere.
# Stops every worker it started on SIGINT/SIGTERM.
set -euo pipefail
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader) || { echo "nvidia-smi found no GPU" >&2; exit 1; }
: "${LLAMAGATE_MAX_BATCH_SIZE:=128}"
base_port=${LLAMAGATE_WORKER_METRICS_PORT:-9101}
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM
for gpu in $gpus; do
  CUDA_VISIBLE_DEVICES=$gpu LLAMAGATE_MAX_BATCH_SIZE=$LLAMAGATE_MAX_BATCH_SIZE \
    LLAMAGATE_WORKER_METRICS_PORT=$((base_port + gpu)) llamagate worker &
  pids+=($!)
  echo "worker for GPU $gpu: pid $!"
done
wait
