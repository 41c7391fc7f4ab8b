#!/usr/bin/python3
"""taskmoe against CTranslate2 on the same weights, side by side in one run.

    /usr/bin/python3 benchmarks/bench_vs_ctranslate2.py --ct2-python DIR [--build build/release]
        [--work /tmp/taskmoe-ct2] [--routing dense|task] [--dtypes int8,float32] [--beams 1,4]
        [--batches 1,16,64] [--threads 1,2] [--length 30] [--reps 3] [--ct2-isa AVX512]
        [--checkpoint DIR --task T --sentences FILE --length 0] [--memory]

--ct2-python is the folder holding an installed CTranslate2 Python package (its `ctranslate2`
module, built against its shared library); without it the benchmark says so and exits 0 without
measuring. CTranslate2 is never built or shipped by this project: bring your own.

What it does:
1. writes a random Transformer-base checkpoint with tools/make_random_checkpoint.py (d_model 512,
   8 heads, ff 2048, 6+6 layers, vocab 8000, pre-norm, ReLU, shared embeddings; --routing task:
   MoE every other layer, 8 experts, top-2, task routing) and extracts en-de with taskmoe-convert
   at float32 and int8;
2. writes the same weights as a CTranslate2 model with ctranslate2.specs (fused QKV as CTranslate2
   stores it, our sinusoidal table as its position encodings; for --routing task the task's two
   experts folded with their gates into one FFN of width 2 * ff, exact for ReLU);
3. checks that float32 greedy outputs of both engines agree token for token;
4. times target tokens/s of both engines on the same source ids (25 tokens, random) with exactly
   --length output tokens (min = max decoding length), alternating the engines (A B A B ...) and
   taking the median of --reps timings per cell (taskmoe's over all its timings of the cell;
   one CTranslate2 translator exists at a time). Both engines get every sentence of a cell in one
   call with a batch limit (CTranslate2's translate_batch(max_batch_size), bench_decode
   --batching translator): each sorts by length and runs its batches on its threads. Threads T: taskmoe with translator threads T
   (sub-batches, the rest inside GEMMs); CTranslate2 with intra_threads=T, and for T > 1 also
   inter_threads=T replicas (its better figure is the one the ratio uses). Each cell translates
   max(batch * T, 16) sentences, so T replicas (or T sub-batches) each get a full batch.
Free-length decoding on a real model: --checkpoint DIR (a trained checkpoint such as models/demo)
--task T --sentences FILE (source text, one sentence per line or the first column of a TSV, encoded
with the checkpoint's SentencePiece) --length 0: each engine decodes until EOS (at most
--max-length tokens), so costs that grow with the output show; each engine's tokens/s is its own
token count over its own time, and the table says how many float32 greedy outputs agree.
--memory: load time and peak RSS of the int8 model instead (taskmoe's .tmoe against CTranslate2's
model saved with int8 weights), three runs each per --threads value (taskmoe-translate --threads T,
whose checksums then run on T threads; CTranslate2 intra_threads=T).
--vocabulary-map FILE: both engines score only a target shortlist per batch (the map in
CTranslate2's vmap.txt format over the checkpoint's SentencePiece pieces, e.g. from
tools/make_vocabulary_map.py): taskmoe with --vocabulary-map, CTranslate2 with the map (in its
token names) as the model's vmap.txt and use_vmap=True.
Prints a machine line and a Markdown table with ratios (taskmoe / CTranslate2).
"""
import argparse
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def read_safetensors(path, np):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            types = {"F32": np.float32, "F16": np.float16}
            if info["dtype"] not in types:
                sys.exit(f"bench_vs_ctranslate2: {name}: only F32 and F16 checkpoints are supported")
            b, e = info["data_offsets"]
            f.seek(base + b)
            # F16 widens exactly to the f32 both engines compute in.
            out[name] = np.frombuffer(f.read(e - b), dtype=types[info["dtype"]]).reshape(info["shape"]).astype(np.float32)
    return out


def sinusoidal(n, d, np):
    # Our table (model/transformer.hpp): interleaved sin/cos, computed in double.
    p = np.zeros((n, d), dtype=np.float64)
    pos = np.arange(n, dtype=np.float64)[:, None]
    i2 = np.arange(0, d, 2, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, i2 / d)
    p[:, 0::2] = np.sin(angle)
    p[:, 1::2] = np.cos(angle)[:, : p[:, 1::2].shape[1]]
    return p.astype(np.float32)


