"""Matplotlib dashboards for lesson 08: system health from Prometheus, model health from drift."""

from __future__ import annotations

from typing import Any


def _wide(df, label: str):
    """Long query_range frame -> one column per series (``label``'s values), indexed by t."""
    if df.empty:
        return df
    key = label if label in df.columns else None
    if key is None:
        return df.set_index("t")[["value"]]
    return df.pivot_table(index="t", columns=key, values="value")


def system_dashboard(start: float, end: float, job: str | None = None, step: float = 1.0,
                     fault_window: tuple[float, float] | None = None,
                     latency_threshold_s: float = 0.3):
    """Three panels from Prometheus: request rate by status, error ratio (5xx share), and
    p50/p95/p99 latency from the server's histogram (``histogram_quantile``).

    ``start``/``end``: epoch seconds; ``fault_window``: epoch seconds to shade.
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    from .prometheus import query_range

    sel = f'{{job="{job}"}}' if job else ""
    win = f"{max(3, int(4 * step))}s"
    rate = query_range(f"sum by (status) (rate(mlops_requests_total{sel}[{win}]))",
                       start, end, step)
    errors = query_range(
        f'(sum(rate(mlops_requests_total{{status=~"5..",{sel[1:-1]}}}[{win}])) '
        f"or sum(rate(mlops_requests_total{sel}[{win}])) * 0) "
        f"/ sum(rate(mlops_requests_total{sel}[{win}]))".replace(",}", "}"), start, end, step)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax = axes[0]
    wide = _wide(rate, "status")
    if not wide.empty:
        wide.plot(ax=ax)
    ax.set(title="requests per second by status", xlabel="seconds", ylabel="req/s")
    ax = axes[1]
    if not errors.empty:
        ax.plot(errors["t"], errors["value"] * 100, color="tab:red")
    ax.set(title="error ratio (5xx share)", xlabel="seconds", ylabel="%")
    ax = axes[2]
    for q, color in ((0.5, "tab:green"), (0.95, "tab:orange"), (0.99, "tab:red")):
        lat = query_range(f"histogram_quantile({q}, sum by (le) "
                          f"(rate(mlops_request_latency_seconds_bucket{sel}[{win}])))",
                          start, end, step)
        if not lat.empty:
            ax.plot(lat["t"], lat["value"] * 1000, label=f"p{int(q * 100)}", color=color)
    ax.axhline(latency_threshold_s * 1000, color="grey", ls="--", lw=1, label="SLO threshold")
    ax.set(title="latency from the histogram", xlabel="seconds", ylabel="ms")
    ax.legend(fontsize=8)
    if fault_window:
        for a in axes:
            a.axvspan(fault_window[0] - start, fault_window[1] - start, color="red", alpha=0.08)
    fig.tight_layout()
    return fig


def plot_alert_timeline(states: list[tuple[float, str]], fault_window: tuple[float, float],
                        title: str = "fast-burn alert"):
    """Alert state over time (``[(seconds, state), ...]``) with the fault shaded."""
    import matplotlib.pyplot as plt

    levels = {"inactive": 0, "pending": 1, "firing": 2}
    fig, ax = plt.subplots(figsize=(8, 2.4))
    if states:
        ts, ss = zip(*states)
        ax.step(ts, [levels[s] for s in ss], where="post", color="tab:red")
    ax.axvspan(*fault_window, color="red", alpha=0.1, label="fault on")
    ax.set_yticks([0, 1, 2], ["inactive", "pending", "firing"])
    ax.set(xlabel="seconds", title=title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_drift(results: list[dict[str, Any]], title: str = "",
               reference_auc: float | None = None):
    """Per window: the largest PSI and the smallest KS p-value, flagged features, alerts, and
    the delayed-label AUC. Drifted windows are shaded."""
    import matplotlib.pyplot as plt
    import numpy as np

    w = np.array([r["window"] for r in results])
    max_psi = [max(r["psi"].values()) for r in results]
    min_p = [max(min(r["ks_p"].values()), 1e-300) for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    drifted = [r["window"] for r in results if r.get("drifted")]
    for ax in axes:
        if drifted:
            ax.axvspan(min(drifted) - 0.5, max(drifted) + 0.5, color="orange", alpha=0.12,
                       label="drifted")
    ax = axes[0]
    ax.plot(w, max_psi, marker="o", ms=3, label="max PSI over features")
    if results and results[0].get("prediction_psi") is not None:
        ax.plot(w, [r["prediction_psi"] for r in results], marker="s", ms=3,
                label="prediction PSI")
    ax.axhline(0.1, color="grey", ls=":", lw=1)
    ax.axhline(0.25, color="grey", ls="--", lw=1)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set(title="PSI", xlabel="window")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.semilogy(w, min_p, marker="o", ms=3, label="min KS p over features")
    ax.scatter(w[[r["alert"] for r in results]], [min_p[i] for i, r in enumerate(results)
                                                  if r["alert"]],
               color="red", zorder=3, s=25, label="alert")
    ax.set(title="KS p-value (smallest) and alerts", xlabel="window")
    ax.legend(fontsize=7)
    ax = axes[2]
    aucs = [(r["auc_known_at"], r["auc"]) for r in results if r.get("auc") is not None]
    if aucs:
        ax.plot(*zip(*aucs), marker="o", ms=3, label="AUC (when labels arrive)")
    if reference_auc:
        ax.axhline(reference_auc, color="grey", ls="--", lw=1, label="at training")
    ax.set(title="delayed-label AUC", xlabel="window", ylim=(0, 1))
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return fig
