"""Plots shared by the lessons, starting with the one system diagram every lesson shows."""

from __future__ import annotations

# name: (x, y, label); the layout is the course's system, left to right: request path on top,
# training loop below.
COMPONENTS: dict[str, tuple[float, float, str]] = {
    "client": (0.5, 3.0, "Clients\n(Locust)"),
    "balancer": (2.5, 3.0, "Load balancer\n(nginx)"),
    "backend": (4.7, 3.0, "Model server\n(FastAPI, gunicorn)"),
    "cache": (4.7, 4.5, "Cache\n(LRU / Redis)"),
    "database": (7.0, 3.9, "Database\n(prediction log)"),
    "monitoring": (7.0, 2.3, "Monitoring\n(metrics, drift)"),
    "data": (0.5, 0.7, "Data\n(batches)"),
    "features": (2.5, 0.7, "Features"),
    "pipeline": (4.7, 0.7, "Pipeline\n(train, evaluate)"),
    "cicd": (4.7, 1.85, "CI/CD gates"),
    "storage": (7.0, 0.7, "Storage & registry\n(MLflow)"),
}
EDGES = [
    ("client", "balancer"), ("balancer", "backend"), ("backend", "cache"),
    ("backend", "database"), ("backend", "monitoring"), ("data", "features"),
    ("features", "pipeline"), ("pipeline", "storage"), ("storage", "backend"),
    ("cicd", "pipeline"), ("database", "monitoring"),
]
# Which part of the system each lesson is about.
LESSON_PARTS: dict[str, set[str]] = {
    "00": set(COMPONENTS),
    "01": {"backend", "cache", "database", "storage"},
    "02": {"client", "balancer", "backend"},
    "03": {"data", "features", "pipeline"},
    "04": {"balancer", "backend", "cache"},
    "05": {"cicd", "pipeline", "storage"},
    "06": {"pipeline", "storage"},
    "07": {"data", "features"},
    "08": {"monitoring", "database"},
    "09": {"balancer", "backend", "monitoring"},
    "10": set(COMPONENTS),
}


def system_diagram(lesson: str | None = None, highlight: set[str] | None = None, ax=None):
    """Draw the course's system; the parts of ``lesson`` (e.g. "01") are highlighted.

    Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    parts = set(highlight or ()) | (LESSON_PARTS.get(lesson, set()) if lesson else set())
    if ax is None:
        _, ax = plt.subplots(figsize=(9.5, 4.2))
    w, h = 1.7, 0.8
    for name, (x, y, label) in COMPONENTS.items():
        on = name in parts
        ax.add_patch(FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
            facecolor="#ffd166" if on else "#eef1f5", edgecolor="#333" if on else "#999",
            linewidth=1.8 if on else 0.8))
        ax.text(x, y, label, ha="center", va="center", fontsize=8.5,
                color="#111" if on else "#666", weight="bold" if on else "normal")
    for a, b in EDGES:
        (x1, y1, _), (x2, y2, _) = COMPONENTS[a], COMPONENTS[b]
        dx, dy = x2 - x1, y2 - y1
        # leave each box at its edge: scale the direction to the box's half-size
        t = min((w / 2 + 0.08) / abs(dx) if dx else 1e9, (h / 2 + 0.08) / abs(dy) if dy else 1e9)
        ax.add_patch(FancyArrowPatch((x1 + t * dx, y1 + t * dy), (x2 - t * dx, y2 - t * dy),
                                     arrowstyle="-|>", mutation_scale=11, color="#555",
                                     linewidth=0.9))
    ax.set_xlim(-0.6, 8.1)
    ax.set_ylim(0.0, 5.2)
    ax.axis("off")
    title = "The course's system" + (f": lesson {lesson}" if lesson else "")
    ax.set_title(title + " (highlighted)" if parts and parts != set(COMPONENTS) else title)
    return ax


def resources_chart(report: dict, ax=None):
    """Bars: CPUs and memory this process really gets, beside mybinder.org's limits."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(7, 2.6))
    binder = {"cpus": 1.0, "memory_gb": 2.0}
    for axis, key, unit in ((ax[0], "cpus", "CPUs"), (ax[1], "memory_gb", "GB")):
        values = [report[key], binder[key]]
        bars = axis.bar(["this machine", "Binder"], values, color=["#118ab2", "#bbbbbb"])
        axis.bar_label(bars, labels=[f"{v:g}" for v in values])
        axis.set_ylabel(unit)
        axis.set_ylim(0, max(values) * 1.25)
    ax[0].set_title("CPUs")
    ax[1].set_title("Memory")
    ax[0].figure.tight_layout()
    return ax


