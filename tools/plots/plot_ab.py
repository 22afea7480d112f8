"""Plots a `switchyard ab --save-result` JSON: CDFs of TTFT and ITL for both
arms (all repeats pooled) and the expert bytes per prompt token.

    python3 tools/plots/plot_ab.py docs/results/ab-chunked-vs-layered.json docs/results/ab-chunked-vs-layered.png

Needs matplotlib (pip install matplotlib); only for docs, never for CI.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def arm(d, key):
    runs = d[key]["runs"]
    ttft = [t * 1000 for r in runs for t in r["ttfts"]]
    itl = [t * 1000 for r in runs for seq in r["itls"] for t in seq]
    per_prompt = [r["moe"]["expert_weight_bytes_per_prompt_token"] / 1024 for r in runs]
    return d[key]["flags"], ttft, itl, sum(per_prompt) / len(per_prompt)


def cdf(ax, values, label):
    v = sorted(values)
    n = len(v)
    ax.step(v, [(i + 1) / n for i in range(n)], where="post", label=label)


def main(src, dst):
    d = json.load(open(src))
    arms = [arm(d, "a"), arm(d, "b")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for flags, ttft, itl, _ in arms:
        cdf(axes[0], ttft, flags)
        cdf(axes[1], itl, flags)
    axes[0].set(title="Time to first token (CDF)", xlabel="ms", ylabel="fraction of requests")
    axes[1].set(title="Inter-token latency (CDF)", xlabel="ms", ylabel="fraction of token gaps", xscale="log")
    for ax in axes[:2]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    names = ["A: " + arms[0][0], "B: " + arms[1][0]]
    axes[2].bar([0, 1], [arms[0][3], arms[1][3]], color=["C0", "C1"])
    axes[2].set_xticks([0, 1], [n if len(n) < 40 else n[:37] + "..." for n in names], fontsize=8)
    axes[2].set(title="Expert weight bytes read per prompt token", ylabel="KiB")
    for i, a in enumerate(arms):
        axes[2].text(i, a[3], f"{a[3]:.0f}", ha="center", va="bottom")
    fig.suptitle(f"{' '.join(d['shared_flags'])}  ({d['repeats']} repeats, pooled)", fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
