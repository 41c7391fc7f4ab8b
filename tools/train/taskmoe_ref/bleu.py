"""Corpus BLEU (sacreBLEU-compatible: 13a tokenisation, 'exp' smoothing, one reference) and chrF
(sacreBLEU's chrF2: character 6-grams, beta 2, whitespace ignored).

Written here because the machines have no sacrebleu package; tests/test_bleu.py checks it on
hand-computed cases. Usage: python3 -m taskmoe_ref.bleu HYP_FILE REF_FILE
"""
from __future__ import annotations

import math
import re
import sys
from collections import Counter
from typing import List, Sequence, Tuple

_13A = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),                # period/comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),                # period/comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),                     # dash after a digit
]


def tokenize_13a(line: str) -> str:
    """mteval-v13a tokenisation as sacreBLEU implements it."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for rx, repl in _13A:
        line = rx.sub(repl, line)
    return " ".join(line.split())


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu_stats(hyp: str, ref: str, order: int = 4) -> List[int]:
    """[hyp_len, ref_len, correct_1..order, total_1..order] for one segment."""
    h, r = tokenize_13a(hyp).split(), tokenize_13a(ref).split()
    correct, total = [], []
    for n in range(1, order + 1):
        hn, rn = _ngrams(h, n), _ngrams(r, n)
        correct.append(sum(min(c, rn[g]) for g, c in hn.items()))
        total.append(max(0, len(h) - n + 1))
    return [len(h), len(r)] + correct + total


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], order: int = 4) -> Tuple[float, dict]:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    stats = [0] * (2 + 2 * order)
    for h, r in zip(hyps, refs):
        stats = [a + b for a, b in zip(stats, bleu_stats(h, r, order))]
    hyp_len, ref_len = stats[0], stats[1]
    correct, total = stats[2:2 + order], stats[2 + order:]
    if not any(correct):  # sacreBLEU returns 0 before smoothing when nothing matches
        return 0.0, {"precisions": [0.0] * order, "bp": 0.0, "hyp_len": hyp_len, "ref_len": ref_len}
    precisions, smooth = [], 1.0
    for c, t in zip(correct, total):
        if t == 0:
            precisions.append(0.0)
        elif c == 0:      # sacreBLEU 'exp' smoothing
            smooth *= 2
            precisions.append(100.0 / (smooth * t))
        else:
            precisions.append(100.0 * c / t)
    if hyp_len == 0 or min(precisions) <= 0:
        return 0.0, {"precisions": precisions, "bp": 0.0, "hyp_len": hyp_len, "ref_len": ref_len}
    bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    score = bp * math.exp(sum(math.log(p) for p in precisions) / order)
    return score, {"precisions": precisions, "bp": bp, "hyp_len": hyp_len, "ref_len": ref_len}


def _char_ngrams(s: str, n: int) -> Counter:
    s = "".join(s.split())
    return Counter(s[i:i + n] for i in range(len(s) - n + 1))


def corpus_chrf(hyps: Sequence[str], refs: Sequence[str], order: int = 6, beta: float = 2.0) -> float:
    """chrF with statistics summed over the corpus, then the per-order F-scores averaged."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    stats = [0] * (3 * order)
    for h, r in zip(hyps, refs):
        for n in range(1, order + 1):
            hn, rn = _char_ngrams(h, n), _char_ngrams(r, n)
            stats[3 * (n - 1)] += sum(hn.values())
            stats[3 * (n - 1) + 1] += sum(rn.values())
            stats[3 * (n - 1) + 2] += sum(min(c, rn[g]) for g, c in hn.items())
    eps, factor, score, effective = 1e-16, beta ** 2, 0.0, 0
    for n in range(order):
        n_hyp, n_ref, n_match = stats[3 * n: 3 * n + 3]
        prec = n_match / n_hyp if n_hyp > 0 else eps
        rec = n_match / n_ref if n_ref > 0 else eps
        denom = factor * prec + rec
        score += (1 + factor) * prec * rec / denom if denom > 0 else eps
        effective += 1 if n_hyp > 0 and n_ref > 0 else 0
    return 100.0 * score / effective if effective else 0.0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python3 -m taskmoe_ref.bleu HYPOTHESES REFERENCES", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        hyps = f.read().split("\n")
    with open(argv[1], encoding="utf-8") as f:
        refs = f.read().split("\n")
    if hyps and hyps[-1] == "" and refs and refs[-1] == "":
        hyps, refs = hyps[:-1], refs[:-1]
    b, info = corpus_bleu(hyps, refs)
    print(f"BLEU {b:.2f} chrF {corpus_chrf(hyps, refs):.2f} "
          f"(BP {info['bp']:.3f}, hyp_len {info['hyp_len']}, ref_len {info['ref_len']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
