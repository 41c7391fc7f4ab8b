"""The reference TaskMoE encoder-decoder. Parameter names equal the checkpoint's tensor names.

Semantics are those of docs/checkpoint-format.md; anything that differs from it is a bug here.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config

Cache = Dict[str, torch.Tensor]


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """P[pos, 2i] = sin(pos / 10000^(2i/d)), P[pos, 2i+1] = cos(...), interleaved."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i2 = torch.arange(0, d, 2, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, i2 / d)
    pe = torch.zeros(n, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.float()


def activation(name: str):
    return F.relu if name == "relu" else (lambda x: F.gelu(x))  # exact erf form


class Attention(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.h, self.dh = h, d // h
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.dh).transpose(1, 2)

    def forward(self, x, kv=None, mask=None, cache: Optional[Cache] = None, static_kv=False):
        """x [B,T,d]; kv [B,S,d] (None: self-attention); mask broadcastable to [B,h,T,S], True = masked.

        cache (incremental decoding): self-attention appends this step's k/v; with static_kv the
        cross-attention k/v are computed once and reused.
        """
        q = self._heads(self.q_proj(x))
        if static_kv and cache is not None and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            src = x if kv is None else kv
            k, v = self._heads(self.k_proj(src)), self._heads(self.v_proj(src))
            if cache is not None:
                if not static_kv and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dh)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        attn = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.out_proj(out)


class FeedForward(nn.Module):
    def __init__(self, d: int, ff: int, act: str):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.act = activation(act)

    def forward(self, x, **_):
        return self.fc2(self.act(self.fc1(x))), None


