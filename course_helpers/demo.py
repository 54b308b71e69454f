"""The flagship demo behind `make demo`: the scaling showdown (lesson 02) in one command.

Deploys single-large, load-tests it, kills a replica under load, tears it down; the same for
many-small; then prints a comparison and writes results.json, PNG plots and report.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import config


def _table(results: dict) -> str:
    rows = [("", "single-large", "many-small")]
    sl, ms = results["single_large"], results["many_small"]
    for key, label in (("replicas", "replicas"), ("workers_per_replica", "workers per replica"),
                       ("cpus_total", "CPUs in total"), ("requests", "requests"),
                       ("failures", "failures"), ("rps", "requests/s (over the ramp)"),
                       ("peak_rps", "requests/s (sustained, all users on)"), ("p50_ms", "p50 ms"),
                       ("p95_ms", "p95 ms"), ("generator_cpu", "Locust CPU (cores)")):
        rows.append((label, f"{sl[key]:g}", f"{ms[key]:g}"))
    for key, label in (("requests", "fault: requests"),
                       ("failed_requests", "fault: failed requests"),
                       ("failed_ratio", "fault: failed ratio"),
                       ("recovery_s", "fault: recovery s"), ("dark_s", "fault: dark seconds")):
        rows.append((label, f"{sl['fault_injection'][key]:g}", f"{ms['fault_injection'][key]:g}"))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{w}}  {b:>14}  {c:>14}" for a, b, c in rows)


def write_outputs(results: dict, out_dir: Path) -> list[Path]:
    """results.json, the plots and report.md; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import capacity, plots

    runs = results.get("_runs", {})
    clean = {k: v for k, v in results.items() if k != "_runs"}
    files = [out_dir / "results.json"]
    files[0].write_text(json.dumps(clean, indent=2))
    ax = plots.topology_bars(clean)
    ax[0].figure.savefig(out_dir / "topologies.png", dpi=110)
    files.append(out_dir / "topologies.png")
    if runs:
        axes = plots.throughput_and_p95({k: r["load"].timeline() for k, r in runs.items()})
        axes[0].figure.suptitle("Same load, same total CPUs", y=1.02)
        axes[0].figure.savefig(out_dir / "load.png", dpi=110, bbox_inches="tight")
        axes = plots.throughput_and_p95({k: r["fault"].load.timeline() for k, r in runs.items()},
                                        kill_at={k: r["fault"].kill_at_s for k, r in runs.items()})
        axes[0].figure.suptitle("One replica killed at the dashed line", y=1.02)
        axes[0].figure.savefig(out_dir / "fault.png", dpi=110, bbox_inches="tight")
        files += [out_dir / "load.png", out_dir / "fault.png"]
    plt.close("all")
    costs = capacity.cost_table(clean)
    report = [
        "# Scaling showdown: single-large vs many-small",
        "",
        f"Profile `{clean['profile']}`, backend `{clean['backend']}`, model `{clean.get('model')}`; "
        f"{clean.get('comparison', '')}.",
        "",
        "```", _table(clean), "```",
        "",
        "![throughput and p95](load.png)", "", "![fault injection](fault.png)", "",
        "![side by side](topologies.png)", "",
        "## Cost per million predictions (illustrative prices, edit course_helpers/data/instance_prices.csv)",
        "",
        costs.to_markdown(index=False) if hasattr(costs, "to_markdown") and _has_tabulate()
        else "```\n" + costs.to_string(index=False) + "\n```",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(report))
    files.append(out_dir / "report.md")
    return files


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def run_demo(profile: str | None = None, backend: str = "auto",
             out: str | Path | None = None) -> int:
    """Run the showdown and write its outputs; returns a process exit code."""
    from .doctor import render, report
    from .scaling import showdown

    prof = config.get_profile(profile)
    out_dir = Path(out) if out else config.workspace_dir("demo", prof.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = report(prof.name)
    if backend != "auto":
        rep["backend"] = backend
    print(render(rep), "\n", flush=True)
    (out_dir / "doctor.json").write_text(json.dumps(rep, indent=2))
    results = showdown(prof.name, backend=backend, log=lambda m: print(m, flush=True))
    print()
    print(_table(results))
    files = write_outputs(results, out_dir)
    print(f"\nwrote {', '.join(f.name for f in files)} to {out_dir}")
    clean_outside_fault = all(results[k]["failures"] == 0 for k in ("single_large", "many_small"))
    return 0 if clean_outside_fault else 1
