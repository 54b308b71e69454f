"""Each engine in its own subprocess, under a memory budget: wall time, peak memory, failures.

The budget applies to the resident memory of the process tree (the engine's own worker
processes included), sampled every 0.1 s: a run that crosses it is stopped and reported
failed with the reason. Where the OS lets us create one (root on Linux), a memory cgroup at
the same limit is the kernel's backstop (it kills the tree at the limit; it counts page cache
and shared pages differently from RSS). ``results.json`` says which (``limit``:
``cgroup+observed`` or ``observed``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .engines import ENGINES, EngineError


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        family = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in family:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_one(engine: str, data: str | Path, out: str | Path, memory_mb: int | None = 1500,
            scheduler: str | None = None, timeout_s: float = 900.0) -> dict:
    """Run ``engine`` on ``data`` in a subprocess; returns one ``engines`` entry of results.json."""
    import psutil

    from ..deploy import limits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "course_helpers.features.bench", "run", engine, str(data),
           str(out)]
    if memory_mb:
        cmd += ["--memory-mb", str(memory_mb)]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    group = f"features-{engine}-{os.getpid()}"
    prefix = limits.memory_prefix(group, memory_mb) if memory_mb else None
    # the budget is the tree's resident memory, observed here in every mode; a cgroup (which
    # counts memory differently: page cache in, shared pages once) is the kernel's backstop
    mode = "cgroup+observed" if prefix else ("observed" if memory_mb else "none")
    log = out / f"{engine}.log"
    start = time.monotonic()
    peak = 0
    stopped = ""
    with open(log, "wb") as fh:
        proc = subprocess.Popen((prefix or []) + cmd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            peak = max(peak, _tree_rss(ps))
            if memory_mb and peak > memory_mb * 2**20:
                stopped = (f"exceeded the {memory_mb} MB budget (process tree at "
                           f"{peak / 2**20:.0f} MB) and was stopped")
            elif time.monotonic() - start > timeout_s:
                stopped = f"did not finish within {timeout_s:.0f} s and was stopped"
            if stopped:
                _kill_tree(ps)
                break
            time.sleep(0.1)
        proc.wait()
    wall = time.monotonic() - start
    if prefix:
        limits.remove(group)
    rc = proc.returncode
    result = {"engine": engine, "rows": None, "wall_s": round(wall, 2),
              "peak_mb": round(peak / 2**20, 1), "ok": rc == 0 and not stopped, "error": None,
              "limit": mode}
    text = log.read_text(errors="replace").strip().splitlines()
    if result["ok"]:
        result["rows"] = json.loads(text[-1])["rows"]
    elif stopped:
        result["error"] = stopped
    elif rc in (-9, 137) and prefix:
        result["error"] = (f"killed by the kernel at the {memory_mb} MB memory limit (cgroup "
                           f"out-of-memory) after {wall:.0f} s")
    else:
        last = next((ln for ln in reversed(text) if ln.strip()), f"exit code {rc}")
        result["error"] = f"exit code {rc}: {last.strip()[:300]}"
    return result


def _kill_tree(ps) -> None:
    import psutil

    try:
        family = ps.children(recursive=True) + [ps]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=5)


def bench(profile: str | None = None, engines: list[str] | None = None, memory_mb: int = 1500,
          out: str | Path | None = None, rows: int | None = None, scheduler: str | None = None,
          seed: int = 0, show: bool = True) -> dict:
    """Generate (or reuse) the profile's data, run each engine, write results.json and a plot.

    Returns the results dict: ``profile``, ``rows``, ``memory_mb``, ``limit``, ``cpus``,
    ``engines`` (per engine: ``engine``, ``rows``, ``wall_s``, ``peak_mb``, ``ok``, ``error``).
    """
    from ..config import get_profile, workspace_dir
    from ..limits import usable_cpus
    from .data import generate, progress

    name = get_profile(profile).name
    engines = list(engines or ENGINES)
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise EngineError(f"unknown engine(s) {', '.join(bad)}: choose from {', '.join(ENGINES)}.")
    info = generate(rows, profile=name, seed=seed, show=show)
    out = Path(out) if out else workspace_dir("features", "bench", f"{name}-{info.rows}")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    bar = progress(len(engines), f"bench {info.rows:,} rows", show, per_step=True)
    for engine in engines:
        entries.append(run_one(engine, info.path, out / engine, memory_mb,
                               scheduler if engine == "dask" else None))
        e = entries[-1]
        note = f"{engine} {'ok' if e['ok'] else 'FAILED'} {e['wall_s']} s {e['peak_mb']} MB"
        if hasattr(bar, "set_postfix_str"):  # tqdm in a terminal or notebook
            bar.set_postfix_str(note, refresh=False)
            bar.update(1)
        else:
            bar.update(1, note)
    bar.close()
    results = {"profile": name, "rows": info.rows, "memory_mb": memory_mb,
               "limit": entries[0]["limit"] if entries else None,
               "cpus": len(usable_cpus()), "data_mb": round(info.bytes / 2**20, 1),
               "engines": entries, "out": str(out), "data": str(info.path)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))  # not pyplot: saved, not shown in a notebook
    plot([results], path=out / "results.png", axes=fig.subplots(1, 2))
    return results


def sweep(sizes: list[int], engines: list[str] | None = None, memory_mb: int = 1500,
          profile: str | None = None, show: bool = True) -> list[dict]:
    """:func:`bench` at each size in ``sizes`` (rows), same budget; one results dict per size."""
    return [bench(profile, engines, memory_mb=memory_mb, rows=n, show=show) for n in sizes]


def table(results: list[dict]):
    """One row per (rows, engine): wall_s, peak_mb, ok, error, as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame([{"rows": r["rows"], **{k: e[k] for k in
                                                 ("engine", "wall_s", "peak_mb", "ok", "error")}}
                         for r in results for e in r["engines"]])


