#!/usr/bin/python3
"""Golden fixtures for the C++ side: tiny random checkpoints, one per routing setup, with the
PyTorch reference's outputs. Regenerate with:

    /usr/bin/python3 tools/train/make_fixtures.py        # writes tests/data/fixtures/

Layout (see tests/data/README.md): fixtures/<setup>/ is a full checkpoint directory (float32) plus
reference.json; fixtures/sentencepiece.model is the vocabulary they all copy.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from taskmoe_ref.checkpoint_io import export_checkpoint  # noqa: E402
from taskmoe_ref.config import Config, ModelConfig, MoEConfig, StackMoE, Task  # noqa: E402
from taskmoe_ref.data import corpus_file, read_tsv, train_sentencepiece  # noqa: E402
from taskmoe_ref.decode import beam_search, greedy, source_ids  # noqa: E402
from taskmoe_ref.model import TaskMoEModel  # noqa: E402

TASKS = [Task("en-de", "en", "de"), Task("de-en", "de", "en"), Task("en-fr", "en", "fr"), Task("fr-en", "fr", "en")]
TAGS = {"de": "<2de>", "en": "<2en>", "fr": "<2fr>"}
# name: (encoder routing, decoder routing, norm, activation, positions, shared embeddings)
SETUPS = {
    "task_target": ("task:target", "task:target", "pre", "relu", "sinusoidal", True),
    "task_pair": ("task:pair", "task:pair", "post", "gelu", "learned", False),
    "token_task": ("token", "task:target", "pre", "gelu", "sinusoidal", True),
    "token_token": ("token", "token", "pre", "relu", "learned", True),
    "dense": ("dense", "dense", "post", "relu", "sinusoidal", False),
}
INPUTS = [  # mixed lengths and tasks, fixed
    ("Open file", "en-de"),
    ("Die Datei konnte nicht geöffnet werden.", "de-en"),
    ("Save the current document under a new name", "en-fr"),
    ("Fichier", "fr-en"),
    ("The selected printer is not available. Please choose another printer from the list.", "en-de"),
    ("Error", "en-fr"),
]
MAX_LEN = 12
LOGIT_STEPS = 3


def make_config(vocab, enc, dec, norm, act, pos, shared) -> Config:
    def stack(r, n):
        if r == "dense":
            return StackMoE("dense", [], [])
        keys = sorted({t.target for t in TASKS}) if r == "task:target" else \
            [t.name for t in TASKS] if r == "task:pair" else []
        return StackMoE(r, [i for i in range(n) if i % 2 == 1], keys)

    m = ModelConfig(d_model=32, n_heads=4, d_ff=48, encoder_layers=2, decoder_layers=3, vocab_size=vocab,
                    max_positions=64, norm=norm, activation=act, positional_encoding=pos, shared_embeddings=shared)
    moe = MoEConfig(num_experts=6, top_k=2, d_ff_expert=20, task_embedding_dim=8,
                    encoder=stack(enc, 2), decoder=stack(dec, 3))
    return Config(m, moe, list(TASKS), dict(TAGS))


def randomize(model: TaskMoEModel, seed: int) -> None:
    """Non-trivial values everywhere (biases, layer norms, routers) so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "router" in name or "task_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif "embed" in name or "output_projection" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(1.5 * torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def fit_copy_task(model: TaskMoEModel, steps: int, seed: int) -> None:
    """A short training on "copy the source" so outputs end with </s> and beams finish, as with a
    real model, while the values stay random-looking."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    m = model.cfg.model
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        lens = torch.randint(1, 8, (16,), generator=g)
        body = [torch.randint(4, m.vocab_size, (int(n),), generator=g) for n in lens]
        tids = torch.randint(0, len(TASKS), (16,), generator=g)
        src = torch.nn.utils.rnn.pad_sequence([torch.cat([b, torch.tensor([m.eos_id])]) for b in body],
                                              batch_first=True, padding_value=m.pad_id)
        tin = torch.cat([torch.full((16, 1), m.bos_id), src[:, :-1]], 1)
        tin = tin.masked_fill(tin.eq(m.eos_id), m.pad_id)
        logits, aux = model(src, tin, tids)
        loss = F.cross_entropy(logits.reshape(-1, m.vocab_size), src.reshape(-1), ignore_index=m.pad_id)
        opt.zero_grad()
        (loss + 0.01 * TaskMoEModel.balance_loss(aux)).backward()
        opt.step()
    model.eval()


def tolist(t: torch.Tensor, nd=6):
    return [round(float(x), nd + 3) for x in t.reshape(-1)]


def reference(model: TaskMoEModel, sp) -> dict:
    srcs = [source_ids(model, sp, text, task) for text, task in INPUTS]
    tasks = [task for _, task in INPUTS]
    g = greedy(model, srcs, tasks, MAX_LEN)
    b = beam_search(model, srcs, tasks, beam_size=4, length_penalty=1.0, max_len=MAX_LEN, num_hypotheses=2)
    cases = []
    with torch.no_grad():
        for i, (src, task) in enumerate(zip(srcs, tasks)):
            tid = torch.tensor([model.cfg.task_index(task)])
            mem, pad, _ = model.encode(torch.tensor([src]), tid)
            prefix = [model.cfg.model.bos_id] + g[i].tokens[: LOGIT_STEPS - 1]
            while len(prefix) < LOGIT_STEPS:   # greedy ended early: any continuation works
                prefix.append(model.cfg.model.eos_id)
            logits, _ = model.decode(torch.tensor([prefix]), mem, pad, tid)
            routes = {}
            for stack in ("encoder", "decoder"):
                st = getattr(model, stack)
                for li, layer in enumerate(st.layers):
                    if layer.task_routed:
                        e, w = model.task_route(task, stack, li)
                        routes[f"{stack}.{li}"] = {"experts": e, "gates": w}
            cases.append({
                "text": INPUTS[i][0], "task": task, "source_ids": src,
                "encoder_output": {"shape": list(mem.shape[1:]), "data": tolist(mem[0])},
                "decoder_input": prefix,
                "logits": {"shape": list(logits.shape[1:]), "data": tolist(logits[0])},
                "task_routes": routes,
                "greedy": {"tokens": g[i].tokens, "score": g[i].score},
                "beam4": [{"tokens": h.tokens, "score": h.score, "normalized": h.normalized} for h in b[i]],
            })
    return {"max_len": MAX_LEN, "beam_size": 4, "length_penalty": 1.0, "num_hypotheses": 2, "cases": cases}


INT8_CASES = [0, 1, 4]   # reference.json cases kept in reference_int8.json (en-de, de-en, en-de long)


def _quantize_rows(m: torch.Tensor):
    """kernels::quantize_rows_int8 in float32: scale = max|x| / 127, q = round_half_even(x * (127 / max|x|)),
    clamped to [-127, 127]; a row whose 127 / max|x| is not finite gets q = 0, scale = 0."""
    m = m.float()
    amax = m.abs().amax(dim=1)
    inv = torch.tensor(127.0, dtype=torch.float32) / amax
    ok = torch.isfinite(inv)
    q = torch.round(m * torch.where(ok, inv, torch.zeros_like(inv))[:, None]).clamp(-127, 127)
    scale = torch.where(ok, amax / torch.tensor(127.0, dtype=torch.float32), torch.zeros_like(amax))
    return q.double(), scale.double()


def _int8_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor = None) -> torch.Tensor:
    """What an int8 .tmoe runs for every Linear: per-row int8 weights (the converter) times per-row
    int8 activations (the runtime quantizes each input row), exact integer sums, then the two scales
    and the bias. Products and sums in float64 (exact for the integer part)."""
    qw, sw = _quantize_rows(w.detach())
    xf = x.reshape(-1, x.shape[-1])
    qx, sx = _quantize_rows(xf)
    y = (qx @ qw.t()) * sx[:, None] * sw[None, :]
    if b is not None:
        y = y + b.double()[None, :]
    return y.float().reshape(*x.shape[:-1], w.shape[0])


def int8_reference(model: TaskMoEModel, ref: dict) -> dict:
    """Golden outputs of the int8 file the converter makes by default (attention projections, FFNs,
    experts and a separate output projection int8, token embeddings float16) run with the
    runtime's defaults: the token embeddings replaced in place by their float16 values (what a
    lookup reads; a shared table's output projection is quantized from them, as the runtime does
    at load), and every F.linear of the reference model by _int8_linear (routers use matmul and
    stay float32, as in the runtime). Modifies `model`."""
    import torch.nn.functional as F
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("embed_tokens"):
                module.weight.copy_(module.weight.half().float())  # round to nearest even, as the converter
    original = F.linear
    ties = []

    def linear(x, w, b=None):
        # How close any activation came to a rounding boundary of its quantization (in steps):
        # the runtime's float32 arithmetic may round such a value the other way.
        xf = x.detach().reshape(-1, x.shape[-1]).float()
        v = xf * (torch.tensor(127.0, dtype=torch.float32) / xf.abs().amax(dim=1))[:, None]
        ties.append(float((v - torch.floor(v) - 0.5).abs().nan_to_num(1.0).min()))
        return _int8_linear(x, w, b)

    F.linear = linear
    try:
        cases = []
        with torch.no_grad():
            for i in INT8_CASES:
                ties.clear()
                c = ref["cases"][i]
                src, task, prefix = c["source_ids"], c["task"], c["decoder_input"]
                tid = torch.tensor([model.cfg.task_index(task)])
                mem, pad, _ = model.encode(torch.tensor([src]), tid)
                logits, _ = model.decode(torch.tensor([prefix]), mem, pad, tid)
                g = greedy(model, [src], [task], ref["max_len"])[0]
                # smallest gap between the best and second-best logit along the greedy path
                path = [model.cfg.model.bos_id] + g.tokens[:-1]
                gl, _ = model.decode(torch.tensor([path]), mem, pad, tid)
                top2 = torch.topk(gl[0], 2, dim=-1).values
                margin = float((top2[:, 0] - top2[:, 1]).min())
                cases.append({
                    "text": c["text"], "task": task, "source_ids": src, "decoder_input": prefix,
                    "logits": {"shape": list(logits.shape[1:]), "data": tolist(logits[0], 3)},
                    "greedy": {"tokens": g.tokens, "score": g.score, "min_margin": margin},
                    "min_tie": min(ties),
                })
    finally:
        F.linear = original
    return {"max_len": ref["max_len"], "quantization": "int8", "cases": cases}


def write_int8_reference(out: str) -> None:
    """<out>/reference_int8.json from the checkpoint as written (float32 weights read back)."""
    from taskmoe_ref.checkpoint_io import load_checkpoint
    model = load_checkpoint(out)
    with open(os.path.join(out, "reference.json"), encoding="utf-8") as f:
        ref = json.load(f)
    with open(os.path.join(out, "reference_int8.json"), "w", encoding="utf-8") as f:
        json.dump(int8_reference(model, ref), f, separators=(",", ":"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.normpath(os.path.join(HERE, "../../tests/data/fixtures")))
    p.add_argument("--corpus", default=os.path.normpath(os.path.join(HERE, "../../../shared/corpus")))
    p.add_argument("--int8-only", action="store_true",
                   help="only (re)write <setup>/reference_int8.json from the checkpoints already in --out")
    a = p.parse_args(argv)
    if a.int8_only:
        for name in sorted(SETUPS):
            write_int8_reference(os.path.join(a.out, name))
        return
    import sentencepiece as spm
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    spm_path = os.path.join(a.out, "sentencepiece.model")
    if not os.path.exists(spm_path):   # kept when present so fixtures stay stable
        texts = {}
        for lang in ("de", "fr"):
            rows = read_tsv(corpus_file(a.corpus, lang, "dev"), 600)
            texts.setdefault("en", []).extend(r[0] for r in rows)
            texts[lang] = [r[1] for r in rows]
        train_sentencepiece(texts, os.path.join(a.out, "sentencepiece"), 250, list(TAGS.values()), per_lang=1200)
        os.remove(os.path.join(a.out, "sentencepiece.vocab"))
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    for i, (name, (enc, dec, norm, act, pos, shared)) in enumerate(sorted(SETUPS.items())):
        model = TaskMoEModel(make_config(sp.get_piece_size(), enc, dec, norm, act, pos, shared))
        randomize(model, 1000 + i)
        fit_copy_task(model, 400 if norm == "pre" else 1200, 2000 + i)
        out = os.path.join(a.out, name)
        export_checkpoint(model, spm_path, out, "float32",
                          training={"generator": "tools/train/make_fixtures.py", "seed": 1000 + i})
        with open(os.path.join(out, "reference.json"), "w", encoding="utf-8") as f:
            json.dump(reference(model, sp), f, separators=(",", ":"))
        write_int8_reference(out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