class StackedLinear(nn.Module):
    """E linear maps stacked on axis 0: weight [E, out, in], bias [E, out]."""

    def __init__(self, e: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(e, d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(e, d_out))
        bound = 1.0 / math.sqrt(d_in)
        nn.init.uniform_(self.weight, -bound, bound)


def route(router_weight: torch.Tensor, u: torch.Tensor, k: int):
    """Gating of docs/checkpoint-format.md: softmax in float32, top-k (ties: lower index), renormalised.

    Returns (p [N,E], experts [N,k], gates [N,k]).
    """
    logits = torch.matmul(u.float(), router_weight.float().t())
    p = torch.softmax(logits, dim=-1)
    top_p, top_i = torch.sort(p, dim=-1, descending=True, stable=True)
    top_p, top_i = top_p[:, :k], top_i[:, :k]
    return p, top_i, top_p / top_p.sum(dim=-1, keepdim=True)


class MoE(nn.Module):
    def __init__(self, d: int, ff: int, num_experts: int, top_k: int, d_in: int, act: str):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.experts = nn.Module()
        self.experts.fc1 = StackedLinear(num_experts, d, ff)
        self.experts.fc2 = StackedLinear(num_experts, ff, d)
        self.router = nn.Linear(d_in, num_experts, bias=False)
        self.act = activation(act)

    def forward(self, x, task_vec=None, token_mask=None):
        """x [B,T,d]; task_vec [B,d_task] for task routing (None: route each token by x).

        token_mask [B,T] True for real tokens (the balancing loss ignores padding).
        Returns (y, aux) with aux = (p [N,E], top-1 expert [N]) over real tokens, for the loss.
        """
        b, t, d = x.shape
        xf = x.reshape(-1, d)
        if task_vec is None:
            p, idx, g = route(self.router.weight, xf, self.top_k)
        else:  # every token of an example shares its task's route
            p, idx, g = (z.repeat_interleave(t, dim=0) for z in route(self.router.weight, task_vec, self.top_k))
        out = torch.zeros_like(xf)
        w1, b1 = self.experts.fc1.weight, self.experts.fc1.bias
        w2, b2 = self.experts.fc2.weight, self.experts.fc2.bias
        for e in range(self.num_experts):
            sel = idx == e
            rows = sel.any(dim=-1).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            gate = (g * sel).sum(dim=-1)[rows].to(xf.dtype)
            h = self.act(F.linear(xf[rows], w1[e], b1[e]))
            out.index_add_(0, rows, F.linear(h, w2[e], b2[e]) * gate[:, None])
        aux = None
        if self.training:
            keep = token_mask.reshape(-1) if token_mask is not None else slice(None)
            aux = (p[keep], idx[keep, 0])
        return out.view(b, t, d), aux


class Layer(nn.Module):
    def __init__(self, cfg: Config, stack: str, index: int):
        super().__init__()
        m, moe = cfg.model, cfg.moe
        st = moe.stack(stack)
        self.pre = m.norm == "pre"
        self.self_attn = Attention(m.d_model, m.n_heads)
        self.self_attn_layer_norm = nn.LayerNorm(m.d_model, eps=m.layer_norm_eps)
        self.is_decoder = stack == "decoder"
        if self.is_decoder:
            self.encoder_attn = Attention(m.d_model, m.n_heads)
            self.encoder_attn_layer_norm = nn.LayerNorm(m.d_model, eps=m.layer_norm_eps)
        self.is_moe = index in st.layers
        self.task_routed = self.is_moe and st.routing.startswith("task:")
        if self.is_moe:
            d_in = moe.task_embedding_dim if self.task_routed else m.d_model
            self.moe = MoE(m.d_model, moe.d_ff_expert, moe.num_experts, moe.top_k, d_in, m.activation)
        else:
            self.ffn = FeedForward(m.d_model, m.d_ff, m.activation)
        self.final_layer_norm = nn.LayerNorm(m.d_model, eps=m.layer_norm_eps)

    def _sub(self, x, ln, fn):
        if self.pre:
            y, aux = fn(ln(x))
            return x + y, aux
        y, aux = fn(x)
        return ln(x + y), aux

    def forward(self, x, self_mask, memory=None, memory_mask=None, task_vec=None, token_mask=None,
                cache: Optional[Dict[str, Cache]] = None):
        sc = None if cache is None else cache.setdefault("self", {})
        x, _ = self._sub(x, self.self_attn_layer_norm,
                         lambda h: (self.self_attn(h, mask=self_mask, cache=sc), None))
        if self.is_decoder:
            cc = None if cache is None else cache.setdefault("cross", {})
            x, _ = self._sub(x, self.encoder_attn_layer_norm,
                             lambda h: (self.encoder_attn(h, memory, memory_mask, cache=cc, static_kv=True), None))
        if self.is_moe:
            ff = lambda h: self.moe(h, task_vec if self.task_routed else None, token_mask)
        else:
            ff = self.ffn
        return self._sub(x, self.final_layer_norm, ff)


class Stack(nn.Module):
    def __init__(self, cfg: Config, stack: str):
        super().__init__()
        m = cfg.model
        st = cfg.moe.stack(stack)
        n = m.encoder_layers if stack == "encoder" else m.decoder_layers
        self.layers = nn.ModuleList([Layer(cfg, stack, i) for i in range(n)])
        if not m.shared_embeddings:
            self.embed_tokens = nn.Embedding(m.vocab_size, m.d_model)
            nn.init.normal_(self.embed_tokens.weight, 0.0, m.d_model ** -0.5)
        if m.positional_encoding == "learned":
            self.embed_positions = nn.Embedding(m.max_positions, m.d_model)
            nn.init.normal_(self.embed_positions.weight, 0.0, 0.02)
        else:
            self.register_buffer("sinusoid", sinusoidal_positions(m.max_positions, m.d_model), persistent=False)
        if st.routing.startswith("task:"):
            self.task_embedding = nn.Embedding(len(st.task_keys), cfg.moe.task_embedding_dim)
            keys = [cfg.task_key_index(stack, t) for t in cfg.tasks]
            self.register_buffer("task_key_of", torch.tensor(keys, dtype=torch.long), persistent=False)
        if m.norm == "pre":
            self.layer_norm = nn.LayerNorm(m.d_model, eps=m.layer_norm_eps)

    def positions(self, start: int, t: int) -> torch.Tensor:
        if hasattr(self, "embed_positions"):
            return self.embed_positions.weight[start:start + t]
        return self.sinusoid[start:start + t]

    def task_vec(self, task_ids):
        if not hasattr(self, "task_embedding"):
            return None
        return self.task_embedding(self.task_key_of[task_ids])


class TaskMoEModel(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        m = cfg.model
        if m.shared_embeddings:
            self.embed_tokens = nn.Embedding(m.vocab_size, m.d_model)
            nn.init.normal_(self.embed_tokens.weight, 0.0, m.d_model ** -0.5)
        self.encoder = Stack(cfg, "encoder")
        self.decoder = Stack(cfg, "decoder")
        if not m.shared_embeddings:
            self.decoder.output_projection = nn.Linear(m.d_model, m.vocab_size, bias=False)
        self.embed_scale = math.sqrt(m.d_model) if m.scale_embeddings else 1.0

    # --- pieces ------------------------------------------------------------
    def _embed(self, stack: Stack, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        table = self.embed_tokens if self.cfg.model.shared_embeddings else stack.embed_tokens
        x = table(ids) * self.embed_scale
        return x + stack.positions(start, ids.shape[1]).to(x.dtype)[None]

    def output_weight(self) -> torch.Tensor:
        if self.cfg.model.shared_embeddings:
            return self.embed_tokens.weight
        return self.decoder.output_projection.weight

    def encode(self, src: torch.Tensor, task_ids: torch.Tensor):
        """src [B,S] (padded with pad_id) -> (memory [B,S,d], pad mask [B,S] True = pad, aux list)."""
        pad = src.eq(self.cfg.model.pad_id)
        x = self._embed(self.encoder, src)
        mask = pad[:, None, None, :]
        tv = self.encoder.task_vec(task_ids)
        auxes = []
        for layer in self.encoder.layers:
            x, aux = layer(x, mask, task_vec=tv, token_mask=~pad)
            if aux is not None:
                auxes.append(aux)
        if hasattr(self.encoder, "layer_norm"):
            x = self.encoder.layer_norm(x)
        return x, pad, auxes

    def decode(self, tgt_in, memory, memory_pad, task_ids, cache: Optional[List[dict]] = None, start: int = 0):
        """tgt_in [B,T] -> logits [B,T,V]. With cache, tgt_in is the next token(s) from position start."""
        t = tgt_in.shape[1]
        x = self._embed(self.decoder, tgt_in, start)
        causal = None
        if t > 1:
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)[None, None]
        mem_mask = memory_pad[:, None, None, :]
        tv = self.decoder.task_vec(task_ids)
        tok_mask = tgt_in.ne(self.cfg.model.pad_id)
        auxes = []
        for i, layer in enumerate(self.decoder.layers):
            x, aux = layer(x, causal, memory, mem_mask, task_vec=tv, token_mask=tok_mask,
                           cache=None if cache is None else cache[i])
            if aux is not None:
                auxes.append(aux)
        if hasattr(self.decoder, "layer_norm"):
            x = self.decoder.layer_norm(x)
        return F.linear(x, self.output_weight()), auxes

    def forward(self, src, tgt_in, task_ids):
        memory, pad, aux_e = self.encode(src, task_ids)
        logits, aux_d = self.decode(tgt_in, memory, pad, task_ids)
        return logits, aux_e + aux_d

    @staticmethod
    def balance_loss(auxes) -> torch.Tensor:
        """GShard load-balancing loss, averaged over MoE layers: E * sum_e mean(p_e) * frac(top1 == e)."""
        if not auxes:
            return torch.zeros(())
        total = 0.0
        for p, top1 in auxes:
            e = p.shape[-1]
            frac = torch.bincount(top1, minlength=e).float() / max(1, top1.numel())
            total = total + e * (p.mean(dim=0) * frac).sum()
        return total / len(auxes)

    # --- routing as the converter computes it ----------------------------
    @torch.no_grad()
    def task_route(self, task: str, stack: str, layer: int):
        """(experts [k], gates [k]) of a task-routed MoE layer, for a task name."""
        st = getattr(self, stack)
        lyr = st.layers[layer]
        assert lyr.task_routed, f"{stack} layer {layer} is not task-routed"
        ti = torch.tensor([self.cfg.task_index(task)])
        _, idx, g = route(lyr.moe.router.weight, st.task_vec(ti), lyr.moe.top_k)
        return idx[0].tolist(), g[0].tolist()