def ratio_best_vs_pandas(results: dict) -> float | None:
    """pandas wall time / the fastest other engine's, same rows, same run (None if missing).

    The ``pandas`` engine is the student's first version (``rolling_features_baseline``)."""
    ok = {e["engine"]: e["wall_s"] for e in results["engines"] if e["ok"]}
    others = [v for k, v in ok.items() if k != "pandas"]
    if "pandas" not in ok or not others:
        return None
    return round(ok["pandas"] / min(others), 2)


def plot(results: list[dict], path: str | Path | None = None, axes=None):
    """Wall time and peak memory per engine against rows; failed runs drawn as x at 0."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    df = table(results)
    for engine, g in df.groupby("engine", sort=False):
        g = g.sort_values("rows")
        for ax, col in zip(axes, ("wall_s", "peak_mb")):
            line, = ax.plot(g["rows"], g[col].where(g["ok"]), marker="o", label=engine)
            failed = g[~g["ok"]]
            ax.scatter(failed["rows"], failed[col], marker="x", s=70, color=line.get_color())
    budget = results[0]["memory_mb"]
    axes[1].axhline(budget, color="#c00", linestyle="--", linewidth=1)
    axes[1].text(df["rows"].min(), budget, f" budget {budget} MB", color="#c00", va="bottom")
    for ax, label in zip(axes, ("wall time (s)", "peak memory of the process tree (MB)")):
        ax.set_xlabel("events (rows)")
        ax.set_ylabel(label)
        if df["rows"].nunique() > 1:
            ax.set_xscale("log")
    axes[0].legend()
    axes[0].set_title("time (x: failed)")
    axes[1].set_title("memory (x: failed)")
    if path:
        axes[0].figure.tight_layout()
        axes[0].figure.savefig(path, dpi=90)
    return axes


def main(argv: list[str] | None = None) -> int:
    """``python -m course_helpers.features.bench run ENGINE DATA OUT``: one engine, one run."""
    import argparse

    import pyarrow.parquet as pq

    from .engines import compute

    p = argparse.ArgumentParser(prog="python -m course_helpers.features.bench")
    p.add_argument("cmd", choices=["run"])
    p.add_argument("engine")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--memory-mb", type=int)
    p.add_argument("--scheduler")
    args = p.parse_args(argv)
    out = compute(args.engine, args.data, args.out, memory_mb=args.memory_mb,
                  scheduler=args.scheduler)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (out / "rolling").glob("*.parquet"))
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
