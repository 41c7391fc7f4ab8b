#!/usr/bin/python3
"""Load test of taskmoe-server (BENCHMARKS.md section 6): throughput and p50/p99 latency at 1, 8
and 64 concurrent clients, with and without dynamic batching. Loopback only; each point is bounded
in time (--seconds; with the Python client also in requests, --max-requests). Each request is one
sentence (the common case of browser extensions and SearXNG), cycling through a fixed list of
sentences of different lengths. The load comes from wrk (--client wrk, the default when wrk is
installed: C, one event-loop thread, keep-alive connections, a Lua script for the bodies) or from
Python threads with keep-alive sessions (--client python; it costs the 2-vCPU machine a visible
share of a core at a few hundred requests/s, so it understates the server there).

  benchmarks/bench_server.py --server build/release/tools/taskmoe-server --checkpoint models/demo
  benchmarks/bench_server.py ... --smoke     # CI: 1 and 8 clients, 2 s, checks instead of numbers
  benchmarks/bench_server.py ... --memory    # RSS serving every task, then mixed-task tokens/s
  benchmarks/bench_server.py --make-token-routed OUT --checkpoint models/demo   # a TokenMoE twin

Every answer must be 200 (any other status is counted and fails --smoke). The server's own
/metrics give the mean batch size of each point.
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "server"))
from server_util import Server  # noqa: E402

SENTENCES = [
    "Could not open the file.",
    "The printer is not connected.",
    "Save the document before closing the window.",
    "Show hidden files",
    "Select a folder.",
    "The connection to the server was lost; trying again in 10 seconds.",
    "Delete the selected items?",
    "You do not have permission to change these settings.",
    "Open the file",
    "The update was installed successfully and will take effect after a restart.",
    "Cancel",
    "A new version of this application is available.",
    "The file name contains characters that are not allowed.",
    "Check your network connection and try again.",
    "Print",
    "Are you sure you want to quit without saving your changes?",
]


def machine_line():
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    return "%s, %d vCPU, %s, Python %s" % (model, os.cpu_count() or 0, platform.platform(terse=True),
                                          platform.python_version())


def metric(text, name):
    m = re.search("^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def tokens_total(text):
    return sum(float(v) for v in re.findall(r"^taskmoe_target_tokens_total\{[^}]*\} (\S+)$", text, re.M))


def run_point(url, clients, seconds, max_requests, source, target):
    latencies, statuses = [], {}
    lock = threading.Lock()
    sent = [0]
    stop_at = time.monotonic() + seconds

    def client(i):
        s = requests.Session()
        k = i
        while time.monotonic() < stop_at:
            with lock:
                if sent[0] >= max_requests:
                    return
                sent[0] += 1
            q = SENTENCES[k % len(SENTENCES)]
            k += 1
            t0 = time.monotonic()
            try:
                r = s.post(url + "/translate", json={"q": q, "source": source, "target": target}, timeout=120)
                status = r.status_code
                ok = status == 200 and isinstance(r.json().get("translatedText"), str)
            except requests.RequestException as e:
                status, ok = type(e).__name__, False
            dt = time.monotonic() - t0
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if ok:
                    latencies.append(dt)

    before = requests.get(url + "/metrics", timeout=10).text
    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    after = requests.get(url + "/metrics", timeout=10).text
    batches = metric(after, "taskmoe_batch_sentences_count") - metric(before, "taskmoe_batch_sentences_count")
    batched = metric(after, "taskmoe_batch_sentences_sum") - metric(before, "taskmoe_batch_sentences_sum")
    lat = sorted(latencies)

    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))] * 1000 if lat else float("nan")

    return {
        "clients": clients, "requests": len(lat), "statuses": statuses, "seconds": wall,
        "rps": len(lat) / wall if wall > 0 else 0.0,
        "tokens_per_s": (tokens_total(after) - tokens_total(before)) / wall if wall > 0 else 0.0,
        "p50_ms": pct(50), "p99_ms": pct(99), "mean_ms": statistics.mean(lat) * 1000 if lat else float("nan"),
        "mean_batch": batched / batches if batches else 0.0,
    }


def rss_mb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_memory(a, model):
    """RSS of a server holding every task of `model`: after load, after one request per task, and
    after a mixed-task load (every request a different task); target tokens/s of that load."""
    with Server(a.server, model + ["--threads", str(a.threads)]) as s:
        pid = s.proc.pid
        loaded = rss_mb(pid)
        langs = requests.get(s.url + "/languages", timeout=10).json()
        tasks = [(l["code"], t) for l in langs for t in l["targets"]]
        for src, tgt in tasks:
            q = SENTENCES[0] if src == "en" else "Bonjour"
            r = requests.post(s.url + "/translate", json={"q": q, "source": src, "target": tgt}, timeout=60)
            r.raise_for_status()
        served = rss_mb(pid)
        before = requests.get(s.url + "/metrics", timeout=10).text
        stop_at = time.monotonic() + a.seconds
        counts = [0]
        lock = threading.Lock()

        def client(i):
            sess, k = requests.Session(), i
            while time.monotonic() < stop_at:
                src, tgt = tasks[k % len(tasks)]
                sess.post(s.url + "/translate", json={"q": SENTENCES[k % len(SENTENCES)], "source": src,
                                                      "target": tgt}, timeout=120).raise_for_status()
                k += 1
                with lock:
                    counts[0] += 1

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        after = requests.get(s.url + "/metrics", timeout=10).text
        loaded_log = re.search(r"loaded in ([0-9.]+) s \(([0-9.]+) MB owned\)", s.text_log())
        row = (" ".join(model), len(tasks), loaded, served, rss_mb(pid), rss_mb(pid, "VmHWM"),
               (tokens_total(after) - tokens_total(before)) / wall, counts[0] / wall,
               float(loaded_log.group(1)) if loaded_log else float("nan"))
        if s.stop() != 0:
            sys.exit("the server did not exit 0")
    print("| %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.2f |" % row, flush=True)


def make_token_routed(checkpoint, out):
    """Copies a task-routed checkpoint with every MoE layer token-routed instead: the same experts,
    a random router over the hidden state ([E, d_model]), no task embeddings. Translations are
    not meaningful (the router was never trained); sizes and speed are those of a TokenMoE model
    of the same shapes."""
    import json
    import shutil
    import struct

    import numpy as np

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(checkpoint, "config.json")) as f:
        cfg = json.load(f)
    for stack in ("encoder", "decoder"):
        m = cfg["moe"].get(stack)
        if m and m["routing"] != "dense":
            m["routing"] = "token"
            m.pop("task_keys", None)
    cfg["moe"].pop("task_embedding_dim", None)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copy(os.path.join(checkpoint, "sentencepiece.model"), out)
    d, experts = cfg["model"]["d_model"], cfg["moe"]["num_experts"]
    with open(os.path.join(checkpoint, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    rng = np.random.default_rng(0)
    meta = header.pop("__metadata__", None)
    tensors = []
    for name, t in header.items():
        if name.endswith("task_embedding.weight"):
            continue
        if name.endswith("moe.router.weight"):
            dtype = {"F16": np.float16, "F32": np.float32, "BF16": None}[t["dtype"]]
            if dtype is None:
                sys.exit("bfloat16 checkpoints are not handled here")
            blob = (rng.standard_normal((experts, d)) * 0.5).astype(dtype).tobytes()
            tensors.append((name, t["dtype"], [experts, d], blob))
        else:
            b, e = t["data_offsets"]
            tensors.append((name, t["dtype"], t["shape"], data[b:e]))
    out_header, offset = {}, 0
    for name, dtype, shape, blob in tensors:
        out_header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    if meta is not None:
        out_header["__metadata__"] = meta
    text = json.dumps(out_header).encode()
    text += b" " * (-(8 + len(text)) % 64)  # data starts aligned
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, blob in tensors:
            f.write(blob)
    print(out)


def run_point_wrk(url, clients, seconds, source, target, workdir):
    """One load point with wrk: requests/s and latency percentiles from its --latency report."""
    import json
    script = os.path.join(workdir, "post.lua")
    bodies = [json.dumps({"q": q, "source": source, "target": target}) for q in SENTENCES]
    with open(script, "w") as f:
        f.write("local bodies = {%s}\nlocal i = 0\n" % ", ".join(json.dumps(b) for b in bodies))
        f.write("request = function()\n  i = i + 1\n  return wrk.format(\"POST\", \"/translate\", "
                "{[\"Content-Type\"] = \"application/json\"}, bodies[(i % #bodies) + 1])\nend\n")
    before = requests.get(url + "/metrics", timeout=10).text
    out = subprocess.run(["wrk", "-t1", "-c%d" % clients, "-d%ds" % max(1, int(round(seconds))), "--latency",
                          "--timeout", "60s", "-s", script, url], capture_output=True, text=True).stdout
    after = requests.get(url + "/metrics", timeout=10).text

    def ms(label):
        m = re.search(r"^\s+%s\s+([0-9.]+)(us|ms|s)\s*$" % re.escape(label), out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = re.search(r"^\s*(\d+) requests in ([0-9.]+)(m?s)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    wall = float(total.group(2)) * (60.0 if total.group(3) == "m" else 1.0) if total else float("nan")
    n = int(total.group(1)) if total else 0
    batches = metric(after, "taskmoe_batch_sentences_count") - metric(before, "taskmoe_batch_sentences_count")
    batched = metric(after, "taskmoe_batch_sentences_sum") - metric(before, "taskmoe_batch_sentences_sum")
    statuses = {200: n - (int(non2xx.group(1)) if non2xx else 0)}
    if non2xx:
        statuses["non-2xx"] = int(non2xx.group(1))
    if errors:
        statuses["socket errors: " + errors.group(1).strip()] = 1
    return {
        "clients": clients, "requests": n, "statuses": statuses, "seconds": wall, "rps": n / wall if wall else 0.0,
        "tokens_per_s": (tokens_total(after) - tokens_total(before)) / wall if wall else 0.0,
        "p50_ms": ms("50%"), "p99_ms": ms("99%"), "mean_batch": batched / batches if batches else 0.0,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="the taskmoe-server binary")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--models")
    p.add_argument("--quantization", default="")
    p.add_argument("--task", default="en-de")
    p.add_argument("--threads", type=int, default=2, help="server workers (default 2)")
    p.add_argument("--clients", default="1,8,64")
    p.add_argument("--seconds", type=float, default=15.0, help="per point (default 15)")
    p.add_argument("--max-requests", type=int, default=5000, help="per point (default 5000)")
    p.add_argument("--modes", default="batching,no-batching",
                   help="comma-separated: batching (the default --batch-wait-ms 0), batching-wait-N "
                        "(--batch-wait-ms N), no-batching")
    p.add_argument("--client", choices=["wrk", "python"], default=None,
                   help="load generator (default: wrk when installed, else python; --smoke: python)")
    p.add_argument("--smoke", action="store_true", help="CI: 1 and 8 clients, 2 s each; check, do not measure")
    p.add_argument("--memory", action="store_true",
                   help="serve every task; print RSS after load, after one request per task, after --seconds "
                        "of mixed-task load at 8 clients, and that load's target tokens/s")
    p.add_argument("--make-token-routed", metavar="OUT",
                   help="write a token-routed copy of --checkpoint to OUT (for --memory) and exit")
    a = p.parse_args()
    if a.make_token_routed:
        make_token_routed(a.checkpoint, a.make_token_routed)
        return
    if a.smoke:
        # One worker: 8 clients then always pile up, so the batching check cannot pass or fail by luck.
        a.clients, a.seconds, a.threads = "1,8", 2.0, 1
    clients = [int(c) for c in a.clients.split(",")]
    if a.client is None:
        import shutil
        a.client = "wrk" if shutil.which("wrk") and not a.smoke else "python"
    source, target = a.task.split("-")
    model = ["--checkpoint", a.checkpoint] if a.checkpoint else ["--models", a.models]
    if a.quantization:
        model += ["--quantization", a.quantization]

    print("machine:", machine_line())
    if a.memory:
        print("| model | tasks | RSS loaded MB | RSS after 1 request per task MB | RSS after load MB | peak RSS MB "
              "| target tok/s (8 clients, mixed tasks) | req/s | load s |")
        print("|---|---|---|---|---|---|---|---|---|")
        run_memory(a, model)
        return
    print("model: %s, task %s, server --threads %d, beam 4 (the default), client %s, %.0f s%s per point" % (
        " ".join(model), a.task, a.threads, a.client, a.seconds,
        " or %d requests" % a.max_requests if a.client == "python" else ""))
    print()
    print("| mode | clients | requests | req/s | target tok/s | p50 ms | p99 ms | mean batch |")
    print("|---|---|---|---|---|---|---|---|")
    failures = []
    results = {}
    for mode in a.modes.split(","):
        args = model + ["--threads", str(a.threads), "--tasks", a.task, "--queue", "4096"]
        if mode == "no-batching":
            args.append("--no-batching")
        elif mode.startswith("batching-wait-") and mode[len("batching-wait-"):].isdigit():
            args += ["--batch-wait-ms", mode[len("batching-wait-"):]]
        elif mode != "batching":
            sys.exit("unknown mode %r" % mode)
        with Server(a.server, args) as s:
            run_point(s.url, 1, 1.0, 10, source, target)  # warm-up: page in the weights
            for c in clients:
                if a.client == "wrk":
                    import tempfile
                    with tempfile.TemporaryDirectory() as tmp:
                        r = run_point_wrk(s.url, c, a.seconds, source, target, tmp)
                else:
                    r = run_point(s.url, c, a.seconds, a.max_requests, source, target)
                results[(mode, c)] = r
                print("| %s | %d | %d | %.1f | %.0f | %.0f | %.0f | %.2f |" % (
                    mode, c, r["requests"], r["rps"], r["tokens_per_s"], r["p50_ms"], r["p99_ms"], r["mean_batch"]),
                    flush=True)
                bad = {k: v for k, v in r["statuses"].items() if k != 200}
                if bad:
                    failures.append("%s, %d clients: answers other than 200: %s" % (mode, c, bad))
                if r["requests"] == 0:
                    failures.append("%s, %d clients: no request answered" % (mode, c))
            if s.stop() != 0:
                failures.append("%s: the server did not exit 0 after SIGTERM" % mode)
    if a.smoke:
        # Batching must be real: with 8 clients, batches hold more than one sentence; without, one.
        if ("batching", 8) in results and results[("batching", 8)]["mean_batch"] <= 1.0:
            failures.append("batching on, 8 clients: mean batch %.2f, expected > 1" % results[("batching", 8)]["mean_batch"])
        if ("no-batching", 8) in results and results[("no-batching", 8)]["mean_batch"] != 1.0:
            failures.append("batching off, 8 clients: mean batch %.2f, expected 1" %
                            results[("no-batching", 8)]["mean_batch"])
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