TOPOLOGY_COLOURS = {"single_large": "#ef476f", "many_small": "#118ab2"}
TOPOLOGY_LABELS = {"single_large": "single-large (scale up)", "many_small": "many-small (scale out)"}


def throughput_and_p95(timelines: dict, kill_at: dict | None = None, axes=None):
    """Two panels over time: requests/s and p95 latency, one line per run.

    ``timelines``: {label: DataFrame from LoadResult.timeline()}; ``kill_at``: {label: elapsed
    seconds of a fault injection}, drawn as a dashed line.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for label, df in timelines.items():
        colour = TOPOLOGY_COLOURS.get(label)
        name = TOPOLOGY_LABELS.get(label, label)
        axes[0].plot(df["elapsed_s"], df["ok"], label=f"{name}: ok", color=colour)
        if df["failed"].sum():
            axes[0].plot(df["elapsed_s"], df["failed"], ls=":", color=colour,
                         label=f"{name}: failed")
        axes[1].plot(df["elapsed_s"], df["p95_ms"], color=colour, label=name)
        if kill_at and label in kill_at:
            for ax in axes:
                ax.axvline(kill_at[label], color=colour or "k", ls="--", lw=0.8)
    axes[0].set(title="Throughput", xlabel="seconds", ylabel="requests per second")
    axes[1].set(title="p95 latency", xlabel="seconds", ylabel="ms")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    axes[0].figure.tight_layout()
    return axes


def topology_bars(results: dict, ax=None):
    """Side-by-side bars for the two topologies of a showdown: sustained requests/s, p95,
    and the share of requests that failed in the fault round (with its dark seconds)."""
    import matplotlib.pyplot as plt

    keys = [k for k in ("single_large", "many_small") if k in results]
    if ax is None:
        _, ax = plt.subplots(1, 3, figsize=(11, 3.2))
    names = [TOPOLOGY_LABELS[k].split(" (")[0] for k in keys]
    colours = [TOPOLOGY_COLOURS[k] for k in keys]
    rps = "peak_rps" if all("peak_rps" in results[k] for k in keys) else "rps"
    for axis, metric, title in ((ax[0], rps, "Throughput, all users on (req/s)"),
                                (ax[1], "p95_ms", "p95 latency (ms)")):
        values = [results[k][metric] for k in keys]
        bars = axis.bar(names, values, color=colours)
        axis.bar_label(bars, labels=[f"{v:.0f}" for v in values])
        axis.set_title(title)
        axis.set_ylim(0, max(values) * 1.25 or 1)
    faults = [results[k]["fault_injection"] for k in keys]
    failed = [100 * f.get("failed_ratio", f["failed_requests"] / max(1, f.get("requests", 1)))
              for f in faults]
    bars = ax[2].bar(names, failed, color=colours)
    ax[2].bar_label(bars, labels=[f"{v:.1f}% ({f.get('dark_s', 0)} dark s)"
                                  for v, f in zip(failed, faults)])
    ax[2].set_title("Failed requests when a replica dies (%)")
    ax[2].set_ylim(0, max(failed) * 1.25 or 1)
    ax[0].figure.tight_layout()
    return ax


def latency_vs_users(timeline, ax=None, label: str | None = None):
    """p95 latency and throughput against the number of users (from a step or ramp run)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    grouped = timeline.groupby("users").agg(p95_ms=("p95_ms", "median"), rps=("ok", "median"))
    grouped = grouped[grouped.index > 0]
    ax.plot(grouped.index, grouped["p95_ms"], marker="o", label=label or "p95 latency")
    ax.set(xlabel="concurrent users", ylabel="p95 latency (ms)", title="Latency vs users")
    twin = ax.twinx()
    twin.plot(grouped.index, grouped["rps"], marker="s", color="#999", ls="--")
    twin.set_ylabel("requests per second (dashed)")
    return ax
