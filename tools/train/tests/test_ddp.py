"""Data-parallel training under torchrun (2 local gloo processes) against 1 process, on a tiny model.

Run: /usr/bin/python3 -m unittest discover -s tools/train/tests -t tools/train/tests
Each case trains a tiny TaskMoE model for a few dozen steps (seconds).
"""
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(os.path.dirname(HERE), "train.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))

try:
    import torch
    import torch.distributed  # noqa: F401
    HAVE_DIST = torch.distributed.is_available()
except ImportError:  # pragma: no cover
    torch = None
    HAVE_DIST = False

try:
    import sentencepiece  # noqa: F401
except ImportError:  # pragma: no cover
    sentencepiece = None

WORDS = ("file window open close save document print page folder error network user text image "
         "list view menu tool help edit copy paste delete select find replace format table cell").split()


def make_corpus(d: str, rows: int = 600) -> None:
    rnd = random.Random(7)

    def de(w):  # a deterministic fake translation: reversed words, a suffix, reversed order
        return w[::-1] + "en"

    lines = []
    for _ in range(rows):
        en = [rnd.choice(WORDS) for _ in range(rnd.randint(2, 9))]
        lines.append(" ".join(en).capitalize() + ".\t" + " ".join(de(w) for w in reversed(en)).capitalize() + ".\tgettext\n")
    with lzma.open(os.path.join(d, "en-de.train.tsv.xz"), "wt", encoding="utf-8") as f:
        f.writelines(lines)
    for split in ("dev", "test"):
        with open(os.path.join(d, f"en-de.{split}.tsv"), "w", encoding="utf-8") as f:
            f.writelines(lines[:40])


TINY = ["--langs", "de", "--vocab-size", "96", "--d-model", "32", "--heads", "2", "--d-ff", "64",
        "--d-ff-expert", "32", "--encoder-layers", "2", "--decoder-layers", "2", "--experts", "4",
        "--top-k", "2", "--task-dim", "8", "--max-tokens", "480", "--lr", "3e-3", "--warmup", "5",
        "--log-every", "1", "--eval-every", "100000", "--eval-bleu", "0", "--amp", "none",
        "--average-last", "1", "--threads", "1"]


def ce_by_step(run_dir: str):
    out = {}
    with open(os.path.join(run_dir, "train.log"), encoding="utf-8") as f:
        for line in f:
            m = re.search(r" step (\d+) lr \S+ ce (\S+)", line)
            if m:
                out[int(m.group(1))] = float(m.group(2))
    return out


@unittest.skipIf(torch is None or not HAVE_DIST or sentencepiece is None,
                 "python3-torch (with torch.distributed) and python3-sentencepiece are needed for the "
                 "data-parallel trainer tests (scripts/install-deps.sh installs them)")
class DataParallelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="taskmoe-ddp-")
        cls.corpus = os.path.join(cls.tmp, "corpus")
        os.makedirs(cls.corpus)
        make_corpus(cls.corpus)
        # one vocabulary and encoded data for every run (as a resumed run would find them)
        cls.base = os.path.join(cls.tmp, "base")
        cls.train(cls.base, 1, ["--max-steps", "0"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def train(cls, run_dir, nproc, extra):
        os.makedirs(run_dir, exist_ok=True)
        if run_dir != cls.base and not os.path.exists(os.path.join(run_dir, "data.npz")):
            for f in ("sentencepiece.model", "data.npz"):
                shutil.copyfile(os.path.join(cls.base, f), os.path.join(run_dir, f))
        args = [TRAIN, "--corpus", cls.corpus, "--run-dir", run_dir] + TINY + extra
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        if nproc == 1:
            cmd = [sys.executable] + args
        else:
            # --redirects 2 --tee 2: torch 1.13's torchrun cannot parse its own default "0" under Python 3.11
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "--redirects", "2", "--tee", "2"] + args
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}")
        return r.stdout

    def test_two_ranks_match_one_process_resume_and_export(self):
        one = os.path.join(self.tmp, "one")
        two = os.path.join(self.tmp, "two")
        split = os.path.join(self.tmp, "split")
        export = os.path.join(self.tmp, "export")
        self.train(one, 1, ["--max-steps", "30"])
        out = self.train(two, 2, ["--max-steps", "30"])
        self.assertIn("data parallel: 2 ranks (gloo)", out)
        a, b = ce_by_step(one), ce_by_step(two)
        self.assertEqual(sorted(a), list(range(1, 31)))
        self.assertEqual(sorted(b), list(range(1, 31)))
        # same global batches and update: the curves agree within noise (float summation order,
        # and the balancing loss is computed per rank)
        for s in a:
            self.assertAlmostEqual(a[s], b[s], delta=0.02, msg=f"step {s}: 1 process {a[s]} vs 2 ranks {b[s]}")
        self.assertLess(a[30], a[1] - 0.5, "the tiny model should learn")

        # resume: 15 steps, stop, 15 more = 30 uninterrupted steps
        self.train(split, 2, ["--max-steps", "30", "--stop-at-step", "15"])
        out = self.train(split, 2, ["--max-steps", "30", "--export", export, "--export-dtype", "float32"])
        with open(os.path.join(split, "train.log"), encoding="utf-8") as f:
            self.assertIn("resumed from step 15", f.read())
        c = ce_by_step(split)
        for s in range(16, 31):
            self.assertAlmostEqual(b[s], c[s], delta=2e-3, msg=f"step {s}: uninterrupted {b[s]} vs resumed {c[s]}")

        # the exported checkpoint (written by rank 0 only) loads in the reference and converts
        from taskmoe_ref.checkpoint_io import load_checkpoint
        model = load_checkpoint(export)
        self.assertEqual([t.name for t in model.cfg.tasks], ["en-de", "de-en"])
        convert = os.path.join(ROOT, "build", "release", "tools", "taskmoe-convert")
        if not os.path.exists(convert):
            self.skipTest(f"{convert} is not built: conversion of the DDP export not checked "
                          "(cmake -S . -B build/release -G Ninja && ninja -C build/release)")
        tm = os.path.join(self.tmp, "tmoe")
        os.makedirs(tm)
        r = subprocess.run([convert, "--checkpoint", export, "--all-tasks", "--output-dir", tm,
                            "--quantization", "float32", "--verify", "2", "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(sorted(os.listdir(tm)), ["de-en.tmoe", "en-de.tmoe"])


if __name__ == "__main__":
    unittest.main()
