#!/usr/bin/env bash
# The paper's comparison at paper size on random weights (BENCHMARKS.md, "Paper comparison").
# Generates the checkpoints (d_model 512, ff 2048, 6+6 layers, MoE in layers 1,3,5 of each stack,
# 32 experts, top-2, vocab 32k; ~1.8 GB each) unless present, extracts the TaskMoE en-de
# subnetwork at float32 and int8 (and the TokenMoE model at int8, to separate the int8 gain from
# the extraction gain), then runs bench_paper once per model in its own process (so peak RSS is
# the model's own), pinned to one core, and plots throughput against batch size.
#
#   benchmarks/run_paper.sh [BUILD_DIR] [OUT_DIR]     (defaults: build/release, build/paper)
#   env: WORK (checkpoints; default /tmp/taskmoe-paper), CPU (core to pin; default 1),
#        REPS (default 3), BATCHES (default 1,4,16,64,256)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
OUT=${2:-build/paper}
WORK=${WORK:-/tmp/taskmoe-paper}
CPU=${CPU:-1}
REPS=${REPS:-3}
BATCHES=${BATCHES:-1,4,16,64,256}
for b in bench_paper; do
  [ -x "$BUILD/benchmarks/$b" ] || { echo "run_paper.sh: $BUILD/benchmarks/$b is missing; build it: cmake --build $BUILD --target $b taskmoe-convert" >&2; exit 1; }
done
CONVERT=$BUILD/tools/taskmoe-convert
mkdir -p "$WORK" "$OUT"
for r in token task:target dense; do
  n=${r%%:*}
  [ -f "$WORK/$n/model.safetensors" ] || /usr/bin/python3 tools/make_random_checkpoint.py "$WORK/$n" --routing "$r"
done
[ -f "$WORK/task-f32.tmoe" ] || "$CONVERT" --checkpoint "$WORK/task" --task en-de --quantization float32 --output "$WORK/task-f32.tmoe"
[ -f "$WORK/task-int8.tmoe" ] || "$CONVERT" --checkpoint "$WORK/task" --task en-de --quantization int8 --output "$WORK/task-int8.tmoe"
[ -f "$WORK/token-int8.tmoe" ] || "$CONVERT" --checkpoint "$WORK/token" --task en-de --quantization int8 --output "$WORK/token-int8.tmoe"

CSV=$OUT/paper.csv
rm -f "$CSV"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
run() {  # run LABEL ARGS...
  local label=$1; shift
  taskset -c "$CPU" "$BUILD/benchmarks/bench_paper" --label "$label" --batches "$BATCHES" --reps "$REPS" \
    --length 30 --source-length 20 --csv "$CSV" "$@" | tee "$OUT/$label.txt"
}
run tokenmoe --checkpoint "$WORK/token" --task en-de
run tokenmoe-int8 --model "$WORK/token-int8.tmoe"
run dense --checkpoint "$WORK/dense" --task en-de
run taskmoe-f32 --model "$WORK/task-f32.tmoe"
run taskmoe-int8 --model "$WORK/task-int8.tmoe"
/usr/bin/python3 benchmarks/plot_paper.py "$CSV" "$OUT/paper.png" | tee "$OUT/paper.md"
