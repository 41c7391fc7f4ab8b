#!/usr/bin/python3
"""Write a random TaskMoE checkpoint (docs/checkpoint-format.md) of any size, for benchmarks and
converter measurements. Tensors are streamed to model.safetensors one at a time, so a checkpoint
of several GB needs little memory. Needs numpy.

    /usr/bin/python3 tools/make_random_checkpoint.py OUT_DIR                     # paper size: ~533M parameters
    tools/make_random_checkpoint.py OUT_DIR --d-model 32 --ff 64 --layers 2 --experts 4 --vocab 250

The defaults are the paper's model: d_model 512, 8 heads, ff 2048 (experts too), 6+6 layers, MoE
in every other layer (1, 3, 5), 32 experts, top-2, vocabulary 32k, task routing by target
language. The SentencePiece model is copied from --spm (default: the test fixtures' model, whose
pieces include the tags <2de> <2en> <2fr>).
"""
import argparse
import json
import os
import shutil
import struct
import sys

try:
    import numpy as np
except ImportError:
    sys.exit("make_random_checkpoint.py needs numpy (pip install numpy)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SPM = os.path.join(ROOT, "tests", "data", "fixtures", "sentencepiece.model")
ST_DTYPES = {"float32": ("F32", np.float32), "float16": ("F16", np.float16), "bfloat16": ("BF16", None)}


def tensor_table(a):
    """(name, shape, std) for every tensor of the config, as in checkpoint.hpp."""
    d, ff, v, e, fe, td = a.d_model, a.ff, a.vocab, a.experts, a.ff, a.task_dim
    out = []
    add = lambda n, s, std=0.02: out.append((n, tuple(s), std))
    add("embed_tokens.weight", (v, d))
    for s in ("encoder", "decoder"):
        route = a.routing_of(s)
        layers = a.moe_layers(s)
        if route.startswith("task:"):
            add(s + ".task_embedding.weight", (len(a.task_keys(s)), td), 1.0)
        add(s + ".layer_norm.weight", (d,), 0.1)
        add(s + ".layer_norm.bias", (d,))
        n_layers = a.layers
        for i in range(n_layers):
            p = "%s.layers.%d." % (s, i)
            attns = ["self_attn"] + (["encoder_attn"] if s == "decoder" else [])
            for at in attns:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    add(p + at + "." + proj + ".weight", (d, d))
                    add(p + at + "." + proj + ".bias", (d,))
                add(p + at + "_layer_norm.weight", (d,), 0.1)
                add(p + at + "_layer_norm.bias", (d,))
            add(p + "final_layer_norm.weight", (d,), 0.1)
            add(p + "final_layer_norm.bias", (d,))
            if i in layers:
                add(p + "moe.experts.fc1.weight", (e, fe, d))
                add(p + "moe.experts.fc1.bias", (e, fe))
                add(p + "moe.experts.fc2.weight", (e, d, fe))
                add(p + "moe.experts.fc2.bias", (e, d))
                add(p + "moe.router.weight", (e, td if route.startswith("task:") else d), 1.0)
            else:
                add(p + "ffn.fc1.weight", (ff, d))
                add(p + "ffn.fc1.bias", (ff,))
                add(p + "ffn.fc2.weight", (d, ff))
                add(p + "ffn.fc2.bias", (d,))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--ff", type=int, default=2048, help="d_ff of dense layers and of each expert")
    ap.add_argument("--layers", type=int, default=6, help="layers per stack")
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--moe-every", type=int, default=2, help="MoE in layers i with i %% N == N-1")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--task-dim", type=int, default=64)
    ap.add_argument("--routing", default="task:target", choices=["token", "task:target", "task:pair", "dense"],
                    help="routing of both stacks (override per stack below)")
    ap.add_argument("--encoder-routing", choices=["token", "task:target", "task:pair", "dense"])
    ap.add_argument("--decoder-routing", choices=["token", "task:target", "task:pair", "dense"])
    ap.add_argument("--tasks", default="en-de,de-en,en-fr,fr-en")
    ap.add_argument("--dtype", default="float32", choices=sorted(ST_DTYPES))
    ap.add_argument("--spm", default=DEFAULT_SPM, help="sentencepiece.model to copy")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    tasks = [t.split("-", 1) for t in a.tasks.split(",")]
    targets = sorted({t[1] for t in tasks})
    a.routing_of = lambda s: getattr(a, s + "_routing") or a.routing
    a.moe_layers = lambda s: [] if a.routing_of(s) == "dense" else \
        [i for i in range(a.layers) if i % a.moe_every == a.moe_every - 1]
    a.task_keys = lambda s: targets if a.routing_of(s) == "task:target" else [s1 + "-" + t1 for s1, t1 in tasks]

    os.makedirs(a.out_dir, exist_ok=True)
    moe = {"num_experts": a.experts, "top_k": a.top_k, "d_ff_expert": a.ff}
    if any(a.routing_of(s).startswith("task:") for s in ("encoder", "decoder")):
        moe["task_embedding_dim"] = a.task_dim
    for s in ("encoder", "decoder"):
        moe[s] = {"routing": a.routing_of(s), "layers": a.moe_layers(s)}
        if a.routing_of(s).startswith("task:"):
            moe[s]["task_keys"] = a.task_keys(s)
    config = {
        "format": "taskmoe-checkpoint", "format_version": 1,
        "model": {"d_model": a.d_model, "n_heads": a.heads, "d_ff": a.ff,
                  "encoder_layers": a.layers, "decoder_layers": a.layers,
                  "vocab_size": a.vocab, "max_positions": 256, "norm": "pre", "activation": "relu",
                  "positional_encoding": "sinusoidal", "shared_embeddings": True,
                  "scale_embeddings": True, "layer_norm_eps": 1e-5,
                  "pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3},
        "moe": moe,
        "tasks": [{"name": s + "-" + t, "source": s, "target": t} for s, t in tasks],
        "target_tags": {t: "<2%s>" % t for t in targets},
        "weights_dtype": a.dtype,
        "training": {"generator": "tools/make_random_checkpoint.py", "seed": a.seed},
    }
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shutil.copyfile(a.spm, os.path.join(a.out_dir, "sentencepiece.model"))

    st_name, np_type = ST_DTYPES[a.dtype]
    elem = 4 if a.dtype == "float32" else 2
    table = tensor_table(a)
    header, off = {}, 0
    for name, shape, _ in table:
        n = int(np.prod(shape)) * elem
        header[name] = {"dtype": st_name, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hs = json.dumps(header, separators=(",", ":"))
    hs += " " * ((8 - len(hs) % 8) % 8)
    rng = np.random.default_rng(a.seed)
    params = 0
    with open(os.path.join(a.out_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hs)) + hs.encode())
        for name, shape, std in table:
            # Row by row (first axis) keeps memory at one slice even for [E, ff, d] experts.
            for chunk in range(shape[0]) if len(shape) == 3 else [None]:
                sub = shape[1:] if chunk is not None else shape
                x = rng.standard_normal(sub, dtype=np.float32) * np.float32(std)
                if name.endswith("layer_norm.weight"):
                    x += np.float32(1.0)
                if a.dtype == "bfloat16":
                    f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
                else:
                    f.write(x.astype(np_type).tobytes())
            params += int(np.prod(shape))
    print("%s: %.1fM parameters, %.2f GB" % (a.out_dir, params / 1e6, (off + 8 + len(hs)) / 1e9))


if __name__ == "__main__":
    main()
