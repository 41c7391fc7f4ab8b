#!/usr/bin/python3
"""The runtime against its PyTorch reference (tools/train/taskmoe_ref) on the same checkpoint and the
same inputs: target tokens/s of each, the ratio, and token agreement. One thread on both sides
(torch.set_num_threads(1), OPENBLAS/OMP_NUM_THREADS=1; run it under `taskset -c 1`).

    taskset -c 1 /usr/bin/python3 benchmarks/bench_vs_pytorch.py --checkpoint models/demo \\
        --bench-decode build/release/benchmarks/bench_decode --tasks en-de,de-en --n 100

Inputs: the first --n test sentences of each task (../shared/corpus/en-XX.test.tsv, the source
side), tokenized once with the checkpoint's SentencePiece model and sorted by length, so both
sides see identical batches. Configurations: greedy and beam 4 (length penalty 1.0), batch 1 and
32, max 128 tokens. Timing is the median of --reps passes; target tokens exclude EOS and are
counted from each side's own output. The C++ side runs the full checkpoint (float32, the same
weights as PyTorch) by default; --model-dir DIR with <task>.tmoe files times extracted files instead.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=os.path.join(ROOT, "models", "demo"))
    p.add_argument("--bench-decode", default=os.path.join(ROOT, "build", "release", "benchmarks", "bench_decode"))
    p.add_argument("--model-dir", default="", help="time <dir>/<task>.tmoe instead of the full checkpoint")
    p.add_argument("--corpus", default=os.path.normpath(os.path.join(ROOT, "..", "shared", "corpus")))
    p.add_argument("--tasks", default="", help="comma-separated (default: the first two tasks)")
    p.add_argument("--n", type=int, default=100, help="test sentences per task")
    p.add_argument("--beams", default="1,4")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--torch-reps", type=int, default=1, help="passes on the (slow) PyTorch side")
    a = p.parse_args()

    if not os.path.isfile(os.path.join(a.checkpoint, "config.json")):
        sys.exit(f"bench_vs_pytorch.py: {a.checkpoint} is missing (models/demo is committed by the trainer; "
                 "pass --checkpoint DIR)")
    if not os.access(a.bench_decode, os.X_OK):
        sys.exit(f"bench_vs_pytorch.py: {a.bench_decode} is missing: cmake --build BUILD --target bench_decode")
    import torch
    torch.set_num_threads(1)
    import sentencepiece as spm
    from taskmoe_ref.checkpoint_io import load_checkpoint
    from taskmoe_ref.data import corpus_file, read_tsv, task_pairs
    from taskmoe_ref import decode

    model = load_checkpoint(a.checkpoint)
    cfg = model.cfg
    eos = cfg.model.eos_id
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.checkpoint, "sentencepiece.model"))
    tasks = [t for t in cfg.tasks if (t.name in a.tasks.split(",") if a.tasks else True)]
    if not a.tasks:
        tasks = tasks[:2]
    print(f"machine: {cpu_model()} | torch {torch.__version__}, {torch.get_num_threads()} thread | "
          f"C++ {a.bench_decode} | checkpoint {a.checkpoint} | {a.n} sentences per task")
    tmp = tempfile.mkdtemp(prefix="taskmoe-vs-pytorch-")
    rows = []
    for t in tasks:
        xx = t.target if t.source == "en" else t.source
        src, _ = task_pairs(read_tsv(corpus_file(a.corpus, xx, "test"), a.n), t)
        pieces = sorted((sp.encode(s)[: cfg.model.max_positions - 2] for s in src), key=len)
        ids_file = os.path.join(tmp, f"{t.name}.ids")
        with open(ids_file, "w") as f:
            f.write("".join(" ".join(map(str, x)) + "\n" for x in pieces))
        tag = sp.piece_to_id(cfg.target_tags[t.target])
        full = [[tag] + x + [eos] for x in pieces]
        for beam in [int(b) for b in a.beams.split(",")]:
            for batch in [int(b) for b in a.batches.split(",")]:
                # PyTorch reference.
                times, ref = [], []
                for _ in range(a.torch_reps):
                    ref = []
                    t0 = time.perf_counter()
                    for i in range(0, len(full), batch):
                        part = full[i:i + batch]
                        if beam == 1:
                            hyps = decode.greedy(model, part, [t.name] * len(part), max_len=a.max_len)
                        else:
                            hyps = [h[0] for h in decode.beam_search(model, part, [t.name] * len(part), beam_size=beam,
                                                                     length_penalty=1.0, max_len=a.max_len)]
                        ref += [[x for x in h.tokens if x != eos] for h in hyps]
                    times.append(time.perf_counter() - t0)
                torch_s = statistics.median(times)
                torch_tok = sum(len(x) for x in ref)
                # C++ runtime.
                out_file = os.path.join(tmp, f"{t.name}.b{beam}.n{batch}.out")
                cmd = [a.bench_decode, "--input", ids_file, "--output", out_file, "--beam", str(beam),
                       "--batch-size", str(batch), "--max-length", str(a.max_len), "--reps", str(a.reps)]
                cmd += ["--model", os.path.join(a.model_dir, t.name + ".tmoe")] if a.model_dir else \
                       ["--checkpoint", a.checkpoint, "--task", t.name]
                res = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                cpp_s = float(res.split("seconds ")[1].split()[0])
                ours = [[int(x) for x in line.split()] for line in open(out_file).read().split("\n")[: len(full)]]
                cpp_tok = sum(len(x) for x in ours)
                same = sum(1 for x, y in zip(ours, ref) if x == y)
                rows.append((t.name, beam, batch, torch_tok / torch_s, cpp_tok / cpp_s,
                             (cpp_tok / cpp_s) / (torch_tok / torch_s), same, len(full)))
                r = rows[-1]
                print(f"{r[0]:6s} beam {r[1]} batch {r[2]:3d}: PyTorch {r[3]:8.1f} tok/s, taskmoe {r[4]:8.1f} tok/s, "
                      f"ratio {r[5]:6.1f}x, identical {r[6]}/{r[7]}", flush=True)
    print()
    print("| task | beam | batch | PyTorch tok/s | taskmoe tok/s | ratio | identical outputs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f}x | {r[6]}/{r[7]} |")
    for beam in sorted({r[1] for r in rows}):
        for batch in sorted({r[2] for r in rows}):
            rs = [r[5] for r in rows if r[1] == beam and r[2] == batch]
            print(f"median ratio, beam {beam}, batch {batch}: {statistics.median(rs):.1f}x")


if __name__ == "__main__":
    main()