def task_gates(convert, ckpt, task):
    """{(stack, layer): [(expert, gate), ...]} from `taskmoe-convert --list-tasks`, whose lines
    read `  encoder.1: experts 4 (gate 0.5499), 0 (gate 0.4501)`. The gates are printed to 4
    decimals, so the folded CTranslate2 model differs from ours in the 4th decimal of each gate:
    same shapes and work, not bit-identical outputs (the float32 check says how many agree)."""
    out = subprocess.run([convert, "--checkpoint", ckpt, "--list-tasks"], check=True,
                         capture_output=True, text=True).stdout
    gates, inside = {}, False
    for line in out.splitlines():
        if re.match(r"^\S+\s+\(", line):
            inside = line.split()[0] == task
            continue
        m = re.match(r"^\s+(encoder|decoder)\.(\d+): experts (.*)$", line)
        if inside and m:
            pairs = re.findall(r"(\d+) \(gate ([0-9.eE+-]+)\)", m.group(3))
            gates[(m.group(1), int(m.group(2)))] = [(int(e), float(g)) for e, g in pairs]
    if not gates:
        sys.exit(f"bench_vs_ctranslate2: no gates for task {task} in taskmoe-convert --list-tasks")
    return gates


def write_ct2_model(ct2, np, ckpt_dir, out_dir, cfg, gates, quantization=None):
    specs = ct2.specs
    m = cfg["model"]
    d, heads, L = m["d_model"], m["n_heads"], m["encoder_layers"]
    w = read_safetensors(os.path.join(ckpt_dir, "model.safetensors"), np)
    moe = cfg["moe"]
    moe_layers = {s: set(moe[s]["layers"]) if moe[s]["routing"] != "dense" else set() for s in ("encoder", "decoder")}
    spec = specs.TransformerSpec.from_config((L, m["decoder_layers"]), heads, pre_norm=m["norm"] == "pre")
    spec.config.layer_norm_epsilon = m["layer_norm_eps"]
    emb = w["embed_tokens.weight"] if m["shared_embeddings"] else None
    pos = sinusoidal(m["max_positions"], d, np)

    def lin(spec_lin, prefix, parts=None):
        names = parts or [prefix]
        spec_lin.weight = np.concatenate([w[n + ".weight"] for n in names], axis=0)
        spec_lin.bias = np.concatenate([w[n + ".bias"] for n in names], axis=0)

    def ln(spec_ln, prefix):
        spec_ln.gamma = w[prefix + ".weight"]
        spec_ln.beta = w[prefix + ".bias"]

    def ffn(spec_ffn, stack, i, p):
        ln(spec_ffn.layer_norm, p + "final_layer_norm")
        if i not in moe_layers[stack]:
            lin(spec_ffn.linear_0, p + "ffn.fc1")
            lin(spec_ffn.linear_1, p + "ffn.fc2")
            return
        kept = gates[(stack, i)]
        f1w, f1b, f2w = w[p + "moe.experts.fc1.weight"], w[p + "moe.experts.fc1.bias"], w[p + "moe.experts.fc2.weight"]
        f2b = w[p + "moe.experts.fc2.bias"]
        spec_ffn.linear_0.weight = np.concatenate([f1w[e] for e, _ in kept], axis=0)
        spec_ffn.linear_0.bias = np.concatenate([f1b[e] for e, _ in kept], axis=0)
        spec_ffn.linear_1.weight = np.concatenate([g * f2w[e] for e, g in kept], axis=1).astype(np.float32)
        spec_ffn.linear_1.bias = sum(g * f2b[e] for e, g in kept).astype(np.float32)

    for stack, s in (("encoder", spec.encoder), ("decoder", spec.decoder)):
        (s.embeddings[0] if stack == "encoder" else s.embeddings).weight = emb if emb is not None else w[stack + ".embed_tokens.weight"]
        s.position_encodings.encodings = pos
        s.scale_embeddings = m["scale_embeddings"]
        if m["norm"] == "pre":
            ln(s.layer_norm, stack + ".layer_norm")
        for i, layer in enumerate(s.layer):
            p = f"{stack}.layers.{i}."
            a = p + "self_attn."
            ln(layer.self_attention.layer_norm, p + "self_attn_layer_norm")
            lin(layer.self_attention.linear[0], None, [a + "q_proj", a + "k_proj", a + "v_proj"])
            lin(layer.self_attention.linear[1], a + "out_proj")
            if stack == "decoder":
                c = p + "encoder_attn."
                ln(layer.attention.layer_norm, p + "encoder_attn_layer_norm")
                lin(layer.attention.linear[0], c + "q_proj")
                lin(layer.attention.linear[1], None, [c + "k_proj", c + "v_proj"])
                lin(layer.attention.linear[2], c + "out_proj")
            ffn(layer.ffn, stack, i, p)
    spec.decoder.projection.weight = emb if emb is not None else w["decoder.output_projection.weight"]
    if "decoder.output_projection.bias" in w:
        spec.decoder.projection.bias = w["decoder.output_projection.bias"]
    vocab = ["<blank>", "<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(4, m["vocab_size"])]
    spec.register_source_vocabulary(vocab)
    spec.register_target_vocabulary(vocab)
    spec.validate()
    if quantization:
        spec.optimize(quantization=quantization)  # weights stored quantized, as its converters write them
    os.makedirs(out_dir, exist_ok=True)
    spec.save(out_dir)


INT8_WEIGHTS = "auto"  # bench_decode --int8-weights (--int8-weights here)


def run_ours(bench, model, ids_file, beam, batch, length, threads, reps, out_file=None, max_length=256, vmap=None,
             length_penalty=1.0):
    """length > 0: exactly `length` tokens; 0: free length, up to max_length."""
    cmd = [bench, "--model", model, "--input", ids_file, "--beam", str(beam), "--batch-size", str(batch),
           "--max-length", str(length or max_length), "--min-length", str(length), "--threads", str(threads),
           "--reps", str(reps), "--batching", "translator", "--length-penalty", repr(length_penalty),
           "--int8-weights", INT8_WEIGHTS] + (["--vocabulary-map", vmap] if vmap else [])
    if out_file:
        cmd += ["--output", out_file]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"tokens (\d+) seconds ([0-9.]+)", out)
    return int(m.group(1)), float(m.group(2)), out.splitlines()[0]


