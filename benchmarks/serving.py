"""Serving benchmark for lesson 01: our server vs `mlflow models serve`, workers, cache.

    python benchmarks/serving.py [--profile smoke|classroom|full]

Every server loads the same MLflow-format model and gets the same Locust load (a
subprocess, FastHttpUser, 127.0.0.1 only, bounded by the profile's users and seconds):

  ours-1w          our server, 1 worker, cheap model (logistic regression), no cache
  mlflow-1w        `mlflow models serve --env-manager local`, 1 worker, same model
  forest-1w        our server, 1 worker, costly model (random forest), no cache, Zipf mix
  forest-2w        the same with 2 workers
  forest-1w-cache  1 worker, LRU cache on, the same Zipf mix

During the forest-1w run (one worker saturated by a costly model) a thread probes /health
every 50 ms with a new connection, as a kubelet would: ``health_p99_ms_under_load``
(goal < 50 ms), beside ``health_p99_ms_idle`` measured on the same server before the load.

It prints a table, the in-process predict rate as the ceiling, then the ratios last.
The load generator shares the 2 cores with the server: its CPU use is in the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from course_helpers import config, model  # noqa: E402
from course_helpers.data import request_rows  # noqa: E402
from course_helpers.loadtest import run_locust  # noqa: E402
from course_helpers.serving import serve  # noqa: E402
from course_helpers.serving.client import HealthProbe  # noqa: E402
from course_helpers.supervisor import Supervisor, free_port  # noqa: E402


#: Floors from the issue that introduced this benchmark (2-core machine).
FLOORS = {"ratio_ours_vs_mlflow": 1.5, "ratio_2w_vs_1w": 1.5, "ratio_cache_vs_nocache": 3.0}
HEALTH_GOAL_MS = 50.0


def in_process_rate(uri: str, seconds: float = 2.0) -> float:
    """Single-row predictions per second without HTTP: the ceiling for one core."""
    import warnings

    import sklearn

    from course_helpers.serving.app import load_model

    sklearn.set_config(assume_finite=True)  # as the server does
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    m = load_model(uri)
    rows = request_rows(500)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        m.predict([rows[n % len(rows)]])
        n += 1
    return n / (time.perf_counter() - start)


def mlflow_serve(uri: str, name: str = "mlflow-serve") -> str:
    port = free_port()
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    Supervisor().start(name, ["mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                              "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
                       url=f"http://127.0.0.1:{port}/ping", port=port, timeout=120, env=env)
    return f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=config.settings().profile,
                        choices=config.PROFILE_NAMES)
    parser.add_argument("--users", type=int, help="default: 10 (the DESIGN measurements)")
    args = parser.parse_args()
    prof = config.get_profile(args.profile)
    users = args.users or 10
    cheap = model.prepare("logreg", profile=prof.name)
    costly = model.prepare("forest", profile=prof.name, n_estimators=200)
    zipf_rows = request_rows(2000, seed=11)
    sup = Supervisor()

    def bench(label, url, **kw):
        # a short warm-up, then the measured run
        run_locust(url, users=users, spawn_rate=users, duration_s=2, label=f"{label}-warm",
                   progress=False, **kw)
        res = run_locust(url, users=users, spawn_rate=users, duration_s=prof.duration_s,
                         label=label, progress=False, **kw)
        print(f"  {label:<16} {res.rps:8.1f} req/s  p50 {res.p50_ms:6.1f} ms  "
              f"p95 {res.p95_ms:6.1f} ms  failures {res.failures}", flush=True)
        return res

    results = {}
    health = {}
    try:
        print(f"profile {prof.name}: {users} users, {prof.duration_s} s per run; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        srv = serve(cheap, name="bench-ours", workers=1, cache="none", db=None)
        results["ours-1w"] = bench("ours-1w", srv.url)
        srv.stop()
        url = mlflow_serve(cheap)
        results["mlflow-1w"] = bench("mlflow-1w", url, api="mlflow")
        sup.stop("mlflow-serve")
        for label, workers, cache in (("forest-1w", 1, "none"), ("forest-2w", 2, "none"),
                                      ("forest-1w-cache", 1, "lru")):
            srv = serve(costly, name=f"bench-{label}", workers=workers, cache=cache, db=None)
            if label == "forest-1w":
                with HealthProbe(srv.url) as idle:
                    time.sleep(3)
                with HealthProbe(srv.url) as loaded:
                    results[label] = bench(label, srv.url, rows=zipf_rows, mix="zipf")
                health = {"idle": idle.summary(), "load": loaded.summary()}
            else:
                results[label] = bench(label, srv.url, rows=zipf_rows, mix="zipf")
            srv.stop()
    finally:
        sup.cleanup(containers=False)

    ceiling = in_process_rate(cheap)
    print()
    print(f"{'server':<16} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'fail':>6} {'gen CPU':>8}")
    for label, r in results.items():
        print(f"{label:<16} {r.rps:9.1f} {r.p50_ms:8.1f} {r.p95_ms:8.1f} {r.failures:6d} "
              f"{r.generator_cpu:8.2f}")
    ours, mlf = results["ours-1w"], results["mlflow-1w"]
    print(f"\nin-process predict (ceiling, one core): {ceiling:,.0f} rows/s; "
          f"our 1-worker server reaches {ours.rps / ceiling:.0%} of it")
    print(f"p95 ours {ours.p95_ms:.1f} ms vs mlflow {mlf.p95_ms:.1f} ms "
          f"({'no worse' if ours.p95_ms <= mlf.p95_ms else 'WORSE'})")
    h = health["load"]
    print(f"/health under load: {h['probes']} probes, {h['failed']} failed, p50 {h['p50_ms']:.1f} "
          f"ms, max {h['max_ms']:.1f} ms (probes start with the warm-up run)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    ratios = {"ratio_ours_vs_mlflow": ours.rps / mlf.rps,
              "ratio_2w_vs_1w": results["forest-2w"].rps / results["forest-1w"].rps,
              "ratio_cache_vs_nocache": results["forest-1w-cache"].rps / results["forest-1w"].rps}
    verdicts = [f"{k} {'ok' if v >= FLOORS[k] else 'BELOW'} (floor {FLOORS[k]})"
                for k, v in ratios.items()]
    verdicts.append(f"health p99 {'ok' if h['p99_ms'] < HEALTH_GOAL_MS else 'OVER'} "
                    f"(goal < {HEALTH_GOAL_MS:.0f} ms)")
    print("floors: " + "; ".join(verdicts))
    for k, v in ratios.items():
        print(f"{k}={v:.2f}")
    print(f"health_p99_ms_idle={health['idle']['p99_ms']:.1f}")
    print(f"health_p99_ms_under_load={h['p99_ms']:.1f}")


if __name__ == "__main__":
    main()
