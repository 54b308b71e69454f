"""Plots of lesson 09: peeking, and a rollout's weight, error ratio and p95 against time."""

from __future__ import annotations


def peeking_plot(first_looks: list[int], peek: dict):
    """Histogram of the look at which naive peeking first (falsely) called an A/A test."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(first_looks, bins=range(1, peek["looks"] + 2), color="tab:red", alpha=0.7)
    ax.set_xlabel("look at which the naive test first said 'significant'")
    ax.set_ylabel("A/A tests")
    ax.set_title(f"A/A, {peek['looks']} looks: naive {peek['fpr_naive']:.1%} false positives, "
                 f"mSPRT {peek['fpr_sequential']:.1%}", fontsize=10)
    return fig


def rollout_plot(report: dict):
    """Weight (%), canary error ratio and p95 (ms) against seconds since the rollout began."""
    import matplotlib.pyplot as plt

    rows = report.get("timeline", [])
    fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True)
    t = [r["t"] for r in rows]
    axes[0].step(t, [r["weight"] for r in rows], where="post", color="tab:blue")
    axes[0].set_ylabel("canary weight %")
    axes[0].set_ylim(-5, 105)
    axes[1].plot(t, [r.get("canary_error_ratio") for r in rows], "o-", color="tab:red",
                 label="canary")
    axes[1].plot(t, [r.get("stable_error_ratio") for r in rows], "o-", color="tab:gray",
                 label="stable")
    axes[1].set_ylabel("error ratio")
    axes[1].legend(fontsize=8)
    axes[2].plot(t, [r.get("canary_p95_ms") for r in rows], "o-", color="tab:red",
                 label="canary")
    axes[2].plot(t, [r.get("stable_p95_ms") for r in rows], "o-", color="tab:gray",
                 label="stable")
    axes[2].set_ylabel("p95 ms")
    axes[2].set_xlabel("seconds since the rollout began")
    axes[2].legend(fontsize=8)
    axes[0].set_title(f"{report.get('canary')}: {report.get('outcome')}", fontsize=10)
    fig.tight_layout()
    return fig
