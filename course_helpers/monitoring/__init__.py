"""Lesson 08: monitoring ML in production.

* :mod:`.prometheus`: a real Prometheus under the supervisor; PromQL into DataFrames;
* :mod:`.discovery`: file-based service discovery (``set_targets``), updated by the deploy
  backends when a deployment starts, scales or stops;
* :mod:`.rules`: availability and latency SLOs as recording rules and multiwindow
  multi-burn-rate alerts, tested with ``promtool test rules``;
* :mod:`.alerting`: Alertmanager and the course's webhook receiver, which triggers the
  lesson-03 pipeline when a ``action="retrain"`` alert fires;
* :mod:`.drift`: PSI, KS with Benjamini-Hochberg, prediction drift, data quality, delayed-label
  AUC, and the seeded scenarios.

Importing this package is cheap: pandas and friends load on first use.
"""

from __future__ import annotations

from typing import Any

from .discovery import jobs, read_targets, remove_targets, set_targets

__all__ = ["alerts", "alert_state", "jobs", "query", "query_range", "read_targets",
           "remove_targets", "running", "set_targets", "start", "stop", "targets", "url",
           "wait_for_targets"]


def start(profile: str | None = None, **kwargs: Any):
    """Start (or find) this workspace's Prometheus; see :func:`.prometheus.start`."""
    from .prometheus import start as _start

    return _start(profile, **kwargs)


def stop() -> bool:
    from .prometheus import stop as _stop

    return _stop()


def running():
    from .prometheus import running as _running

    return _running()


def url() -> str:
    from .prometheus import url as _url

    return _url()


def query(promql: str, at: Any = None):
    """PromQL at one instant -> DataFrame (labels..., ``timestamp``, ``value``)."""
    from .prometheus import query as _query

    return _query(promql, at)


def query_range(promql: str, start: Any, end: Any, step: float | str = 1.0):
    """PromQL over a time range -> long DataFrame (labels..., ``time``, ``t``, ``value``)."""
    from .prometheus import query_range as _qr

    return _qr(promql, start, end, step)


def targets():
    from .prometheus import targets as _targets

    return _targets()


def wait_for_targets(n: int = 1, job: str | None = None, timeout: float = 30.0) -> float:
    from .prometheus import wait_for_targets as _wait

    return _wait(n, job, timeout)


def alerts():
    from .prometheus import alerts as _alerts

    return _alerts()


def alert_state(name: str, **labels: str) -> str:
    from .prometheus import alert_state as _state

    return _state(name, **labels)


# -- command line ------------------------------------------------------------------------
def _cli_monitor(args) -> int:
    import json

    from . import prometheus

    cmd = args.monitor_cmd
    if cmd == "up":
        prom = prometheus.start(args.profile)
        am = None
        if args.alertmanager:
            from . import alerting

            am = alerting.start(profile=args.profile)
        from .. import supervisor

        supervisor._exit_hooks.clear()  # it outlives this command: `monitor down` stops it
        print(f"Prometheus at {prom.url} (scrape every {prom.interval_s:g} s, "
              f"{prom.rss_mb():.0f} MB); targets in {prometheus.monitoring_dir('targets')}")
        if am:
            print(f"Alertmanager at {am['alertmanager']}, webhook receiver at {am['receiver']}")
        for job, group in jobs().items():
            print(f"  job {job}: {', '.join(group['targets']) or '(no targets)'}")
        print("stop it with `mlops-course monitor down`")
        return 0
    if cmd == "down":
        from . import alerting

        stopped = alerting.stop() + (["prometheus"] if prometheus.stop() else [])
        print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
        return 0
    if cmd == "status":
        prom = prometheus.running()
        info: dict[str, Any] = {"prometheus": prom.url if prom else None,
                                "rss_mb": round(prom.rss_mb(), 1) if prom else None,
                                "jobs": jobs()}
        if prom:
            df = prometheus.targets()
            info["targets"] = df.to_dict("records") if not df.empty else []
        from . import alerting

        info |= alerting.status()
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            return 0
        where = f"{prom.url} ({info['rss_mb']} MB)" if prom else "not running"
        print(f"prometheus: {where}")
        for key in ("alertmanager", "receiver"):
            print(f"{key}: {info.get(key) or 'not running'}")
        for t in info.get("targets", []):
            print(f"  {t.get('job')}/{t.get('instance')}: {t.get('health')} "
                  f"{t.get('last_error') or ''}".rstrip())
        if not prom:
            for job, group in info["jobs"].items():
                print(f"  job {job}: {', '.join(group['targets']) or '(no targets)'}")
        return 0
    if cmd == "drift":
        from .drift import run_scenario

        res = run_scenario(args.scenario, profile=args.profile, out=args.out, seed=args.seed)
        print(f"scenario {res['scenario']}: {res['n_windows']} windows of {res['window_rows']} "
              f"rows, {res['alerts']} alert(s); wrote {res['json']} and {res['plot']}")
        return 0
    raise AssertionError(cmd)


def register_cli(subparsers) -> None:
    profiles = ["smoke", "classroom", "full"]
    p = subparsers.add_parser("monitor", help="Prometheus, SLO alerts and drift (lesson 08)")
    sub = p.add_subparsers(dest="monitor_cmd", required=True, metavar="ACTION")
    u = sub.add_parser("up", help="start Prometheus (and Alertmanager) on 127.0.0.1")
    u.add_argument("--profile", choices=profiles)
    u.add_argument("--no-alertmanager", dest="alertmanager", action="store_false",
                   help="Prometheus only")
    sub.add_parser("down", help="stop Prometheus, Alertmanager and the webhook receiver")
    s = sub.add_parser("status", help="what runs, what Prometheus scrapes, target health")
    s.add_argument("--json", action="store_true")
    d = sub.add_parser("drift", help="run a drift scenario: drift.json and a plot")
    d.add_argument("--scenario", required=True, choices=["none", "covariate", "concept",
                                                         "quality"])
    d.add_argument("--profile", choices=profiles)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", help="output directory (default: under the workspace)")
    p.set_defaults(func=_cli_monitor)
