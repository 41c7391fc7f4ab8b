#!/usr/bin/env bash
# Reproduces the demo model (models/demo). Resumable: rerun after an interruption.
# About 2 hours on one core of the development machine (see models/demo/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 tools/train/train.py --run-dir "${RUN_DIR:-runs/demo}" --export models/demo \
  --langs de,fr,es,ru --vocab-size 8000 --d-model 256 --heads 4 --d-ff 1024 --d-ff-expert 512 \
  --encoder-layers 4 --decoder-layers 4 --experts 8 --top-k 2 --task-dim 64 \
  --encoder-routing task:target --decoder-routing task:target \
  --max-tokens 4096 --lr 1.5e-3 --warmup 600 --max-steps 6000 --max-hours "${MAX_HOURS:-1.9}" \
  --threads 1 --export-dtype float16 "$@"
