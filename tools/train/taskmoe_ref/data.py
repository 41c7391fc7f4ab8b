"""Corpus reading, SentencePiece training/encoding and temperature-sampled, length-bucketed batches."""
from __future__ import annotations

import lzma
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from .config import Task


def read_tsv(path: str, limit: int = 0) -> List[Tuple[str, str]]:
    """(english, translation) rows of a corpus file (.tsv or .tsv.xz)."""
    opener = lzma.open if path.endswith(".xz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2 and parts[0].strip() and parts[1].strip():
                rows.append((parts[0], parts[1]))
                if limit and len(rows) >= limit:
                    break
    return rows


def corpus_file(corpus: str, lang: str, split: str) -> str:
    p = os.path.join(corpus, f"en-{lang}.{split}.tsv")
    if split == "train":
        p += ".xz"
    if not os.path.exists(p):
        raise FileNotFoundError(f"corpus file missing: {p} (the corpus lives in ../shared/corpus; see its README)")
    return p


def task_pairs(rows: Sequence[Tuple[str, str]], task: Task) -> Tuple[List[str], List[str]]:
    """Source and target sides of a task from en-XX rows."""
    en, xx = [r[0] for r in rows], [r[1] for r in rows]
    return (en, xx) if task.source == "en" else (xx, en)


def train_sentencepiece(texts_by_lang: Dict[str, List[str]], prefix: str, vocab_size: int,
                        tags: Sequence[str], per_lang: int = 150000, seed: int = 1) -> str:
    import sentencepiece as spm
    rng = np.random.default_rng(seed)
    tmp = prefix + ".train.txt"
    with open(tmp, "w", encoding="utf-8") as f:
        for lang in sorted(texts_by_lang):
            texts = texts_by_lang[lang]
            pick = rng.choice(len(texts), size=min(per_lang, len(texts)), replace=False)
            for i in sorted(pick):
                f.write(texts[i].replace("\n", " ") + "\n")
    spm.SentencePieceTrainer.train(
        input=tmp, model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
        character_coverage=0.9995, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        user_defined_symbols=list(tags), input_sentence_size=2_000_000, shuffle_input_sentence=True,
        num_threads=1, minloglevel=2)
    os.remove(tmp)
    return prefix + ".model"


class EncodedSide:
    """Ragged array of token ids: one flat int16 array plus offsets."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    @staticmethod
    def build(seqs: Sequence[Sequence[int]]) -> "EncodedSide":
        lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int16, count=int(offsets[-1]))
        return EncodedSide(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]


def temperature_probs(sizes: Sequence[int], temperature: float) -> np.ndarray:
    """p_i proportional to n_i^(1/T) (T=1: proportional to size; large T: uniform)."""
    w = np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature)
    return w / w.sum()


class BatchSampler:
    """Deterministic given (seed, pool index): resuming at a pool index reproduces the same batches.

    Each pool draws pool_size examples (task by temperature sampling, row uniformly), sorts them by
    length so padding stays low, cuts them into batches of at most max_tokens (padded src + tgt)
    and shuffles the batches.
    """

    def __init__(self, data: List[Tuple[EncodedSide, EncodedSide]], probs: np.ndarray, max_tokens: int,
                 seed: int, pool_size: int = 20000):
        self.data, self.probs, self.max_tokens = data, probs, max_tokens
        self.seed, self.pool_size = seed, pool_size

    def pool(self, index: int) -> List[List[Tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, index])
        tasks = rng.choice(len(self.data), size=self.pool_size, p=self.probs)
        items = []
        for t in tasks:
            src, tgt = self.data[t]
            i = int(rng.integers(len(src)))
            items.append((t, i, len(src.get(i)), len(tgt.get(i))))
        items.sort(key=lambda x: (x[2], x[3]))
        batches, cur, ms, mt = [], [], 0, 0
        for t, i, ls, lt in items:
            ns, nt = max(ms, ls), max(mt, lt)
            if cur and (len(cur) + 1) * (ns + nt) > self.max_tokens:
                batches.append(cur)
                cur, ns, nt = [], ls, lt
            cur.append((t, i))
            ms, mt = ns, nt
        if cur:
            batches.append(cur)
        rng.shuffle(batches)
        return batches

    def iterate(self, start_pool: int, start_batch: int) -> Iterator[Tuple[int, int, List[Tuple[int, int]]]]:
        p = start_pool
        b0 = start_batch
        while True:
            batches = self.pool(p)
            for b in range(b0, len(batches)):
                yield p, b, batches[b]
            p, b0 = p + 1, 0
