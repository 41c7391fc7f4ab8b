#!/usr/bin/env python3
"""Build a target-vocabulary shortlist (CTranslate2's vmap.txt format, which taskmoe reads with
translator_options::vocabulary_map / taskmoe-translate --vocabulary-map) from a parallel corpus.

Each source piece s gets the target pieces t that co-occur with it in the same sentence pair
most often relative to chance: ranked by c(s, t)^2 / (c(s) c(t)) (sentence counts; Dice-like, so
pieces frequent everywhere do not crowd out the translations), at least --min-count
co-occurrences, at most --per-source of them. The --frequent most common target pieces go to the
line with an empty source: always candidates.

    /usr/bin/python3 tools/make_vocabulary_map.py --sentencepiece models/demo/sentencepiece.model \\
        --corpus ../shared/corpus/en-de.train.tsv.xz --output models/demo/en-de.vmap.txt

The corpus is a TSV (source<TAB>target; .xz or .gz read directly). Unigram rules only.
"""
import argparse
import collections
import gzip
import lzma
import os
import sys
import tempfile


def open_text(path):
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentencepiece", required=True, help="the model's SentencePiece model")
    ap.add_argument("--corpus", required=True, help="parallel TSV: source<TAB>target per line")
    ap.add_argument("--output", required=True)
    ap.add_argument("--frequent", type=int, default=300, help="most common target pieces, always candidates")
    ap.add_argument("--per-source", type=int, default=30, help="target pieces kept per source piece")
    ap.add_argument("--min-count", type=int, default=2, help="co-occurrences a pair needs")
    ap.add_argument("--max-lines", type=int, default=0, help="read at most this many pairs (0: all)")
    args = ap.parse_args()
    try:
        import sentencepiece as spm
    except ImportError:
        sys.exit("make_vocabulary_map.py: needs the sentencepiece module (Debian: python3-sentencepiece)")
    sp = spm.SentencePieceProcessor(model_file=args.sentencepiece)
    c_src, c_tgt, c_pair = collections.Counter(), collections.Counter(), collections.Counter()
    pairs = 0
    with open_text(args.corpus) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 2 or not cols[0].strip() or not cols[1].strip():
                continue
            src, tgt = set(sp.encode(cols[0], out_type=str)), set(sp.encode(cols[1], out_type=str))
            c_src.update(src)
            c_tgt.update(tgt)
            c_pair.update((s, t) for s in src for t in tgt)
            pairs += 1
            if args.max_lines and pairs >= args.max_lines:
                break
    if pairs == 0:
        sys.exit(f"make_vocabulary_map.py: no sentence pairs in {args.corpus}")
    always = [t for t, _ in c_tgt.most_common(args.frequent)]
    fixed = set(always)
    by_source = collections.defaultdict(list)
    for (s, t), n in c_pair.items():
        if n >= args.min_count and t not in fixed:
            by_source[s].append((n * n / (c_src[s] * c_tgt[t]), t))
    # Written to a temporary file beside the output, then renamed: no half-written map.
    out_dir = os.path.dirname(os.path.abspath(args.output))
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".vmap-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\t" + " ".join(always) + "\n")
            for s in sorted(by_source):
                best = [t for _, t in sorted(by_source[s], key=lambda x: (-x[0], x[1]))[: args.per_source]]
                out.write(s + "\t" + " ".join(best) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, args.output)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"{args.output}: {pairs} pairs, {len(always)} always, {len(by_source)} source pieces "
          f"(at most {args.per_source} targets each)")


if __name__ == "__main__":
    main()
