#!/usr/bin/env bash
# Reproduces the demo model (models/demo) from scratch, in the two stages it was trained in
# (budgets in models/demo/README.md). Resumable: rerun after an interruption.
#   stage 1: 1,312 steps from scratch (fp32; 1.24 h on one AVX2 core), exported to runs/demo-stage1/export
#   stage 2: continues from those weights (fresh optimizer, new warm-up) for STAGE2_HOURS of training
#            time on one core (bf16 where the CPU has AVX512-BF16/AMX: --amp auto), averages the last
#            3 snapshots and exports float16 to runs/demo/export.
#   stage 3: the same from stage 2's export with a new data seed for STAGE3_HOURS, exported
#            float16 to models/demo.
# Under torchrun (tools/train/README.md) both stages run data-parallel unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=(--langs de,fr,es,ru --vocab-size 8000 --d-model 256 --heads 4 --d-ff 1024 --d-ff-expert 512
      --encoder-layers 4 --decoder-layers 4 --experts 8 --top-k 2 --task-dim 64
      --encoder-routing task:target --decoder-routing task:target --max-tokens 4096 --threads 1)
S1="${RUN_DIR:-runs}/demo-stage1"
if [ ! -f "$S1/export/model.safetensors" ]; then
  /usr/bin/python3 tools/train/train.py --run-dir "$S1" "${ARCH[@]}" --amp none --lr 1.5e-3 --warmup 600 \
    --max-steps 6000 --max-hours 1.5 --stop-at-step 1312 --average-last 1 --eval-bleu 0
  # --stop-at-step ends the invocation without exporting: export that state once
  /usr/bin/python3 tools/train/train.py --run-dir "$S1" "${ARCH[@]}" --amp none --lr 1.5e-3 --warmup 600 \
    --max-steps 1312 --max-hours 1.5 --average-last 1 --eval-bleu 0 --export "$S1/export" --export-dtype float16
fi
S2="${RUN_DIR:-runs}/demo"
if [ ! -f "$S2/export/model.safetensors" ]; then
  /usr/bin/python3 tools/train/train.py --run-dir "$S2" --init-from "$S1/export" \
    --export "$S2/export" "${ARCH[@]}" --lr 1e-3 --warmup 300 --max-steps 20000 --max-hours "${STAGE2_HOURS:-1.12}" \
    --eval-every 500 --eval-bleu 40 --average-last 3 --snapshot-minutes 5 --save-minutes 8 --export-dtype float16
fi
# stage 3: a new data seed (stage 2 reused stage 1's), a new warm-up and cosine over its budget.
exec /usr/bin/python3 tools/train/train.py --run-dir "${RUN_DIR:-runs}/demo-stage3" --init-from "$S2/export" \
  --export models/demo "${ARCH[@]}" --seed 3 --lr 7e-4 --warmup 200 --max-steps 20000 --max-hours "${STAGE3_HOURS:-1.85}" \
  --eval-every 500 --eval-bleu 40 --average-last 3 --snapshot-minutes 5 --save-minutes 8 --export-dtype float16 "$@"
