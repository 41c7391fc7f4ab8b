#!/usr/bin/python3
"""BLEU and chrF per task of a checkpoint on ../shared/corpus/en-XX.test.tsv, with the PyTorch reference.

    /usr/bin/python3 tools/train/evaluate.py --checkpoint models/demo --beams 1,4 --json out.json

Also scores existing translations (e.g. from taskmoe-translate): --hyp-dir DIR with <task>.txt files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from taskmoe_ref.bleu import corpus_bleu, corpus_chrf  # noqa: E402
from taskmoe_ref.data import corpus_file, read_tsv, task_pairs  # noqa: E402


def test_set(corpus, task, limit=0):
    xx = task.target if task.source == "en" else task.source
    rows = read_tsv(corpus_file(corpus, xx, "test"), limit)
    return task_pairs(rows, task)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--corpus", default=os.path.normpath(os.path.join(here, "../../../shared/corpus")))
    p.add_argument("--tasks", default="", help="comma-separated (default: all tasks of the checkpoint)")
    p.add_argument("--beams", default="1,4")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--limit", type=int, default=0, help="first N test sentences per task (0: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="", help="write the scores here")
    p.add_argument("--save-hyps", default="", help="write <dir>/<task>.beam<N>.txt")
    p.add_argument("--hyp-dir", default="", help="score <dir>/<task>.txt instead of decoding")
    a = p.parse_args(argv)

    import torch
    torch.set_num_threads(a.threads)
    from taskmoe_ref.checkpoint_io import load_checkpoint
    from taskmoe_ref.config import Config
    with open(os.path.join(a.checkpoint, "config.json"), encoding="utf-8") as f:
        cfg = Config.from_json(f.read())
    tasks = [t for t in cfg.tasks if not a.tasks or t.name in a.tasks.split(",")]
    results = {}
    if a.hyp_dir:
        for t in tasks:
            src, ref = test_set(a.corpus, t, a.limit)
            with open(os.path.join(a.hyp_dir, f"{t.name}.txt"), encoding="utf-8") as f:
                hyp = f.read().split("\n")[: len(ref)]
            results[t.name] = {"bleu": corpus_bleu(hyp, ref)[0], "chrf": corpus_chrf(hyp, ref)}
            print(f"{t.name:8s} BLEU {results[t.name]['bleu']:6.2f} chrF {results[t.name]['chrf']:6.2f}", flush=True)
    else:
        import sentencepiece as spm
        from taskmoe_ref.decode import translate
        model = load_checkpoint(a.checkpoint)
        sp = spm.SentencePieceProcessor(model_file=os.path.join(a.checkpoint, "sentencepiece.model"))
        for beam in [int(b) for b in a.beams.split(",")]:
            for t in tasks:
                src, ref = test_set(a.corpus, t, a.limit)
                t0 = time.time()
                hyp = translate(model, sp, src, t.name, beam_size=beam, length_penalty=a.length_penalty,
                                max_len=a.max_len)
                dt = time.time() - t0
                r = {"bleu": corpus_bleu(hyp, ref)[0], "chrf": corpus_chrf(hyp, ref), "seconds": dt, "n": len(src)}
                results.setdefault(f"beam{beam}", {})[t.name] = r
                print(f"beam {beam} {t.name:8s} BLEU {r['bleu']:6.2f} chrF {r['chrf']:6.2f} ({dt:.0f} s)", flush=True)
                if a.save_hyps:
                    os.makedirs(a.save_hyps, exist_ok=True)
                    with open(os.path.join(a.save_hyps, f"{t.name}.beam{beam}.txt"), "w", encoding="utf-8") as f:
                        f.write("\n".join(hyp) + "\n")
            rs = results[f"beam{beam}"]
            print(f"beam {beam} mean     BLEU {sum(r['bleu'] for r in rs.values()) / len(rs):6.2f} "
                  f"chrF {sum(r['chrf'] for r in rs.values()) / len(rs):6.2f}", flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
