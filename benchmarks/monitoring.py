"""Monitoring benchmark for lesson 08: alert delay, drift false alarms and detection.

    python benchmarks/monitoring.py [--profile smoke|classroom|full] [--windows 200]

In a fresh workspace (a temporary MLOPS_HOME, removed afterwards):

  alert_delay_s       a model server (1 worker) under paced load (20 req/s) scraped by a real
                      Prometheus at the profile's demo scale (1 s scrape, windows / 60); the
                      fault switch makes 30% of /predict answer 500; seconds from the switch
                      to the fast-burn alert firing (evaluation and `for` included)
  prometheus_rss_mb   Prometheus's resident memory at the end of that run
  false_alarm_rate    share of >= 200 no-drift windows (the lesson's window size) with any
                      alarm, KS p-values corrected with Benjamini-Hochberg (q = 0.01)
  false_alarm_rate_uncorrected   the same windows, raw p < 0.05 per feature
  detection_rate_*    share of drifted windows alarmed, per scenario

Timings are wall clock on whatever else the machine runs: the load average is printed.
The key=value lines come last.
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


def drift_rates(profile: str, n_windows: int) -> dict[str, float]:
    from course_helpers.monitoring import drift

    rows = drift.SIZES[profile][0]
    X_ref, y_ref, model = drift.reference(profile)
    out = {}
    corrected = drift.DriftMonitor().fit(X_ref, model, y_ref)
    raw = drift.DriftMonitor(q=0.05, correction=False).fit(X_ref, model, y_ref)
    t0 = time.perf_counter()
    none = drift.run_windows("none", n_windows, rows, corrected, seed=101, onset=n_windows)
    out["false_alarm_rate"] = drift.rates(none)["false_alarm_rate"]
    none_raw = drift.run_windows("none", n_windows, rows, raw, seed=101, onset=n_windows)
    out["false_alarm_rate_uncorrected"] = drift.rates(none_raw)["false_alarm_rate"]
    n_drift = max(20, n_windows // 5)
    for scenario in ("covariate", "concept", "quality"):
        res = drift.run_windows(scenario, n_drift, rows, corrected, seed=202, onset=0)
        out[f"detection_rate_{scenario}"] = drift.rates(res)["detection_rate"]
    out["drift_window_rows"] = rows
    out["drift_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def alert_delay(profile: str) -> dict[str, float]:
    from course_helpers import model, monitoring
    from course_helpers.monitoring.demo import fault_demo
    from course_helpers.serving import serve

    uri = model.prepare("logreg", profile=profile)
    handle = serve(uri, name="bench-m08", db=None)
    try:
        prom = monitoring.start(profile)
        monitoring.wait_for_targets(1, job="bench-m08", timeout=60)
        res = fault_demo(handle.url, "bench-m08", error_rate=0.3)
        return {"alert_delay_s": res["alert_delay_s"], "resolve_s": res["resolve_s"],
                "prometheus_rss_mb": round(prom.rss_mb(), 1)}
    finally:
        handle.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="classroom", choices=["smoke", "classroom", "full"])
    parser.add_argument("--windows", type=int, default=200, help="no-drift windows (>= 200)")
    parser.add_argument("--skip-alert", action="store_true", help="drift figures only")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="mlops-bench-monitoring-"))
    os.environ["MLOPS_HOME"] = str(home)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from course_helpers.supervisor import Supervisor

    figures: dict[str, float] = {}
    try:
        if not args.skip_alert:
            figures |= alert_delay(args.profile)
        figures |= drift_rates(args.profile, args.windows)
    finally:
        Supervisor(home).cleanup(containers=False)
        shutil.rmtree(home, ignore_errors=True)
    load = os.getloadavg()
    print(f"monitoring benchmark, profile {args.profile}, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for key, value in figures.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
