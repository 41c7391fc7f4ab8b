#!/usr/bin/env bash
# Quality next to speed: BLEU and chrF of the demo model per task, extracted at float32 and int8,
# translated with taskmoe-translate (beam 4, length penalty 1.0, max 128 tokens, as the trainer's
# evaluate.py decodes) and scored by tools/train/evaluate.py --hyp-dir (the same test sentences,
# BLEU and chrF implementation as the reference evaluation). One thread, pinned.
#
#   benchmarks/bleu_demo.sh [BUILD_DIR] [OUT_DIR]        (defaults: build/release, build/bleu)
#   env: CHECKPOINT (default models/demo), LIMIT (first N test sentences per task; 0 = all),
#        BEAM (default 4), CPU (core to pin; default 1), EMBEDDINGS (taskmoe-convert --embeddings
#        for the int8 files; default: the converter's), INT8_WEIGHTS (taskmoe-translate
#        --int8-weights for them: auto, full or narrow; default auto)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
OUT=${2:-build/bleu}
CK=${CHECKPOINT:-models/demo}
LIMIT=${LIMIT:-0}
BEAM=${BEAM:-4}
CPU=${CPU:-1}
INT8_WEIGHTS=${INT8_WEIGHTS:-auto}
if [ ! -f "$CK/config.json" ]; then
  echo "bleu_demo.sh: $CK is missing (models/demo is the trained demo checkpoint; set CHECKPOINT=DIR for another)" >&2
  exit 1
fi
for b in tools/taskmoe-convert examples/taskmoe-translate; do
  [ -x "$BUILD/$b" ] || { echo "bleu_demo.sh: $BUILD/$b is missing; build it first (scripts/demo.sh builds both)" >&2; exit 1; }
done
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$OUT/src"
# The test sources exactly as evaluate.py selects them (rows with both sides non-empty).
/usr/bin/python3 - "$CK" "$OUT/src" "$LIMIT" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tools", "train"))
import evaluate
from taskmoe_ref.config import Config
ck, out, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = Config.from_json(open(os.path.join(ck, "config.json"), encoding="utf-8").read())
corpus = os.path.normpath(os.path.join(os.getcwd(), "..", "shared", "corpus"))
for t in cfg.tasks:
    try:
        src, _ = evaluate.test_set(corpus, t, limit)
    except FileNotFoundError as e:
        print("bleu_demo.sh: skipping %s: %s" % (t.name, e), file=sys.stderr)
        continue
    with open(os.path.join(out, t.name + ".txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(src) + "\n")
PY
tasks=$(cd "$OUT/src" && ls *.txt | sed 's/\.txt$//' | tr '\n' ',' | sed 's/,$//')
for q in float32 int8; do
  mkdir -p "$OUT/$q" "$OUT/hyp-$q"
  convert=() translate=()
  if [ "$q" = int8 ]; then
    [ -n "${EMBEDDINGS:-}" ] && convert=(--embeddings "$EMBEDDINGS")
    translate=(--int8-weights "$INT8_WEIGHTS")
  fi
  "$BUILD/tools/taskmoe-convert" --checkpoint "$CK" --all-tasks --quantization "$q" --output-dir "$OUT/$q" --force --quiet "${convert[@]}"
  for t in ${tasks//,/ }; do
    taskset -c "$CPU" "$BUILD/examples/taskmoe-translate" --model "$OUT/$q/$t.tmoe" --beam "$BEAM" --max-length 128 \
      --batch-size 32 --quiet --verbose "${translate[@]}" -i "$OUT/src/$t.txt" -o "$OUT/hyp-$q/$t.txt" 2>"$OUT/hyp-$q/$t.log"
  done
  /usr/bin/python3 tools/train/evaluate.py --checkpoint "$CK" --tasks "$tasks" --limit "$LIMIT" \
    --hyp-dir "$OUT/hyp-$q" --json "$OUT/scores-$q.json" >/dev/null
done
/usr/bin/python3 - "$OUT" "$tasks" "$BEAM" <<'PY'
import json, os, re, sys
out, tasks, beam = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
s = {q: json.load(open(os.path.join(out, "scores-%s.json" % q))) for q in ("float32", "int8")}
def tps(q, t):
    m = re.search(r"([0-9.]+) tokens/s", open(os.path.join(out, "hyp-%s" % q, t + ".log")).read())
    return float(m.group(1)) if m else float("nan")
print("| task | BLEU f32 | BLEU int8 | chrF f32 | chrF int8 | tok/s f32 | tok/s int8 |")
print("| --- | --- | --- | --- | --- | --- | --- |")
rows = []
for t in tasks:
    r = [s["float32"][t]["bleu"], s["int8"][t]["bleu"], s["float32"][t]["chrf"], s["int8"][t]["chrf"],
         tps("float32", t), tps("int8", t)]
    rows.append(r)
    print("| %s | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f |" % (t, *r))
n = len(rows)
print("| mean | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f |" % tuple(sum(r[i] for r in rows) / n for i in range(6)))
print("(beam %s, 1 thread, batch 32, tokens/s from taskmoe-translate --verbose: translation only)" % beam)
PY
