"""Reference decoding: greedy and beam search with a length penalty (docs/decoding.md).

The C++ runtime must reproduce these token sequences exactly, so the algorithm is kept plain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from .model import TaskMoEModel


@dataclass
class Hypothesis:
    tokens: List[int]          # generated ids, ending with eos unless cut at max_len
    score: float               # sum of log-probabilities
    normalized: float          # score / len(tokens) ** length_penalty


def source_ids(model: TaskMoEModel, sp, text: str, task: str) -> List[int]:
    """[<2xx>] + pieces + [</s>], cut to max_positions (the tag and </s> are always kept)."""
    cfg = model.cfg
    t = cfg.tasks[cfg.task_index(task)]
    tag = sp.piece_to_id(cfg.target_tags[t.target])
    body = sp.encode(text)[: cfg.model.max_positions - 2]
    return [tag] + body + [cfg.model.eos_id]


def _pad(seqs: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [pad] * (n - len(s)) for s in seqs], dtype=torch.long)


def _reorder(cache: List[dict], index: torch.Tensor) -> None:
    for layer in cache:
        for part in layer.values():
            for k in part:
                part[k] = part[k].index_select(0, index)


@torch.no_grad()
def greedy(model: TaskMoEModel, srcs: Sequence[Sequence[int]], tasks: Sequence[str], max_len: int = 128):
    """Argmax decoding (ties: lowest id). Returns one Hypothesis per source."""
    model.eval()
    m = model.cfg.model
    task_ids = torch.tensor([model.cfg.task_index(t) for t in tasks])
    memory, pad, _ = model.encode(_pad(srcs, m.pad_id), task_ids)
    b = len(srcs)
    cache = [dict() for _ in model.decoder.layers]
    out = [[] for _ in range(b)]
    scores = [0.0] * b
    alive = list(range(b))                     # original indices of rows still decoding
    tok = torch.full((b, 1), m.bos_id, dtype=torch.long)
    max_len = min(max_len, m.max_positions)
    for step in range(max_len):
        logits, _ = model.decode(tok, memory, pad, task_ids, cache=cache, start=step)
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        best = logp.argmax(dim=-1)
        keep = []
        for row, orig in enumerate(alive):
            t = int(best[row])
            out[orig].append(t)
            scores[orig] += float(logp[row, t])
            if t != m.eos_id:
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(alive):             # drop finished rows from the batch
            idx = torch.tensor(keep)
            _reorder(cache, idx)
            memory, pad, task_ids, best = memory[idx], pad[idx], task_ids[idx], best[idx]
            alive = [alive[r] for r in keep]
        tok = best[:, None]
    return [Hypothesis(o, s, s / max(1, len(o))) for o, s in zip(out, scores)]


@torch.no_grad()
def beam_search(model: TaskMoEModel, srcs: Sequence[Sequence[int]], tasks: Sequence[str], beam_size: int = 4,
                length_penalty: float = 1.0, max_len: int = 128, num_hypotheses: int = 1):
    """Beam search, fairseq style (see docs/decoding.md). Returns per source a list of Hypothesis,
    best first, num_hypotheses long (or fewer if fewer finished)."""
    model.eval()
    m = model.cfg.model
    k = beam_size
    b = len(srcs)
    max_len = min(max_len, m.max_positions)
    task_ids = torch.tensor([model.cfg.task_index(t) for t in tasks])
    memory, pad, _ = model.encode(_pad(srcs, m.pad_id), task_ids)
    # Row r of the decoder batch is beam r % width of sentence alive[r // width]; start with 1 beam.
    finished: List[List[Hypothesis]] = [[] for _ in range(b)]
    beams = [[([], 0.0)] for _ in range(b)]    # per sentence: (tokens, score) of live beams
    alive = list(range(b))
    cache = [dict() for _ in model.decoder.layers]
    rows_src = torch.arange(b)                  # source row (in memory) of each decoder row
    tok = torch.full((b, 1), m.bos_id, dtype=torch.long)

    def norm(score, n):
        return score / (n ** length_penalty)

    for step in range(max_len):
        logits, _ = model.decode(tok, memory[rows_src], pad[rows_src], task_ids[rows_src], cache=cache, start=step)
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        next_rows, next_tok, next_src, next_alive = [], [], [], []
        row = 0
        last = step == max_len - 1
        for s in alive:
            live = beams[s]
            n = len(live)
            base = torch.tensor([sc for _, sc in live], dtype=torch.float32)[:, None]
            cand = (base + logp[row:row + n]).reshape(-1)
            top_v, top_i = torch.sort(cand, descending=True, stable=True)
            new_live = []
            for rank in range(min(2 * k, cand.numel())):
                beam, t = divmod(int(top_i[rank]), logp.shape[1])
                sc = float(top_v[rank])
                toks = live[beam][0] + [t]
                if t == m.eos_id:
                    if rank < k:
                        finished[s].append(Hypothesis(toks, sc, norm(sc, len(toks))))
                    continue
                new_live.append((toks, sc, row + beam))
                if len(new_live) == k:
                    break
            if len(finished[s]) >= k or last:
                if last and len(finished[s]) < k:   # cut at max_len: keep the best live beams
                    for toks, sc, _ in new_live[: k - len(finished[s])]:
                        finished[s].append(Hypothesis(toks, sc, norm(sc, len(toks))))
            else:
                beams[s] = [(toks, sc) for toks, sc, _ in new_live]
                next_alive.append(s)
                for toks, _, r in new_live:
                    next_rows.append(r)
                    next_tok.append(toks[-1])
                    next_src.append(int(rows_src[r]))
            row += n
        if not next_alive:
            break
        _reorder(cache, torch.tensor(next_rows))
        alive = next_alive
        rows_src = torch.tensor(next_src)
        tok = torch.tensor(next_tok, dtype=torch.long)[:, None]
    results = []
    for hyps in finished:
        hyps = sorted(hyps, key=lambda h: -h.normalized)  # stable: earlier-finished first on ties
        results.append(hyps[:num_hypotheses])
    return results


def translate(model: TaskMoEModel, sp, texts: Sequence[str], task: str, beam_size: int = 1,
              length_penalty: float = 1.0, max_len: int = 128, batch_size: int = 32) -> List[str]:
    """Text in, text out: the reference translate() that later components are compared against."""
    out: List[Optional[str]] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    eos = model.cfg.model.eos_id
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        srcs = [source_ids(model, sp, texts[j], task) for j in chunk]
        tasks = [task] * len(chunk)
        if beam_size <= 1:
            hyps = greedy(model, srcs, tasks, max_len)
        else:
            hyps = [h[0] for h in beam_search(model, srcs, tasks, beam_size, length_penalty, max_len)]
        for j, h in zip(chunk, hyps):
            out[j] = sp.decode([t for t in h.tokens if t != eos])
    return out  # type: ignore[return-value]
