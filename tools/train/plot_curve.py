#!/usr/bin/python3
"""Learning curve (dev cross-entropy and greedy dev BLEU against training target tokens) from train.log.

    /usr/bin/python3 tools/train/plot_curve.py models/demo/train.log -o models/demo/learning_curve.png

A log may hold several stages (a "new model"/"initialised from" line starts one): target tokens
accumulate over stages. Lines without a token count (older logs) are placed at step x the mean
target tokens per step of the stages that have counts. Needs matplotlib.
"""
from __future__ import annotations

import argparse
import re


def parse(path):
    """[(tokens, dev_ce or None, dev_bleu or None, label)], plus the stage boundaries in tokens."""
    stages, cur = [], None
    for line in open(path, encoding="utf-8"):
        if " new model:" in line or "initialised from" in line:
            if cur is None or cur["points"] or cur["steps"]:
                cur = {"points": [], "steps": [], "offset": 0}
                stages.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r" step (\d+) .* tgt_tokens (\d+)", line)
        if m:
            cur["steps"].append((int(m.group(1)), int(m.group(2))))
        m = re.search(r" step (\d+) lr", line)
        if m:
            cur["last_step"] = int(m.group(1))
        m = re.search(r"dev (ce|bleu)( \(averaged\))?.* mean (\S+)(?: tgt_tokens (\d+))?", line)
        if m:
            cur["points"].append((m.group(1), float(m.group(3)), int(m.group(4)) if m.group(4) else None,
                                  cur.get("last_step", 0), bool(m.group(2))))
    per_step = [t / s for st in stages for s, t in st["steps"][-1:] if s]
    tps = sum(per_step) / len(per_step) if per_step else 1.0
    out, offset, bounds = [], 0.0, []
    for st in stages:
        last = 0.0
        for kind, v, tok, step, averaged in st["points"]:
            x = offset + (tok if tok is not None else step * tps)
            out.append((kind, x, v, averaged))
            last = max(last, x - offset)
        end = st["steps"][-1][1] if st["steps"] else st.get("last_step", 0) * tps
        offset += max(last, end)
        bounds.append(offset)
    return out, bounds[:-1], tps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args(argv)
    pts, bounds, tps = parse(a.log)
    ce = [(x / 1e6, v) for k, x, v, av in pts if k == "ce" and not av]
    ce_avg = [(x / 1e6, v) for k, x, v, av in pts if k == "ce" and av]
    bl = [(x / 1e6, v) for k, x, v, av in pts if k == "bleu"]
    for k, x, v, av in pts:
        print(f"{k}{' (averaged)' if av else ''} {x / 1e6:.2f}M tokens {v}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*zip(*ce), "o-", color="tab:blue", label="dev cross-entropy (nats/token, 200 pairs x 8 tasks)")
    if ce_avg:
        ax.plot(*zip(*ce_avg), "*", color="tab:blue", markersize=12, label="dev cross-entropy, averaged export")
    ax.set_xlabel("training target tokens (millions)")
    ax.set_ylabel("dev cross-entropy", color="tab:blue")
    for b in bounds:
        ax.axvline(b / 1e6, color="grey", linestyle=":", linewidth=1)
    ax2 = ax.twinx()
    if bl:
        ax2.plot(*zip(*bl), "s--", color="tab:red", label="greedy dev BLEU (first 40 pairs x 8 tasks)")
    ax2.set_ylabel("dev BLEU", color="tab:red")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
    ax.set_title("taskmoe demo model: learning curve (dotted lines: stage boundaries)", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.output)
    print(f"wrote {a.output} (stage-1 points without token counts placed at {tps:.0f} target tokens/step)")


if __name__ == "__main__":
    main()
