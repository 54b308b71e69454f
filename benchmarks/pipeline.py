"""Pipeline benchmark for lessons 03 and 06: wall time, server readiness, memory of the tree.

    python benchmarks/pipeline.py [--profile smoke|classroom|full] [--rounds 2]

In a fresh workspace (a temporary MLOPS_HOME, removed afterwards), it measures:

  mlflow ready (new store)   `mlflow server --workers 1`, no job runner, on an empty store
  mlflow ready (warm)        the same server restarted on the now-migrated store
  prefect ready              the supervised Prefect API server
  run 1: cold                baseline config, new batch: every task runs, first registration
  run 2: rerun               same batch and config: data and training steps come from cache
  run 3: new config          crossed features: data steps cached, training runs, gate decides
  run 4: new batch           another batch: nothing is cached
  schedule ready             `prefect server start` with its scheduler replaces the API-only
                             server, and a runner serves the deployment
  tick: late / run           two scheduled runs every 10 s: how long after its due time each
                             started, and how long it ran

and the peak resident memory of the whole tree (this process, Prefect's server, the MLflow
server; then also the runner and its runs) sampled every 0.1 s, next to Binder's 2 GB and the course's 1.6 GB budget. Timings
are wall clock on whatever else the machine is doing: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from course_helpers.config import PROFILE_NAMES  # no side effects: MLOPS_HOME is set below

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="classroom", choices=PROFILE_NAMES)
    parser.add_argument("--rounds", type=int, default=2, help="MLflow warm restarts to time")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="mlops-bench-pipeline-"))
    os.environ["MLOPS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["MLOPS_PROFILE"] = args.profile

    from course_helpers import config, tracking
    from course_helpers.notebooks import TreeMemorySampler
    from course_helpers.pipeline import orchestrator
    from course_helpers.supervisor import Supervisor

    prof = config.get_profile(args.profile)
    sampler = TreeMemorySampler().start(os.getpid())
    rows: list[tuple[str, float, str]] = []
    try:
        srv = tracking.start_server(set_uri=False)
        rows.append(("mlflow ready (new store)", srv.ready_s, ""))
        warm = []
        for _ in range(args.rounds):
            srv.stop()
            srv = tracking.start_server(set_uri=False)
            warm.append(srv.ready_s)
        rows.append(("mlflow ready (warm)", min(warm), f"best of {len(warm)}"))

        t0 = time.perf_counter()
        orchestrator.connect()
        rows.append(("prefect ready", time.perf_counter() - t0, ""))

        from course_helpers import pipeline

        runs = [("run 1: cold", dict(preset="baseline", seed=1)),
                ("run 2: rerun", dict(preset="baseline", seed=1)),
                ("run 3: new config", dict(preset="crossed", seed=1)),
                ("run 4: new batch", dict(preset="crossed", seed=2))]
        results = {}
        for label, kw in runs:
            res = pipeline.run(profile=prof.name, tracking_uri=srv.url, **kw)
            if not res.ok:
                raise SystemExit(f"{label} failed: {res.error}")
            cached = sum(t["state"] == "Cached" for t in res.tasks)
            rows.append((label, res.seconds, f"{cached}/{len(res.tasks)} tasks cached; "
                                             f"auc {res.metrics['auc']:.4f}; v{res.version} "
                                             f"@{res.alias}"))
            results[label] = res
        pipeline_peak_mb = sampler.peak_bytes / 2**20

        from course_helpers.pipeline import schedule

        t0 = time.perf_counter()
        sched = schedule.start(10, seed=1, profile=prof.name, tracking_uri=srv.url)
        rows.append(("schedule ready", time.perf_counter() - t0, "server with scheduler + runner"))
        try:
            ticks = sched.wait(2, progress=False)
        finally:
            sched.stop()
        for _, tick in ticks[ticks["state"] == "Completed"].iterrows():
            rows.append((f"tick {tick['run'][:18]}: late", tick["late_s"], "start minus due"))
            rows.append((f"tick {tick['run'][:18]}: run", tick["seconds"],
                         f"{tick['cached']} tasks cached; v{tick['version']} @{tick['alias']}"))
    finally:
        peak_mb = sampler.stop() / 2**20
        Supervisor(home).cleanup(containers=False)
        shutil.rmtree(home, ignore_errors=True)

    print(f"\npipeline benchmark, profile {prof.name} ({prof.n_rows:,} rows a batch), "
          f"{config.cpu_limit():g} CPUs")
    print(f"{'step':<28} {'seconds':>8}  notes")
    for label, secs, note in rows:
        print(f"{label:<28} {secs:8.2f}  {note}")
    print(f"{'peak RSS, pipeline runs':<28} {pipeline_peak_mb:8.0f}  MB (this process + Prefect + "
          f"MLflow; target 1,300 MB, Binder kills at 2,048 MB)")
    print(f"{'peak RSS, with schedule':<28} {peak_mb:8.0f}  MB (+ scheduler, runner and its runs)")
    cold = results["run 1: cold"].seconds
    print(f"\nrerun / cold: {results['run 2: rerun'].seconds / cold:.2f}   "
          f"new config / cold: {results['run 3: new config'].seconds / cold:.2f}   "
          f"new batch / cold: {results['run 4: new batch'].seconds / cold:.2f}")


if __name__ == "__main__":
    main()
