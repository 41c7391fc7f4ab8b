#!/usr/bin/python3
"""Plot and tabulate benchmarks/run_paper.sh results: target tokens/s against batch size (log x),
one line per model, and a markdown table with file size, load time, peak RSS and the ratios to
the TokenMoE model.   usage: plot_paper.py paper.csv paper.png  (prints the table)"""
import csv
import sys
from collections import OrderedDict


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    models = OrderedDict()
    for r in rows:
        m = models.setdefault(r["model"], {"tps": {}, "file": int(r["file_bytes"]), "load": float(r["load_s"]),
                                           "rss": int(r["peak_rss_bytes"]), "isa": r["isa"]})
        m["tps"][int(r["batch"])] = float(r["tokens_per_s"])
        if r.get("peak_rss_at_batch_bytes"):
            m.setdefault("rss_at", {})[int(r["batch"])] = int(r["peak_rss_at_batch_bytes"])
    batches = sorted({b for m in models.values() for b in m["tps"]})
    base = models.get("tokenmoe")
    b0 = batches[0] if batches else 1
    head = "| model | file MB | load s | RSS b=%d MB | peak RSS MB | " % b0 + " | ".join("b=%d tok/s" % b for b in batches) + \
           " | peak tok/s | peak vs TokenMoE | memory: TokenMoE / this |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    rss0 = lambda m: m.get("rss_at", {}).get(b0, float("nan"))
    for name, m in models.items():
        peak = max(m["tps"].values())
        cells = ["%.1f" % m["tps"].get(b, float("nan")) for b in batches]
        ratio = "%.2fx" % (peak / max(base["tps"].values())) if base else "-"
        mem = "%.2fx" % (base["rss"] / m["rss"]) if base else "-"
        if base and "rss_at" in base and b0 in base["rss_at"]:
            mem += " (b=%d: %.2fx)" % (b0, rss0(base) / rss0(m))
        print("| %s | %.1f | %.3f | %.1f | %.1f | %s | %.1f | %s | %s |" % (name, m["file"] / 1e6, m["load"], rss0(m) / 1e6, m["rss"] / 1e6,
                                                                    " | ".join(cells), peak, ratio, mem))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, m in models.items():
        bs = sorted(m["tps"])
        ax.plot(bs, [m["tps"][b] for b in bs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches)
    ax.set_xticklabels([str(b) for b in batches])
    ax.set_xlabel("batch size (sentences)")
    ax.set_ylabel("target tokens / s (1 core)")
    isa = next(iter(models.values()))["isa"] if models else "?"
    ax.set_title("Greedy, 30 target tokens, paper-size model, 1 CPU core (%s)" % isa)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)


if __name__ == "__main__":
    main()
