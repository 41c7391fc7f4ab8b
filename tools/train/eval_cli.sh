#!/usr/bin/env bash
# BLEU/chrF per task of a checkpoint through the C++ runtime (much faster than evaluate.py):
# extract every task (taskmoe-convert), translate the split's sources with taskmoe-translate, score
# with tools/train/taskmoe_ref/bleu.py (the code evaluate.py uses; same rows as evaluate.py).
#
#   tools/train/eval_cli.sh OUT_DIR
#   env: CHECKPOINT (models/demo), SPLIT (test|dev), LIMIT (first N pairs per task; 0 = all),
#        QUANT ("float32 int8"), BEAMS ("1 4"), LP (length penalty, 1.0), BUILD (build/release)
# Writes OUT_DIR/scores.tsv: quant beam lp task n bleu chrf tokens_per_s
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: eval_cli.sh OUT_DIR}
CK=${CHECKPOINT:-models/demo}
SPLIT=${SPLIT:-test}
LIMIT=${LIMIT:-0}
QUANT=${QUANT:-float32 int8}
BEAMS=${BEAMS:-1 4}
LP=${LP:-1.0}
BUILD=${BUILD:-build/release}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$OUT/src" "$OUT/ref"
/usr/bin/python3 - "$CK" "$OUT" "$SPLIT" "$LIMIT" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tools", "train"))
from taskmoe_ref.config import Config
from taskmoe_ref.data import read_tsv, task_pairs
ck, out, split, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = Config.from_json(open(os.path.join(ck, "config.json"), encoding="utf-8").read())
corpus = os.path.normpath(os.path.join(os.getcwd(), "..", "shared", "corpus"))
for t in cfg.tasks:
    xx = t.target if t.source == "en" else t.source
    src, ref = task_pairs(read_tsv(os.path.join(corpus, f"en-{xx}.{split}.tsv"), limit), t)
    for d, lines in (("src", src), ("ref", ref)):
        with open(os.path.join(out, d, t.name + ".txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
PY
tasks=$(cd "$OUT/src" && ls *.txt | sed 's/\.txt$//')
: >"$OUT/scores.tsv"
for q in $QUANT; do
  mkdir -p "$OUT/$q"
  "$BUILD/tools/taskmoe-convert" --checkpoint "$CK" --all-tasks --quantization "$q" --output-dir "$OUT/$q" --force --quiet
  for b in $BEAMS; do
    h="$OUT/hyp-$q-beam$b-lp$LP"
    mkdir -p "$h"
    for t in $tasks; do
      "$BUILD/examples/taskmoe-translate" --model "$OUT/$q/$t.tmoe" --beam "$b" --length-penalty "$LP" \
        --max-length 128 --batch-size 32 --quiet --verbose -i "$OUT/src/$t.txt" -o "$h/$t.txt" 2>"$h/$t.log"
    done
    /usr/bin/python3 - "$OUT" "$h" "$q" "$b" "$LP" $tasks >>"$OUT/scores.tsv" <<'PY'
import os, re, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tools", "train"))
from taskmoe_ref.bleu import corpus_bleu, corpus_chrf
out, h, q, b, lp, tasks = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
for t in tasks:
    ref = open(os.path.join(out, "ref", t + ".txt"), encoding="utf-8").read().split("\n")[:-1]
    hyp = open(os.path.join(h, t + ".txt"), encoding="utf-8").read().split("\n")[: len(ref)]
    m = re.search(r"([0-9.]+) tokens/s", open(os.path.join(h, t + ".log"), encoding="utf-8").read())
    print(f"{q}\t{b}\t{lp}\t{t}\t{len(ref)}\t{corpus_bleu(hyp, ref)[0]:.2f}\t{corpus_chrf(hyp, ref):.2f}\t{m.group(1) if m else '?'}")
PY
  done
done
cat "$OUT/scores.tsv"
