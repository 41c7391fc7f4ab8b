#!/usr/bin/env bash
# TaskMoE vs TokenMoE vs dense at one small controlled budget (BENCHMARKS.md section 5): same shapes,
# recipe, vocabulary (models/demo's) and seed, so the three see the identical 300 batches.
#   tools/train/compare.sh            (env: STEPS=300, RUN_DIR=runs; runs the three in parallel, nice 19)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${RUN_DIR:-runs}
STEPS=${STEPS:-300}
common=(--langs de,fr,es,ru --vocab-size 8000 --d-model 128 --heads 4 --d-ff 512 --d-ff-expert 256
        --encoder-layers 4 --decoder-layers 4 --experts 8 --top-k 2 --task-dim 32 --max-tokens 4096 --lr 2e-3
        --warmup 60 --max-steps "$STEPS" --eval-every $((STEPS / 2)) --eval-bleu 0 --average-last 1 --amp bf16
        --threads 1 --export-dtype float16)
for r in task:target token dense; do
  d="$R/cmp-${r%%:*}"
  mkdir -p "$d" && cp -n models/demo/sentencepiece.model "$d/"
  OPENBLAS_NUM_THREADS=1 nice -n 19 /usr/bin/python3 tools/train/train.py --run-dir "$d" --export "$d/export" \
    --encoder-routing "$r" --decoder-routing "$r" "${common[@]}" > "$d/out.txt" 2>&1 &
done
wait
for r in task token dense; do
  CHECKPOINT="$R/cmp-$r/export" LIMIT=200 BEAMS=1 QUANT=float32 tools/train/eval_cli.sh "build/eval-cmp-$r"
done