CT2_LOAD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import ctranslate2
def rss_mb():  # resident now (ru_maxrss is a peak: the import's own peak can hide the model)
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss_mb()
t0 = time.perf_counter()
tr = ctranslate2.Translator(sys.argv[2], device="cpu", compute_type="int8_float32", intra_threads=int(sys.argv[3]))
print(time.perf_counter() - t0, before, rss_mb())
"""


def measure_memory(args, ct2, np, ckpt, out_dir, cfg, ours_int8, task_routed, convert):
    """Load time and memory of the int8 model: taskmoe-translate's whole-process peak RSS (load,
    verify, pack; it reports its load time) against a Python process that loads CTranslate2's
    model saved with int8 weights (its resident memory after the load minus that after
    `import ctranslate2`)."""
    ct2_int8 = os.path.join(out_dir, "ct2-int8")
    if not os.path.exists(os.path.join(ct2_int8, "model.bin")):
        gates = task_gates(convert, ckpt, args.task) if task_routed else {}
        write_ct2_model(ct2, np, ckpt, ct2_int8, cfg, gates, quantization="int8")
    translate = os.path.join(args.build, "examples", "taskmoe-translate")
    mb = lambda path: os.path.getsize(path) / 1e6
    print(f"machine: {cpu_model()} | CTranslate2 {ct2.__version__} | load average {os.getloadavg()[0]:.2f}")
    print(f"files: taskmoe int8 {mb(ours_int8):.1f} MB, CTranslate2 int8 model.bin {mb(os.path.join(ct2_int8, 'model.bin')):.1f} MB")
    print("| threads | run | taskmoe load s | taskmoe peak RSS MB (whole process) | CT2 load s | CT2 RSS MB after load (after import) | CT2 model RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:  # ours --threads T, CTranslate2 intra_threads=T
        for run in range(3):
            r = subprocess.run(["/usr/bin/time", "-f", "%M", translate, "--model", ours_int8, "--verbose",
                                "--threads", str(threads), "--int8-weights", INT8_WEIGHTS],
                               input="", capture_output=True, text=True, check=True)
            load = float(re.search(r"loaded in ([0-9.]+) s", r.stderr).group(1))
            peak = int(r.stderr.strip().splitlines()[-1]) / 1024
            c = subprocess.run([sys.executable, "-c", CT2_LOAD, args.ct2_python, ct2_int8, str(threads)],
                               capture_output=True, text=True, check=True).stdout.split()
            ct_load, ct_before, ct_after = float(c[0]), float(c[1]), float(c[2])
            print(f"| {threads} | {run + 1} | {load:.3f} | {peak:.0f} | {ct_load:.3f} | {ct_after:.0f} ({ct_before:.0f}) "
                  f"| {ct_after - ct_before:.0f} |")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct2-python", help="folder with the ctranslate2 Python package")
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "taskmoe-ct2"))
    ap.add_argument("--routing", default="dense", choices=["dense", "task"])
    ap.add_argument("--dtypes", default="int8,float32")
    ap.add_argument("--beams", default="1,4")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--length", type=int, default=30, help="output tokens per sentence; 0: free length (until EOS)")
    ap.add_argument("--max-length", type=int, default=256, help="free length: at most this many tokens")
    ap.add_argument("--checkpoint", help="a trained checkpoint (e.g. models/demo) instead of random weights")
    ap.add_argument("--task", default="en-de")
    ap.add_argument("--sentences", help="source sentences (text or TSV, first column) instead of random ids")
    ap.add_argument("--sentence-count", type=int, default=0, help="sentences to use (0: max(batch * threads, 16) per cell)")
    ap.add_argument("--source-length", type=int, default=25)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--length-penalty", type=float, default=1.0,
                    help="beam search's length penalty for both engines (0: both stop a sentence once its best "
                         "beam has finished)")
    ap.add_argument("--vocabulary-map", help="target shortlist for both engines (vmap.txt format, SentencePiece pieces)")
    ap.add_argument("--ct2-isa", default="", help="CT2_FORCE_CPU_ISA for CTranslate2 (e.g. AVX512)")
    ap.add_argument("--int8-weights", default="auto", choices=["auto", "full", "narrow"],
                    help="our int8 weights (translator_options::int8_weights): auto = narrow on AVX2 CPUs without VNNI")
    ap.add_argument("--memory", action="store_true",
                    help="instead of speed: load time and peak RSS of the int8 model, ours against CTranslate2's saved in int8")
    args = ap.parse_args()
    if not args.ct2_python:
        print("bench_vs_ctranslate2: skipped: no CTranslate2 given (--ct2-python DIR with its Python package)")
        return 0
    if args.ct2_isa:
        os.environ["CT2_FORCE_CPU_ISA"] = args.ct2_isa
    global INT8_WEIGHTS
    INT8_WEIGHTS = args.int8_weights
    sys.path.insert(0, args.ct2_python)
    import numpy as np
    import ctranslate2 as ct2

    bench = os.path.join(args.build, "benchmarks", "bench_decode")
    convert = os.path.join(args.build, "tools", "taskmoe-convert")
    for exe in (bench, convert):
        if not os.access(exe, os.X_OK):
            sys.exit(f"bench_vs_ctranslate2: {exe} not built (cmake --build {args.build})")
    os.makedirs(args.work, exist_ok=True)
    ckpt = args.checkpoint or os.path.join(args.work, f"ckpt-{args.routing}")
    # Converted files and the CTranslate2 model of a given checkpoint live in the work folder.
    out_dir = os.path.join(args.work, os.path.basename(os.path.normpath(ckpt)) + "-" + args.task) if args.checkpoint else ckpt
    os.makedirs(out_dir, exist_ok=True)
    if not args.checkpoint and not os.path.exists(os.path.join(ckpt, "config.json")):
        # An 8000-piece SentencePiece word model over pseudo-words (as bench_runtime makes), so every
        # id the random model emits decodes (the test fixtures' model is smaller).
        spm_prefix = os.path.join(args.work, "spm8k")
        if not os.path.exists(spm_prefix + ".model"):
            import random
            r = random.Random(0)
            with open(spm_prefix + ".txt", "w") as f:
                for _ in range(20000):
                    f.write(" ".join(f"w{r.randrange(12000)}" for _ in range(12)) + "\n")
            subprocess.run(["spm_train", f"--input={spm_prefix}.txt", f"--model_prefix={spm_prefix}",
                            "--vocab_size=8000", "--model_type=word", "--pad_id=0", "--unk_id=1", "--bos_id=2",
                            "--eos_id=3", "--user_defined_symbols=<2de>,<2en>,<2fr>", "--minloglevel=2"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        extra = ["--spm", spm_prefix + ".model"] + (["--routing", "dense"] if args.routing == "dense" else ["--routing", "task:target", "--experts", "8"])
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_checkpoint.py"), ckpt,
                        "--vocab", "8000", "--tasks", "en-de,de-en"] + extra, check=True, stdout=subprocess.DEVNULL)
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    task_routed = any(cfg.get("moe", {}).get(s, {}).get("routing", "dense").startswith("task") for s in ("encoder", "decoder"))
    routing = "task" if task_routed else "dense"
    ours = {}
    for dt in ("float32", "int8"):
        ours[dt] = os.path.join(out_dir, f"{args.task}-{dt}.tmoe")
        # Reconverted whenever the converter is newer than the file: a cached file from an older
        # converter (say, before int8 embeddings) would time and score yesterday's format.
        if not os.path.exists(ours[dt]) or os.path.getmtime(ours[dt]) < os.path.getmtime(convert):
            subprocess.run([convert, "--checkpoint", ckpt, "--task", args.task, "--quantization", dt,
                            "--output", ours[dt], "--force"], check=True, stdout=subprocess.DEVNULL)
    ct2_dir = os.path.join(out_dir, "ct2")
    if not os.path.exists(os.path.join(ct2_dir, "model.bin")):
        gates = task_gates(convert, ckpt, args.task) if task_routed else {}
        write_ct2_model(ct2, np, ckpt, ct2_dir, cfg, gates)

    if args.memory:
        return measure_memory(args, ct2, np, ckpt, out_dir, cfg, ours["int8"], task_routed, convert)

    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(ckpt, "sentencepiece.model"))
    tag = sp.piece_to_id(cfg["target_tags"][args.task.split("-")[1]])
    if args.vocabulary_map:
        # The same map in CTranslate2's token names (t<id>, specials by name), as its model's vmap.txt.
        names = {0: "<blank>", 1: "<unk>", 2: "<s>", 3: "</s>"}
        name = lambda piece: names.get(sp.piece_to_id(piece), f"t{sp.piece_to_id(piece)}")
        with open(args.vocabulary_map, encoding="utf-8") as f, open(os.path.join(ct2_dir, "vmap.txt"), "w") as out:
            for line in f:
                src, _, tgt = line.rstrip("\r\n").partition("\t")
                if any(sp.piece_to_id(p) == 1 and p != "<unk>" for p in src.split()):
                    continue  # a source piece outside the vocabulary never matches (taskmoe drops it too)
                out.write(" ".join(map(name, src.split())) + "\t" + " ".join(map(name, tgt.split())) + "\n")
    rng = np.random.default_rng(0)
    n_max = max(64, max(int(b) for b in args.batches.split(",")) * max(int(t) for t in args.threads.split(",")))
    n_max = max(n_max, args.sentence_count)
    if args.sentences:
        with open(args.sentences, encoding="utf-8") as f:
            texts = [line.rstrip("\n").split("\t")[0] for line in f if line.strip()]
        # Room for the target tag and EOS within the model's positions.
        sources = [sp.encode(t)[: cfg["model"]["max_positions"] - 2] for t in texts[:n_max]]
        sources = [s for s in sources if s]
        n_max = len(sources)
    else:
        sources = [[int(x) for x in rng.integers(10, cfg["model"]["vocab_size"], args.source_length)] for _ in range(n_max)]
    free = args.length == 0

    def cell_sentences(batch, threads):
        return min(n_max, args.sentence_count or max(batch * threads, 16))
    ids_file = os.path.join(args.work, "ids.txt")

    def write_ids(n):
        with open(ids_file, "w") as f:
            for s in sources[:n]:
                f.write(" ".join(map(str, s)) + "\n")

    def ct2_tokens(n):
        return [[f"t{tag}"] + [f"t{i}" for i in s] + ["</s>"] for s in sources[:n]]

    def ct2_run(tr, n, beam, batch, vmap=bool(args.vocabulary_map)):
        res = tr.translate_batch(ct2_tokens(n), beam_size=beam, max_batch_size=batch,
                                 max_decoding_length=args.length or args.max_length,
                                 min_decoding_length=args.length, return_scores=False,
                                 use_vmap=vmap, length_penalty=args.length_penalty)
        return res

    # 3. float32 agreement (greedy)
    n_check = min(n_max, 32 if not free else 128)
    write_ids(n_check)
    out_ids = os.path.join(args.work, "ours.txt")
    special = {"<blank>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    tr = ct2.Translator(ct2_dir, device="cpu", compute_type="float32", intra_threads=1)
    agree = {}
    for vmap in [None, args.vocabulary_map] if args.vocabulary_map else [None]:
        _, _, machine = run_ours(bench, ours["float32"], ids_file, 1, 16, args.length, 1, 1, out_ids, args.max_length, vmap)
        theirs = [[special[t] if t in special else int(t[1:]) for t in r.hypotheses[0]]
                  for r in ct2_run(tr, n_check, 1, 16, bool(vmap))]
        mine = [[int(x) for x in line.split()] for line in open(out_ids)]
        agree[vmap] = sum(a == b for a, b in zip(mine, theirs))
    del tr

    weights = re.search(r"int8 weights (\S+ \(\w+\))", machine)
    print(f"machine: {cpu_model()} | taskmoe: {machine.split('|')[1].strip()}, int8 weights {weights.group(1) if weights else '?'}"
          f" | CTranslate2 {ct2.__version__}"
          f" (CT2_FORCE_CPU_ISA={os.environ.get('CT2_FORCE_CPU_ISA', 'unset')}) | length penalty {args.length_penalty:g}"
          f" | load average {os.getloadavg()[0]:.2f}")
    source = f"{len(sources)} sentences of {args.sentences}" if args.sentences else f"source {args.source_length} random tokens"
    output = f"free length (until EOS, at most {args.max_length})" if free else f"output exactly {args.length}"
    print(f"model: {args.checkpoint or 'random'} task {args.task}: {cfg['model']['d_model']}d {cfg['model']['encoder_layers']}+"
          f"{cfg['model']['decoder_layers']} layers, routing {routing} | {source}, {output} | median of {args.reps}, engines alternated")
    print(f"float32 greedy outputs identical: {agree[None]}/{n_check}"
          + (f" (full vocabulary), {agree[args.vocabulary_map]}/{n_check} with the vocabulary map "
             f"{args.vocabulary_map}, which every timing below uses on both engines" if args.vocabulary_map else ""))
    print()
    print("| dtype | threads | beam | batch | sentences | taskmoe tok/s | CT2 intra tok/s | CT2 inter tok/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    beams = [int(b) for b in args.beams.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    for dt in args.dtypes.split(","):
        ct_type = "int8_float32" if dt == "int8" else "float32"
        for threads in [int(t) for t in args.threads.split(",")]:
            # One CTranslate2 translator alive at a time: the OpenMP workers of an idle one spin
            # and would steal the cores from the one being timed.
            configs = {"intra": dict(intra_threads=threads, inter_threads=1)}
            if threads > 1:
                configs["inter"] = dict(intra_threads=1, inter_threads=threads)
            t_ours = {}
            t_ct = {}
            for name, kw in configs.items():
                engine = ct2.Translator(ct2_dir, device="cpu", compute_type=ct_type, **kw)
                for beam in beams:
                    for batch in batches:
                        n = cell_sentences(batch, threads)
                        tokens = n * args.length
                        write_ids(n)
                        ct2_run(engine, n, beam, batch)  # warm-up
                        for _ in range(args.reps):
                            tok, sec, _ = run_ours(bench, ours[dt], ids_file, beam, batch, args.length, threads, 1,
                                                   max_length=args.max_length, vmap=args.vocabulary_map,
                                                   length_penalty=args.length_penalty)
                            if not free and tok != tokens:
                                sys.exit(f"bench_vs_ctranslate2: taskmoe produced {tok} tokens, expected {tokens}")
                            t_ours.setdefault((beam, batch), []).append(tok / sec)
                            t0 = time.perf_counter()
                            res = ct2_run(engine, n, beam, batch)
                            sec = time.perf_counter() - t0
                            got = sum(len(r.hypotheses[0]) for r in res)
                            if not free and got != tokens:
                                sys.exit(f"bench_vs_ctranslate2: CTranslate2 produced {got} tokens, expected {tokens}")
                            t_ct.setdefault((name, beam, batch), []).append(got / sec)
                del engine
            for beam in beams:
                for batch in batches:
                    n = cell_sentences(batch, threads)
                    ours_tps = statistics.median(t_ours[(beam, batch)])
                    ct = {k: statistics.median(t_ct[(k, beam, batch)]) for k in configs}
                    inter = f"{ct['inter']:.0f}" if "inter" in ct else "-"
                    print(f"| {dt} | {threads} | {beam} | {batch} | {n} | {ours_tps:.0f} | {ct['intra']:.0f} | {inter} | "
                          f"{ours_tps / max(ct.values()):.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
