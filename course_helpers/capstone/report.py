"""The capstone's plot (``timeline.png``) and ``report.md``, from the run directory alone."""

from __future__ import annotations

import json
from pathlib import Path

#: events annotated on the plot, with their marker colour
MARKED = {"drift_alert": "tab:orange", "alert": "tab:red", "promoted": "tab:green",
          "rolled_back": "tab:purple", "replica_killed": "black", "day_failed": "red",
          "scaled": "tab:cyan"}


def timeline_plot(run_dir: str | Path):
    """Five stacked panels over wall time: traffic (req/s), p95 (ms), error ratio, drift
    score (max PSI), production model version with the canary weight; day boundaries as
    dotted lines, events as labelled vertical lines. Returns the matplotlib Figure."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd

    run_dir = Path(run_dir)
    data = json.loads((run_dir / "capstone.json").read_text())
    tl = pd.read_csv(run_dir / "timeline.csv")
    fig, axes = plt.subplots(5, 1, figsize=(10, 9), sharex=True)
    panels = [("rps", "traffic (req/s)"), ("p95_ms", "p95 (ms)"),
              ("error_ratio", "error ratio"), ("drift_score", "drift (max PSI)"),
              ("version", "version in production")]
    for ax, (col, label) in zip(axes, panels):
        if col in tl and tl[col].notna().any():
            y = pd.to_numeric(tl[col], errors="coerce")
            ax.step(tl["t_s"], y, where="post", lw=1.2)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    if "canary_weight" in tl and tl["canary_weight"].fillna(0).gt(0).any():
        ax2 = axes[4].twinx()
        ax2.fill_between(tl["t_s"], pd.to_numeric(tl["canary_weight"]).fillna(0), step="post",
                         alpha=0.25, color="tab:orange")
        ax2.set_ylabel("canary %", fontsize=8)
        ax2.set_ylim(0, 105)
    if len(tl):
        starts = tl.groupby("day")["t_s"].min()
        for day, t in starts.items():
            for ax in axes:
                ax.axvline(t, color="grey", ls=":", lw=0.8)
            axes[0].annotate(f"day {day}", (t, 1.02), xycoords=("data", "axes fraction"),
                             fontsize=7)
    for ev in data.get("events", []):
        colour = MARKED.get(ev["kind"])
        if colour:
            for ax in axes:
                ax.axvline(ev["t_s"], color=colour, lw=1, alpha=0.7)
            axes[2].annotate(ev["kind"].replace("_", " "), (ev["t_s"], 0.9),
                             xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                             va="top", color=colour)
    axes[-1].set_xlabel("seconds since the start of the run")
    s = data["summary"]
    fig.suptitle(f"capstone week ({data['profile']}): SLO {'met' if s.get('slo_met') else 'MISSED'}"
                 f", {s.get('wall_s')} s wall, peak {s.get('peak_mb')} MB PSS", fontsize=10)
    fig.tight_layout()
    return fig


def report_md(data: dict) -> str:
    """``report.md``: the days table, the summary, the gates and canaries, the events."""
    import pandas as pd

    s = data["summary"]
    days = pd.DataFrame(data["days"])
    lines = [f"# Capstone week ({data['profile']}, seed {data['seed']})", "",
             f"- drift seeded on day {s['drift_day']}, detected on day "
             f"{s['drift_detected_day']}, retrained on day {s['retrained_day']}",
             f"- bad model on day {s['bad_model_day']}: highest canary weight "
             f"{s['bad_model_max_weight']}%",
             f"- SLO ({data.get('slo', {}).get('availability', 0.99):.1%} of requests succeed, "
             f"daily p95 <= {data.get('slo', {}).get('p95_ms', 500):g} ms): "
             f"{'met' if s['slo_met'] else 'MISSED'}",
             f"- wall time {s['wall_s']} s, peak memory of the process tree {s['peak_mb']} MB "
             f"(PSS; RSS sum {s.get('peak_rss_mb')} MB)", "", "## Days", ""]
    if not days.empty:
        shown = days.copy()
        for col in ("alerts", "registered"):
            if col in shown:
                shown[col] = shown[col].apply(lambda v: ", ".join(map(str, v or [])))
        lines.append(shown.to_markdown(index=False) if _has_tabulate() else shown.to_string())
    if data.get("features"):
        lines += ["", "## Lesson 07's features, materialised each day", ""]
        for f in data["features"]:
            lines.append(f"- day {f['day']}: {f['events']} transactions of {f['data_day']}, "
                         f"{f['users_materialised']} users in the online store, median "
                         f"feature age {f['feature_age_s_median']:g} s")
    lines += ["", "## Gates and canaries", ""]
    for g in data.get("gates", []):
        if g["stage"] == "model":
            lines.append(f"- day {g['day']}: model gate v{g['version']} vs v{g['champion']}: "
                         f"{'passed' if g['passed'] else 'failed'}")
    for c in data.get("canaries", []):
        lines.append(f"- day {c['day']}: canary v{c['version']} -> {c['outcome']} "
                     f"(highest weight {c['max_weight']}%)")
    if data.get("checklist"):
        ck = data["checklist"]
        lines += ["", f"## Best practices: {ck['score']} of {ck['checked']} checked items pass",
                  ""]
        for item in ck["items"]:
            mark = {True: "PASS", False: "FAIL", None: "not checked"}[item["passed"]]
            lines.append(f"- [{item['area']}] {item['item']}: **{mark}** — {item['evidence']}")
    lines += ["", "## Events", ""]
    for ev in data.get("events", []):
        lines.append(f"- {ev['t_s']:>7.1f} s, day {ev['day']}: {ev['kind']} — {ev['detail']}")
    return "\n".join(lines) + "\n"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def write_outputs(run_dir: str | Path, data: dict | None = None) -> None:
    """Write ``timeline.png`` and ``report.md`` (the checklist into capstone.json first)."""
    import matplotlib.pyplot as plt

    from .checklist import checklist

    run_dir = Path(run_dir)
    checklist(run_dir, store=True)
    data = json.loads((run_dir / "capstone.json").read_text())
    fig = timeline_plot(run_dir)
    fig.savefig(run_dir / "timeline.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    (run_dir / "report.md").write_text(report_md(data))
