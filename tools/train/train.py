#!/usr/bin/python3
"""Train a TaskMoE translation model on ../shared/corpus and export it as a taskmoe checkpoint.

Resumable: run the same command again after an interruption and it continues from the last
checkpoint in --run-dir (model, optimizer, schedule and data position are all restored).
`touch RUN_DIR/STOP` ends a run early but cleanly (checkpoint saved, model exported).

    /usr/bin/python3 tools/train/train.py --run-dir runs/demo --export models/demo   # see models/demo/README.md
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Tuple

# OpenBLAS (Debian's torch BLAS) starts its own thread pool, which torch.set_num_threads does not
# bound: pin it before torch loads, or a "1 thread" run spins a second core.
if "--threads" in sys.argv:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", sys.argv[sys.argv.index("--threads") + 1])

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from taskmoe_ref.checkpoint_io import export_checkpoint  # noqa: E402
from taskmoe_ref.config import Config, ModelConfig, MoEConfig, StackMoE, Task  # noqa: E402
from taskmoe_ref.data import (BatchSampler, EncodedSide, corpus_file, read_tsv, task_pairs,  # noqa: E402
                              temperature_probs, train_sentencepiece)
from taskmoe_ref.model import TaskMoEModel  # noqa: E402


def parse_args(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=os.path.normpath(os.path.join(here, "../../../shared/corpus")))
    p.add_argument("--run-dir", required=True, help="checkpoints, logs, vocabulary and encoded data")
    p.add_argument("--langs", default="de,fr,es,ru", help="XX of en-XX; tasks are en->XX and XX->en")
    p.add_argument("--train-limit", type=int, default=0, help="rows per language (0: all)")
    p.add_argument("--max-len", type=int, default=64, help="drop training pairs longer than this (tokens)")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--d-ff-expert", type=int, default=0, help="0: same as --d-ff")
    p.add_argument("--encoder-layers", type=int, default=4)
    p.add_argument("--decoder-layers", type=int, default=4)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--task-dim", type=int, default=64)
    p.add_argument("--encoder-routing", default="task:target")
    p.add_argument("--decoder-routing", default="task:target")
    p.add_argument("--moe-every", type=int, default=2, help="MoE in layers i with i %% n == n-1")
    p.add_argument("--norm", default="pre")
    p.add_argument("--activation", default="relu")
    p.add_argument("--positions", default="sinusoidal")
    p.add_argument("--max-positions", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=4096, help="padded src+tgt tokens per batch")
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=800)
    p.add_argument("--max-steps", type=int, default=20000)
    p.add_argument("--stop-at-step", type=int, default=0,
                   help="end this invocation at this step (saved, resumable) without changing the schedule")
    p.add_argument("--max-hours", type=float, default=0.0, help="stop (and save) after this much training time")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--aux-weight", type=float, default=0.01)
    p.add_argument("--temperature", type=float, default=5.0, help="task sampling temperature")
    p.add_argument("--amp", choices=["auto", "none", "bf16"], default="auto",
                   help="auto: bf16 autocast iff the CPU has AVX512-BF16/AMX-BF16 and a quick timing shows it faster")
    p.add_argument("--init-from", default="", help="start from the weights of this exported checkpoint "
                   "(its sentencepiece.model becomes the run's vocabulary); ignored when resuming")
    p.add_argument("--average-last", type=int, default=3, help="export the mean of the last N snapshots")
    p.add_argument("--snapshot-minutes", type=float, default=6.0, help="model-only snapshots for averaging")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--save-minutes", type=float, default=10.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-bleu", type=int, default=40, help="greedy dev BLEU on this many pairs per task at each eval (0: off)")
    p.add_argument("--export", default="", help="export the final model to this checkpoint directory")
    p.add_argument("--export-dtype", default="float16")
    p.add_argument("--benchmark-steps", type=int, default=0, help="time this many steps and exit")
    return p.parse_args(argv)


RANK, WORLD = 0, 1  # set by dist_setup() under torchrun


def dist_setup():
    """torch.distributed data parallelism under torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPUs.

    Returns the device this rank trains on."""
    global RANK, WORLD
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return torch.device("cpu")
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend)
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    return device


def all_reduce_(t: torch.Tensor) -> torch.Tensor:
    if WORLD > 1:
        import torch.distributed as dist
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if WORLD > 1:
        import torch.distributed as dist
        dist.barrier()


def log(run_dir: str, msg: str) -> None:
    if RANK != 0:
        return
    line = time.strftime("%Y-%m-%d %H:%M:%S ") + msg
    print(line, flush=True)
    with open(os.path.join(run_dir, "train.log"), "a", encoding="utf-8") as f:
        f.write(line + "\n")


def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def bf16_faster(d: int = 256, ff: int = 1024, rows: int = 2048, reps: int = 6) -> Tuple[bool, float, float]:
    """Time forward+backward of an FFN block shaped like the model's in float32 and under bf16 autocast."""
    x = torch.randn(rows, d, requires_grad=True)
    net = torch.nn.Sequential(torch.nn.Linear(d, ff), torch.nn.ReLU(), torch.nn.Linear(ff, d))
    times = {}
    for mode in ("fp32", "bf16", "fp32", "bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            net(x).float().sum().backward()  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                y = net(x).float().sum()
            y.backward()
        times[mode] = min(times.get(mode, 1e9), (time.perf_counter() - t0) / reps)
    return times["bf16"] < 0.9 * times["fp32"], times["fp32"], times["bf16"]


def choose_amp(a, run_dir, device=torch.device("cpu")) -> str:
    if a.amp != "auto":
        log(run_dir, f"amp {a.amp} (explicit)")
        return a.amp
    if device.type == "cuda":
        choice = "bf16" if torch.cuda.is_bf16_supported() else "none"
        log(run_dir, f"amp auto -> {choice} (GPU)")
        return choice
    if not cpu_has_bf16():
        log(run_dir, "amp auto -> none (no avx512_bf16/amx_bf16 in /proc/cpuinfo)")
        return "none"
    fast, t32, t16 = bf16_faster()
    choice = "bf16" if fast else "none"
    log(run_dir, f"amp auto -> {choice} (CPU has BF16; FFN fwd+bwd {t32 * 1e3:.1f} ms fp32 vs {t16 * 1e3:.1f} ms bf16)")
    return choice


def build_config(a, tasks, langs) -> Config:
    all_langs = sorted(set(["en"] + langs))
    tags = {l: f"<2{l}>" for l in all_langs}

    def stack(routing, n):
        if routing == "dense":
            return StackMoE("dense", [], [])
        layers = [i for i in range(n) if i % a.moe_every == a.moe_every - 1]
        keys = []
        if routing == "task:target":
            keys = sorted(set(t.target for t in tasks))
        elif routing == "task:pair":
            keys = [t.name for t in tasks]
        return StackMoE(routing, layers, keys)

    model = ModelConfig(d_model=a.d_model, n_heads=a.heads, d_ff=a.d_ff, encoder_layers=a.encoder_layers,
                        decoder_layers=a.decoder_layers, vocab_size=a.vocab_size, max_positions=a.max_positions,
                        norm=a.norm, activation=a.activation, positional_encoding=a.positions)
    moe = MoEConfig(num_experts=a.experts, top_k=a.top_k, d_ff_expert=a.d_ff_expert or a.d_ff,
                    task_embedding_dim=a.task_dim, encoder=stack(a.encoder_routing, a.encoder_layers),
                    decoder=stack(a.decoder_routing, a.decoder_layers))
    return Config(model=model, moe=moe, tasks=tasks, target_tags=tags)


def prepare(a, run_dir, langs, tasks):
    """Vocabulary and encoded training/dev data, cached in run_dir (deterministic)."""
    spm_path = os.path.join(run_dir, "sentencepiece.model")
    data_path = os.path.join(run_dir, "data.npz")
    import sentencepiece as spm
    rows = None
    if not os.path.exists(spm_path):
        rows = {l: read_tsv(corpus_file(a.corpus, l, "train"), a.train_limit) for l in langs}
        texts = {"en": [en for l in langs for en, _ in rows[l][: 40000]]}
        for l in langs:
            texts[l] = [xx for _, xx in rows[l]]
        tags = [f"<2{l}>" for l in sorted(set(["en"] + langs))]
        log(run_dir, f"training SentencePiece ({a.vocab_size} pieces) on {sum(map(len, texts.values()))} lines")
        train_sentencepiece(texts, os.path.join(run_dir, "sentencepiece"), a.vocab_size, tags)
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    if not os.path.exists(data_path):
        if rows is None:
            rows = {l: read_tsv(corpus_file(a.corpus, l, "train"), a.train_limit) for l in langs}
        arrays = {}
        for l in langs:
            en = sp.encode([r[0] for r in rows[l]])
            xx = sp.encode([r[1] for r in rows[l]])
            keep = [i for i in range(len(en)) if 0 < len(en[i]) <= a.max_len and 0 < len(xx[i]) <= a.max_len]
            for side, seqs in (("en", en), (l, xx)):
                e = EncodedSide.build([seqs[i] for i in keep])
                arrays[f"{l}.{side}.flat"], arrays[f"{l}.{side}.offsets"] = e.flat, e.offsets
            log(run_dir, f"encoded en-{l}: kept {len(keep)} of {len(en)} pairs (<= {a.max_len} tokens)")
        np.savez(data_path + ".tmp.npz", **arrays)
        os.replace(data_path + ".tmp.npz", data_path)
    z = np.load(data_path)
    data = []
    for t in tasks:
        xx = t.target if t.source == "en" else t.source
        en = EncodedSide(z[f"{xx}.en.flat"], z[f"{xx}.en.offsets"])
        other = EncodedSide(z[f"{xx}.{xx}.flat"], z[f"{xx}.{xx}.offsets"])
        data.append((en, other) if t.source == "en" else (other, en))
    return sp, spm_path, data


def make_batch(cfg: Config, sp, data, items, tasks):
    m = cfg.model
    srcs, tgts, tids = [], [], []
    for t, i in items:
        src, tgt = data[t]
        tag = sp.piece_to_id(cfg.target_tags[tasks[t].target])
        srcs.append([tag] + src.get(i).tolist() + [m.eos_id])
        tgts.append(tgt.get(i).tolist() + [m.eos_id])
        tids.append(t)
    ls, lt = max(map(len, srcs)), max(map(len, tgts))
    src = torch.full((len(items), ls), m.pad_id, dtype=torch.long)
    tin = torch.full((len(items), lt), m.pad_id, dtype=torch.long)
    tout = torch.full((len(items), lt), m.pad_id, dtype=torch.long)
    for r, (s, y) in enumerate(zip(srcs, tgts)):
        src[r, :len(s)] = torch.tensor(s)
        tin[r, 0] = m.bos_id
        tin[r, 1:len(y)] = torch.tensor(y[:-1])
        tout[r, :len(y)] = torch.tensor(y)
    return src, tin, tout, torch.tensor(tids)


def lr_at(a, step: int, train_seconds: float = 0.0) -> float:
    """Linear warmup, then cosine decay to 5% of the peak at the end of the budget: max_steps, or
    max_hours of training time when that comes first (so a time-boxed run still anneals)."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    frac = (step - a.warmup) / max(1, a.max_steps - a.warmup)
    if a.max_hours:
        frac = max(frac, train_seconds / (a.max_hours * 3600))
    frac = min(1.0, frac)
    return a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def loss_fn(a, cfg, model, src, tin, tout, tids):
    logits, auxes = model(src, tin, tids)
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tout.reshape(-1),
                         ignore_index=cfg.model.pad_id, label_smoothing=a.label_smoothing)
    bal = TaskMoEModel.balance_loss(auxes)
    return ce, bal


@torch.no_grad()
def dev_bleu(a, model, sp, dev_text, tasks):
    from taskmoe_ref.bleu import corpus_bleu
    from taskmoe_ref.decode import translate
    model.eval()
    out = {}
    for t, (s, y) in zip(tasks, dev_text):
        hyp = translate(model, sp, s[: a.eval_bleu], t.name, beam_size=1, max_len=80)
        out[t.name] = corpus_bleu(hyp, y[: a.eval_bleu])[0]
    model.train()
    return out


@torch.no_grad()
def dev_loss(a, cfg, model, sp, dev, tasks):
    model.eval()
    out = {}
    for t, (src_side, tgt_side) in enumerate(dev):
        items = [(0, i) for i in range(len(src_side))]
        tot, n = 0.0, 0
        for j in range(0, len(items), 64):
            src, tin, tout, _ = make_batch(cfg, sp, [(src_side, tgt_side)], items[j:j + 64], [tasks[t]])
            tids = torch.full((src.shape[0],), t, dtype=torch.long)
            dv = next(model.parameters()).device
            src, tin, tout, tids = src.to(dv), tin.to(dv), tout.to(dv), tids.to(dv)
            logits, _ = model(src, tin, tids)
            tot += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tout.reshape(-1),
                                         ignore_index=cfg.model.pad_id, reduction="sum"))
            n += int(tout.ne(cfg.model.pad_id).sum())
        out[tasks[t].name] = tot / n
    model.train()
    return out


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    device = dist_setup()
    os.makedirs(a.run_dir, exist_ok=True)
    langs = a.langs.split(",")
    tasks = [Task(f"en-{l}", "en", l) for l in langs] + [Task(f"{l}-en", l, "en") for l in langs]
    cfg = build_config(a, tasks, langs)
    if RANK == 0:  # one rank builds the vocabulary and the encoded data; the others read them
        if a.init_from and not os.path.exists(os.path.join(a.run_dir, "sentencepiece.model")):
            import shutil
            shutil.copyfile(os.path.join(a.init_from, "sentencepiece.model"),
                            os.path.join(a.run_dir, "sentencepiece.model"))
        sp, spm_path, data = prepare(a, a.run_dir, langs, tasks)
    barrier()
    if RANK != 0:
        sp, spm_path, data = prepare(a, a.run_dir, langs, tasks)
    if sp.get_piece_size() != cfg.model.vocab_size:
        cfg.model.vocab_size = sp.get_piece_size()
    # Dev: 200 pairs per task for a cheap held-out loss.
    dev, dev_text = [], []
    for t in tasks:
        xx = t.target if t.source == "en" else t.source
        rows = read_tsv(corpus_file(a.corpus, xx, "dev"), 200)
        s, y = task_pairs(rows, t)
        dev_text.append((s, y))
        dev.append((EncodedSide.build([sp.encode(x)[: a.max_len] for x in s]),
                    EncodedSide.build([sp.encode(x)[: a.max_len] for x in y])))

    model = TaskMoEModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
    ckpt_path = os.path.join(a.run_dir, "checkpoint.pt")
    step, pool, batch_i, train_seconds, total_tokens = 0, 0, 0, 0.0, 0
    resumed = os.path.exists(ckpt_path)
    if resumed:
        st = torch.load(ckpt_path, map_location="cpu")
        model.load_state_dict(st["model"])
        step, pool, batch_i, train_seconds = st["step"], st["pool"], st["batch"], st["train_seconds"]
        total_tokens = st.get("total_tokens", 0)
        shape_keys = [k for k in vars(a) if k not in ("max_steps", "max_hours", "export", "save_minutes",
                                                       "log_every", "eval_every", "threads", "benchmark_steps",
                                                       "amp", "average_last", "snapshot_minutes", "init_from",
                                                       "export_dtype", "eval_bleu", "corpus", "stop_at_step")]
        changed = [k for k in shape_keys if st["args"].get(k) != getattr(a, k)]
        if changed:
            raise SystemExit(f"{ckpt_path} was trained with different settings ({', '.join(changed)}); "
                             "use the original arguments or a new --run-dir")
        log(a.run_dir, f"resumed from step {step} ({train_seconds / 3600:.2f} h trained)")
    else:
        if a.init_from:
            from taskmoe_ref.checkpoint_io import read_safetensors
            with open(os.path.join(a.init_from, "sentencepiece.model"), "rb") as f1, open(spm_path, "rb") as f2:
                if f1.read() != f2.read():
                    raise SystemExit(f"--init-from {a.init_from}: its sentencepiece.model differs from {spm_path}")
            w = read_safetensors(os.path.join(a.init_from, "model.safetensors"))
            model.load_state_dict({k: v.float() for k, v in w.items()}, strict=True)
            log(a.run_dir, f"initialised from the weights of {a.init_from} (optimizer state: fresh)")
        n_params = sum(p.numel() for p in model.parameters())
        log(a.run_dir, f"new model: {n_params / 1e6:.2f}M parameters; config {json.dumps(cfg.to_dict()['moe'])}")
        if RANK == 0:
            with open(os.path.join(a.run_dir, "args.json"), "w") as f:
                json.dump(vars(a), f, indent=2)
    model.to(device)
    if resumed:  # after .to(device): the optimizer state follows the parameters' device
        opt.load_state_dict(st["optimizer"])
    if WORLD > 1:  # identical start on every rank
        import torch.distributed as dist
        for t in model.state_dict().values():
            dist.broadcast(t, 0)
        log(a.run_dir, f"data parallel: {WORLD} ranks ({'nccl' if device.type == 'cuda' else 'gloo'}), "
                       f"global batch of {a.max_tokens} padded tokens split across ranks")

    def save():
        if RANK != 0:
            return
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "pool": pool,
                    "batch": batch_i, "train_seconds": train_seconds, "total_tokens": total_tokens,
                    "args": vars(a)}, tmp)
        os.replace(tmp, ckpt_path)

    amp = choose_amp(a, a.run_dir, device)
    snap_dir = os.path.join(a.run_dir, "snapshots")
    if RANK == 0:
        os.makedirs(snap_dir, exist_ok=True)
    t_last_snap = time.time()

    def snapshot():
        if RANK != 0:
            return
        path = os.path.join(snap_dir, f"step{step:07d}.pt")
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path + ".tmp")
        os.replace(path + ".tmp", path)
        snaps = sorted(os.listdir(snap_dir))
        for old in [x for x in snaps if x.endswith(".pt")][:-max(1, a.average_last)]:
            os.remove(os.path.join(snap_dir, old))

    probs = temperature_probs([len(s) for s, _ in data], a.temperature)
    sampler = BatchSampler(data, probs, a.max_tokens, a.seed)
    model.train()
    t_last_save = time.time()
    t0, ntok, acc_ce, acc_bal, acc_n = time.time(), 0, 0.0, 0.0, 0
    bench_start = None
    params = list(model.parameters())
    pad = cfg.model.pad_id
    for pool, batch_i, items in sampler.iterate(pool, batch_i):
        t_step = time.time()
        # Every rank draws the same global batch and trains on its own share (rows rank, rank+W, ...):
        # the same batches and the same update as one process, whatever the number of ranks.
        mine = items[RANK::WORLD]
        if mine:
            src, tin, tout, tids = (x.to(device) for x in make_batch(cfg, sp, data, mine, tasks))
            n_tgt, n_src = int(tout.ne(pad).sum()), int(src.ne(pad).sum())
        else:
            n_tgt = n_src = 0
        stop_here = RANK == 0 and (step >= a.max_steps or (a.stop_at_step and step >= a.stop_at_step) or bool(a.max_hours and train_seconds >= a.max_hours * 3600))
        stop_file = RANK == 0 and os.path.exists(os.path.join(a.run_dir, "STOP"))
        # one small collective: global token counts, rank 0's stop decision and clock
        stats = all_reduce_(torch.tensor([n_tgt, n_src, float(stop_here), float(stop_file),
                                          train_seconds if RANK == 0 else 0.0], dtype=torch.float64, device=device))
        g_tgt, g_src = int(stats[0]), int(stats[1])
        train_seconds = float(stats[4])
        if stats[3] > 0:  # touch RUN_DIR/STOP: save, export, exit
            log(a.run_dir, "STOP file found")
            break
        if stats[2] > 0:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(a, step, train_seconds)
        opt.zero_grad(set_to_none=True)
        ce_v, bal_v = 0.0, 0.0
        if mine:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                logits, auxes = model(src, tin, tids)
                ce_sum = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tout.reshape(-1),
                                         ignore_index=pad, label_smoothing=a.label_smoothing, reduction="sum")
                bal = TaskMoEModel.balance_loss(auxes).to(device)
            # mean over the global batch's target tokens (gradients are summed over ranks below)
            loss = ce_sum / max(1, g_tgt) + a.aux_weight * bal / WORLD
            loss.backward()
            ce_v, bal_v = float(ce_sum), float(bal)
        if WORLD > 1:  # one all-reduce of all gradients (+ loss terms for the log); unused experts add 0
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                             + [torch.tensor([ce_v, bal_v, float(bool(mine))], dtype=params[0].dtype, device=device)])
            all_reduce_(flat)
            o = 0
            for p in params:
                p.grad = flat[o:o + p.numel()].view_as(p).clone()
                o += p.numel()
            ce_v, bal_v = float(flat[o]), float(flat[o + 1]) / max(1.0, float(flat[o + 2]))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        batch_i += 1  # the batch after this one is where a resume continues
        train_seconds += time.time() - t_step
        ntok += g_tgt + g_src
        total_tokens += g_tgt
        ce, bal = ce_v / max(1, g_tgt), bal_v
        acc_ce, acc_bal, acc_n = acc_ce + float(ce), acc_bal + float(bal), acc_n + 1
        if a.benchmark_steps:
            if step == 5:
                bench_start, ntok = time.time(), 0
            if step == 5 + a.benchmark_steps:
                dt = time.time() - bench_start
                if RANK == 0:
                    print(f"benchmark: {a.benchmark_steps / dt:.2f} steps/s, {ntok / dt:.0f} tokens/s")
                return
            continue
        if step % a.log_every == 0:
            dt = time.time() - t0
            log(a.run_dir, f"step {step} lr {lr_at(a, step, train_seconds):.2e} ce {acc_ce / acc_n:.3f} bal {acc_bal / acc_n:.3f} "
                           f"tok/s {ntok / dt:.0f} trained {train_seconds / 3600:.2f} h tgt_tokens {total_tokens}")
            t0, ntok, acc_ce, acc_bal, acc_n = time.time(), 0, 0.0, 0.0, 0
        if step % a.eval_every == 0 and RANK == 0:
            dl = dev_loss(a, cfg, model, sp, dev, tasks)
            log(a.run_dir, "dev ce " + " ".join(f"{k} {v:.3f}" for k, v in dl.items()) +
                f" mean {sum(dl.values()) / len(dl):.3f} tgt_tokens {total_tokens}")
            if a.eval_bleu and device.type == "cpu":  # the reference decoder runs on CPU
                db = dev_bleu(a, model, sp, dev_text, tasks)
                log(a.run_dir, f"dev bleu (greedy, first {a.eval_bleu} per task) " +
                    " ".join(f"{k} {v:.2f}" for k, v in db.items()) + f" mean {sum(db.values()) / len(db):.2f}"
                    f" tgt_tokens {total_tokens}")
        if a.average_last > 1 and time.time() - t_last_snap > a.snapshot_minutes * 60:
            snapshot()
            t_last_snap = time.time()
        if time.time() - t_last_save > a.save_minutes * 60:
            save()
            t_last_save = time.time()
    save()
    barrier()
    log(a.run_dir, f"training stopped at step {step} after {train_seconds / 3600:.2f} h")
    if a.stop_at_step and step >= a.stop_at_step and step < a.max_steps:
        log(a.run_dir, f"stopped at step {step} (--stop-at-step); run again without it to continue")
        barrier()
        return
    if a.export and RANK == 0:
        model.to("cpu")
        snapshot()
        snaps = sorted(x for x in os.listdir(snap_dir) if x.endswith(".pt"))[-max(1, a.average_last):]
        if len(snaps) > 1:
            avg = None
            for name in snaps:
                sd = torch.load(os.path.join(snap_dir, name))
                avg = {k: v.double() for k, v in sd.items()} if avg is None else {k: avg[k] + v.double() for k, v in sd.items()}
            model.load_state_dict({k: (v / len(snaps)).float() for k, v in avg.items()})
            log(a.run_dir, f"export: averaged {len(snaps)} snapshots ({', '.join(snaps)})")
            dl = dev_loss(a, cfg, model, sp, dev, tasks)
            log(a.run_dir, "dev ce (averaged) " + " ".join(f"{k} {v:.3f}" for k, v in dl.items()) +
                f" mean {sum(dl.values()) / len(dl):.3f}")
        training = {"command": " ".join(["/usr/bin/python3", "tools/train/train.py"] + (argv or sys.argv[1:])),
                    "steps": step, "train_hours": round(train_seconds / 3600, 3), "threads": a.threads,
                    "corpus": "../shared/corpus (see models/demo/README.md)"}
        keep = {}
        for name in ("README.md",):  # the model card lives beside the weights; the export replaces the dir
            if os.path.exists(os.path.join(a.export, name)):
                with open(os.path.join(a.export, name), "rb") as f:
                    keep[name] = f.read()
        training["amp"] = amp
        training["train_tokens"] = int(total_tokens)
        export_checkpoint(model, spm_path, a.export, a.export_dtype, training)
        for name, blob in keep.items():
            with open(os.path.join(a.export, name), "wb") as f:
                f.write(blob)
        log(a.run_dir, f"exported {a.export} ({a.export_dtype})")
        import shutil
        shutil.copyfile(os.path.join(a.run_dir, "train.log"), os.path.join(a.export, "train.log"))


if __name__ == "__main__":
    main()
