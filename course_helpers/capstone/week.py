"""A compressed week in production on one machine: every earlier lesson's piece, one loop.

Set-up (all through the supervisor, all on 127.0.0.1): lesson 08's Prometheus, Alertmanager
and webhook receiver; lesson 03's Prefect server (warmed in the background); the champion
of lesson 06's registry deployed with lesson 02's local backend (2 replicas behind nginx,
restart policy on). Each day:

1. a batch arrives (lesson 08's seeded generator of the course dataset: covariate drift from
   ``plan.drift_day`` on); lesson 05's data gate validates it against the data contract;
   the day's transactions of lesson 07's generator get their rolling features from lesson
   07's reference engine, materialised into its online store (``features/online.db``; the
   feature view a user-level model reads at request time; the served model of the week is
   the course's 30-feature model, whose batch is the one above);
2. lesson 02's paced Locust users send production traffic through nginx all day;
3. lesson 08's drift monitor checks the batch against the training reference and publishes
   its gauges; on the drift day the ``ModelInputDrift`` rule fires in Prometheus,
   Alertmanager calls the receiver, the receiver starts lesson 03's pipeline (trigger path);
   production is scaled in by one replica while the retrain runs (memory for the training
   job on a 2 GB machine) and back out before the canary;
4. a new version (the retrain, or on ``bad_model_day`` lesson 09's slow challenger) goes
   through lesson 05's model gate against the production model, then lesson 09's canary
   controller; promoted versions replace the production replicas one at a time;
5. on ``kill_day`` one production replica is SIGKILLed and the restart policy heals it.

Everything is written to the run directory as the day ends (``capstone.json``,
``timeline.csv``, ``memory.csv``); :func:`run_week` adds ``timeline.png`` and ``report.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import config
from ..errors import CourseError
from ..notebooks import process_memory
from .plan import Plan, make_plan

STABLE = "capstone-stable"
EVENT_KINDS = ("batch", "drift_alert", "alert", "pipeline_run", "registered", "gate",
               "canary_step", "promoted", "rolled_back", "replica_killed", "replica_healed",
               "day_failed", "scaled")
DAY_KEYS = ("day", "rows", "drift_score", "alerts", "pipeline_runs", "registered", "promoted",
            "rolled_back", "requests", "failed_requests", "p95_ms", "slo_budget_left",
            "cost_per_1m")
SUMMARY_KEYS = ("drift_day", "drift_detected_day", "retrained_day", "bad_model_day",
                "bad_model_max_weight", "slo_met", "wall_s", "peak_mb")
TIMELINE_COLUMNS = ("t_s", "day", "requests", "failed_requests", "rps", "p95_ms",
                    "error_ratio", "drift_score", "version", "canary_weight", "alerts_firing")
MEMORY_COLUMNS = ("t_s", "day", "process", "rss_mb", "pss_mb")


class DayFailed(CourseError):
    """A day could not finish; ``fatal`` when the week cannot safely go on."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


# -- pure helpers (unit-tested) ---------------------------------------------------------------
def budget_left(requests: int, failed: int, availability: float) -> float:
    """Fraction (0..1) of the error budget left after ``failed`` of ``requests`` failed, for
    an availability SLO (e.g. 0.99: 1% of requests may fail)."""
    if requests <= 0:
        return 1.0
    allowed = (1.0 - availability) * requests
    return round(max(0.0, 1.0 - failed / allowed), 4) if allowed > 0 else float(failed == 0)


def drift_score(result: dict) -> float:
    """One number per day for the plot: the largest per-feature PSI of the window."""
    values = [v for v in (result.get("psi") or {}).values() if v == v]
    return round(max(values), 4) if values else 0.0


def cost_per_1m(rps: float, instances: int, prices=None) -> float | None:
    """USD per million requests at ``rps`` on ``instances`` of the cheapest priced 1-vCPU
    instance (lesson 02's price table, :mod:`course_helpers.capacity`)."""
    from .. import capacity

    if rps <= 0:
        return None
    prices = capacity.load_prices() if prices is None else prices
    one = prices[prices["vcpus"] >= 1].sort_values("usd_per_hour").iloc[0]
    return round(capacity.cost_per_million(float(one["usd_per_hour"]), instances, rps), 4)


def bucket_load(samples: list[float], seconds: list[dict]) -> list[dict]:
    """Locust's per-second outcomes (``t`` epoch second, ``ok``, ``failed``, ``p95_ms``)
    summed into the sampling intervals ending at each of ``samples`` (epoch seconds, sorted):
    one dict per sample with ``requests``, ``failed_requests``, ``rps``, ``p95_ms`` (the worst
    second's p95 in the interval) and ``error_ratio``."""
    out = []
    prev = float("-inf")  # the first interval takes everything before the first sample
    for t in samples:
        rows = [s for s in seconds if prev < s["t"] + 0.5 <= t]
        if prev == float("-inf"):
            prev = min([s["t"] for s in rows] or [t - 1.0])
        req = sum(s["ok"] + s["failed"] for s in rows)
        fail = sum(s["failed"] for s in rows)
        p95s = [s["p95_ms"] for s in rows if s.get("p95_ms") == s.get("p95_ms")
                and s.get("p95_ms") is not None]
        span = max(t - prev, 1e-9)
        out.append({"requests": req, "failed_requests": fail, "rps": round(req / span, 2),
                    "p95_ms": round(max(p95s), 2) if p95s else None,
                    "error_ratio": round(fail / req, 4) if req else 0.0})
        prev = t
    return out


def weight_at(points: list[tuple[float, int]], t: float) -> int:
    """The canary weight in force at epoch ``t`` given ``(epoch, weight)`` changes."""
    w = 0
    for at, weight in points:
        if at <= t:
            w = weight
    return w


# -- the run ----------------------------------------------------------------------------------
@dataclasses.dataclass
class WeekReport:
    """What :func:`run_week` wrote: the parsed ``capstone.json`` and the run directory."""

    out: Path
    data: dict

    @property
    def days(self) -> list[dict]:
        return self.data["days"]

    @property
    def summary(self) -> dict:
        return self.data["summary"]

    @property
    def events(self) -> list[dict]:
        return self.data["events"]

    def days_table(self):
        import pandas as pd

        return pd.DataFrame(self.days)

    def timeline(self):
        import pandas as pd

        return pd.read_csv(self.out / "timeline.csv")

    def memory(self):
        import pandas as pd

        return pd.read_csv(self.out / "memory.csv")


class Week:
    """One run; see the module docstring. Use :func:`run_week`."""

    def __init__(self, plan: Plan, out: Path, seed: int = 0, backend: str = "local",
                 verbose: bool = True) -> None:
        self.plan, self.out, self.seed, self.backend_name = plan, out, seed, backend
        self.say = print if verbose else (lambda *a, **k: None)
        self.verbose = verbose
        self.t0 = time.time()
        self.day = 0
        self.events: list[dict] = []
        self.days: list[dict] = []
        self.samples: list[dict] = []  # timeline rows before the load columns are filled
        self.memory: list[dict] = []
        self.canary_points: list[tuple[float, int]] = []
        self.current_drift = 0.0
        self.version: str | None = None
        self.peak_mb = 0.0  # the largest PSS sum over the whole process tree
        self.peak_rss_mb = 0.0
        self.started: dict[str, bool] = {}
        self.summary: dict[str, Any] = {k: None for k in SUMMARY_KEYS}
        self.summary.update(drift_day=plan.drift_day, bad_model_day=plan.bad_model_day,
                            bad_model_max_weight=0)
        self.gates: list[dict] = []
        self.day_alerts: dict[int, set[str]] = {}
        self.skew: list[dict] = []
        self.canaries: list[dict] = []
        self.trace: list[dict] = []
        self.features: list[dict] = []
        self.store = None
        self.cum = {"requests": 0, "failed": 0}
        self.p95s: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.dep = None
        self.backend = None
        self.load = None
        self.name = None

    # events and samples ---------------------------------------------------------------
    def event(self, kind: str, detail: str) -> None:
        assert kind in EVENT_KINDS, kind
        with self._lock:
            self.events.append({"t_s": round(time.time() - self.t0, 2), "day": self.day,
                                "kind": kind, "detail": detail})
        self.say(f"  [day {self.day}] {kind}: {detail}")

    def _sampler(self) -> None:
        """Every ``sample_s``: a timeline row (load columns filled when the day ends) and
        one memory row per supervised process (its whole process group's RSS and PSS; PSS
        splits a page shared by a gunicorn master and its forked worker, as Binder's memory
        limit counts it), plus ``capstone``: this process and what it started outside the
        supervisor (Locust)."""
        import psutil

        from ..supervisor import Supervisor

        me = psutil.Process()
        while not self._stop.wait(self.plan.sample_s):
            now = time.time()
            firing = self._firing()
            with self._lock:
                self.samples.append({"epoch": now, "t_s": round(now - self.t0, 2),
                                     "day": self.day, "drift_score": self.current_drift,
                                     "version": self.version, "alerts_firing": firing})
            rows, seen = [], set()
            groups = []
            for rec in Supervisor().records():
                if rec.kind != "process" or not rec.is_alive():
                    continue
                try:
                    p = psutil.Process(rec.pid)
                    groups.append((rec.name, [p] + p.children(recursive=True)))
                except psutil.Error:
                    continue
            try:
                groups.append(("capstone", [me] + me.children(recursive=True)))
            except psutil.Error:
                pass
            for name, procs in groups:
                rss = pss = 0.0
                for q in procs:
                    if q.pid in seen:
                        continue
                    seen.add(q.pid)
                    rss, pss = (a + b / 2**20 for a, b in zip((rss, pss), process_memory(q)))
                rows.append((name, rss, pss))
            with self._lock:
                self.peak_mb = max(self.peak_mb, sum(r[2] for r in rows))
                self.peak_rss_mb = max(self.peak_rss_mb, sum(r[1] for r in rows))
                for name, rss, pss in rows:
                    self.memory.append({"t_s": round(now - self.t0, 2), "day": self.day,
                                        "process": name, "rss_mb": round(rss, 1),
                                        "pss_mb": round(pss, 1)})

    def _firing(self) -> int:
        """How many alerts Prometheus has firing now; their names go into the day's
        ``alerts``."""
        try:
            from .. import monitoring

            df = monitoring.alerts()
            if df is None or df.empty or "state" not in df:
                return 0
            names = set(df.loc[df["state"] == "firing", "alertname"])
            with self._lock:
                self.day_alerts.setdefault(self.day, set()).update(names)
            return int((df["state"] == "firing").sum())
        except Exception:  # noqa: BLE001 - a sample without the alert count is still a sample
            return 0

    # set-up and tear-down ---------------------------------------------------------------
    def _start_monitoring(self) -> None:
        """Lesson 08's Prometheus, Alertmanager and receiver (errors kept for setup)."""
        from .. import monitoring
        from ..monitoring import alerting

        p = self.plan
        try:
            self.started["prometheus"] = monitoring.running() is None
            monitoring.start(p.profile)  # a new Prometheus starts on an empty TSDB
            status = alerting.status()
            self.started["alerting"] = not (status.get("alertmanager")
                                            and status.get("receiver"))
            alerting.start(profile=p.profile)  # with an empty notification log
        except BaseException as err:  # noqa: BLE001 - re-raised by setup in the main thread
            self._monitoring.error = err

    def setup(self) -> None:
        from .. import tracking
        from ..deploy import DeploymentSpec, get_backend
        from ..model import MODEL_NAME
        from ..monitoring import alerting, drift
        from ..pipeline import orchestrator
        p = self.plan
        self.name = MODEL_NAME  # the alert-triggered retrain registers this model
        # a drift verdict left by an earlier run must not fire today's alert
        drift.export({"alert": False, "window": 0, "psi": {}, "ks_p": {},
                      "flagged_features": []})
        threading.Thread(target=self._sampler, name="capstone-sampler", daemon=True).start()
        # Prometheus and Alertmanager start (and wait to be ready) while this thread works
        # in MLflow; both are up before the replicas are deployed
        self._monitoring = threading.Thread(target=self._start_monitoring,
                                            name="capstone-monitoring", daemon=True)
        self._monitoring.error = None
        self._monitoring.start()
        self.started["prefect"] = orchestrator.server_url() is None
        self._warm = alerting.warm_pipeline()
        tracking.quiet()
        self.version = self._baseline()
        self.trace_version(self.version, "baseline champion (the week starts from it)")
        X_ref, y_ref, model = drift.reference(p.profile, seed=self.seed)
        self.monitor = drift.DriftMonitor().fit(X_ref, model, y_ref)
        self._setup_features()
        cpus = min(2.0, config.cpu_limit())
        # 1 GB a replica (lesson 02's default): a replica holds ~600 MB RSS (master and its
        # forked worker), and a tighter memory cgroup OOM-kills it over and over under load
        spec = DeploymentSpec.many_small(f"models:/{self.name}/{self.version}", replicas=2,
                                         memory_mb=2048, cpus=cpus, name=STABLE)
        self.backend = get_backend(self.backend_name, verbose=False)
        self._monitoring.join()
        if self._monitoring.error is not None:
            raise self._monitoring.error
        self.say(f"deploying {self.name} v{self.version}: 2 replicas behind nginx ...")
        self.dep = self.backend.up(spec)
        import mlflow.sklearn

        with tracking.using():
            served = mlflow.sklearn.load_model(f"models:/{self.name}/{self.version}")
        self._skew_check(self.version, served, X_ref)

    def _baseline(self) -> str:
        """The version every week starts from: the course model trained on the training
        world (registered once, tagged ``capstone.baseline``), made ``@champion``, so a
        second run plays the same week whatever the first one promoted."""
        from .. import tracking
        from ..rollout.faults import make_challenger

        c = tracking.client()
        found = [mv for mv in c.search_model_versions(f"name='{self.name}'")
                 if (mv.tags or {}).get("capstone.baseline") == "1"]
        if found:
            mv = max(found, key=lambda m: int(m.version))
            version = str(mv.version)
            if "data.fingerprint" not in (mv.tags or {}):
                self._tag_lineage(version, seed=0)
        else:
            version = make_challenger("none", name=self.name, seed=0,
                                      profile=self.plan.profile, alias=tracking.CHAMPION)
            c.set_model_version_tag(self.name, version, "capstone.baseline", "1")
            self._tag_lineage(version, seed=0)
        tracking.promote(self.name, version, reason="capstone: the week starts")
        return version

    def _release_prefect(self) -> None:
        """Stop the Prefect server this run started once the retrain is done (~200 MB idle
        until the next retrain, which starts it again)."""
        from ..pipeline import orchestrator

        if self.started.get("prefect"):
            warm = getattr(self, "_warm", None)
            if warm is not None:
                warm.join(timeout=60)
            with contextlib.suppress(Exception):
                orchestrator.stop_server()

    def _setup_features(self) -> None:
        """Lesson 07's seeded transactions (``plan.rows`` events a day over its 28 days) and
        its online store (SQLite), under ``<out>/features``."""
        from ..features import data as fdata
        from ..features.store import OnlineStore

        folder = self.out / "features"
        fdata.generate(self.plan.rows * fdata.DAYS, folder, seed=self.seed, show=False)
        (folder / "online.db").unlink(missing_ok=True)
        self.store = OnlineStore(folder / "online.db")

    def _day_features(self, day: int) -> dict:
        """The day's lesson-07 features: the rolling features (lesson 07's reference engine)
        of the last ``WINDOW_DAYS`` days' events, materialised as of the day's end, then read
        back as a request would (``OnlineStore.get``) to measure their age. Simulated day
        ``d`` is the data's day ``(d - 1) % 28``."""
        import pandas as pd

        from ..features import data as fdata
        from ..features.engines import WINDOW_DAYS, rolling_features

        k = (day - 1) % fdata.DAYS
        start = pd.Timestamp(fdata.START)
        frames = {}
        for i in range(max(0, k - WINDOW_DAYS + 1), k + 1):
            date = (start + pd.Timedelta(days=i)).strftime("%Y-%m-%d")
            files = sorted((self.out / "features" / "events" / f"day={date}").glob("*.parquet"))
            frames[i] = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        rolling = rolling_features(pd.concat(frames.values(), ignore_index=True))
        as_of = start + pd.Timedelta(days=k + 1)
        users = self.store.materialize(rolling, as_of)
        served = self.store.get(sorted(rolling["user_id"].unique()), at=as_of)
        age = (served["label_ts"] - served["feature_ts"]).dt.total_seconds()
        entry = {"day": day, "data_day": str((start + pd.Timedelta(days=k)).date()),
                 "events": len(frames[k]), "window_events": int(sum(map(len, frames.values()))),
                 "users_materialised": users,
                 "feature_age_s_median": round(float(age.median()), 1)}
        self.features.append(entry)
        self.event("batch", f"lesson 07: {entry['events']} transactions of "
                            f"{entry['data_day']}; rolling features of {users} users "
                            f"materialised (median age {entry['feature_age_s_median']:.0f} s)")
        return entry

    def teardown(self) -> None:
        """Stop everything this run started (each step on its own: one failure does not keep
        the others running)."""
        from ..supervisor import Supervisor

        self._stop.set()
        mon = getattr(self, "_monitoring", None)
        if mon is not None:
            mon.join(timeout=90)  # what it is starting must be recorded before we stop it
        with contextlib.suppress(Exception):  # leave no drift verdict behind for the next run
            from ..monitoring import drift

            drift.export({"alert": False, "window": 0, "psi": {}, "ks_p": {},
                          "flagged_features": []})
        if self.load is not None:
            with contextlib.suppress(Exception):
                self.load.kill()
        if self.dep is not None:
            with contextlib.suppress(Exception):
                self.backend.down(self.dep)
        sup = Supervisor()
        for rec in sup.records():  # retrain processes the receiver started for this run
            if rec.name.startswith(("retrain-", "capstone-")):
                with contextlib.suppress(Exception):
                    sup.stop(rec.name)
        if self.started.get("alerting"):
            from ..monitoring import alerting

            with contextlib.suppress(Exception):
                alerting.stop()
        if self.started.get("prometheus"):
            from .. import monitoring

            with contextlib.suppress(Exception):
                monitoring.stop()
        self._release_prefect()
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()

    # lineage --------------------------------------------------------------------------
    def trace_version(self, version: str, how: str) -> None:
        """Record where a version came from (lesson 06's :func:`tracking.lineage`): its MLflow
        run, the data (fingerprint tag or logged dataset digest) and the code version."""
        from .. import tracking

        entry = {"version": str(version), "how": how}
        try:
            lin = tracking.lineage(self.name, str(version))
            tags = {**lin.get("run_tags", {}), **lin.get("version_tags", {})}
            digests = [d["digest"] for d in lin.get("datasets", []) if d.get("digest")]
            entry |= {"run_id": lin.get("run_id"),
                      "data": tags.get("data.fingerprint") or (digests[0] if digests else None),
                      "code": tags.get("code.version") or tags.get("mlflow.source.git.commit")}
        except Exception as err:  # noqa: BLE001 - recorded as untraceable, not fatal
            entry["error"] = str(err)
        self.trace.append(entry)

    def _tag_lineage(self, version: str, seed: int) -> None:
        """Give a version registered outside the pipeline (the baseline, a hand-made
        challenger) the pipeline's identity tags: the fingerprint of the exact rows
        :func:`course_helpers.model.train` fitted it on, and a hash of the code that did."""
        import hashlib

        from .. import model as course_model
        from .. import tracking
        from ..data import make_dataset
        from ..pipeline.steps import fingerprint
        from ..rollout import faults

        X, y = make_dataset(config.get_profile(self.plan.profile).n_rows, seed=seed)
        code = hashlib.sha256(Path(course_model.__file__).read_bytes()
                              + Path(faults.__file__).read_bytes()).hexdigest()[:12]
        c = tracking.client()
        for key, value in (("data.fingerprint", fingerprint(X.assign(label=y))),
                           ("data.source", f"course_helpers.data.make_dataset(seed={seed})"),
                           ("code.version", code)):
            c.set_model_version_tag(self.name, version, key, value)

    # one day --------------------------------------------------------------------------
    def run_day(self, day: int) -> dict:
        from ..cicd import gates
        from ..monitoring import drift
        from ..rollout.load import BackgroundLoad

        p = self.plan
        self.day = day
        rec: dict[str, Any] = {"day": day, "rows": 0, "drift_score": 0.0, "alerts": [],
                               "pipeline_runs": 0, "registered": [], "promoted": None,
                               "rolled_back": None, "requests": 0, "failed_requests": 0,
                               "p95_ms": None, "slo_budget_left": None, "cost_per_1m": None,
                               "status": "ok"}
        self.partial = rec  # what a failing day still records
        begin = time.time()
        X, y = drift.make_window("covariate", day, p.rows, seed=self.seed, onset=p.drift_day)
        batch = X.assign(label=y)
        rec["rows"] = len(batch)
        dgate = gates.data_gate(batch)
        self.gates.append({"day": day, "stage": "data", "passed": dgate.passed,
                           "lines": dgate.lines()})
        self.event("batch", f"{len(batch)} rows; data contract "
                            f"{'passed' if dgate.passed else 'FAILED'}")
        if not dgate.passed:
            raise DayFailed(f"day {day}'s batch broke the data contract: "
                            f"{dgate.checks[0].detail}")
        self._day_features(day)
        self.load = BackgroundLoad(self.dep.url, p.users, p.rate, max_s=900,
                                   out_dir=self.out / "load", label=f"day{day}").start()
        try:
            res = self.monitor.check(X, y, index=day)
            rec["drift_score"] = self.current_drift = drift_score(res)
            drift.export(res)
            drift.save_recent(X, y)
            events = p.events_on(day)
            killed = self._kill() if "kill" in events else None
            candidate = None
            if res["alert"]:
                candidate = self._drift_retrain(rec, res)
            elif "schedule" in events:
                candidate = self._scheduled_retrain(rec)
            if candidate:
                self._gate_and_canary(rec, candidate, X, y, retrained=True)
            if "bad_model" in events:
                from ..rollout.faults import make_challenger

                v = make_challenger("slow", name=self.name, seed=100 + day,
                                    profile=p.profile, delay_ms=p.slow_delay_ms)
                self._tag_lineage(v, seed=100 + day)
                rec["registered"].append(v)
                self.trace_version(v, "challenger registered by hand (slow: seeded fault)")
                self.event("registered", f"{self.name} v{v} (a challenger with a seeded "
                                         f"{p.slow_delay_ms:g} ms delay)")
                self._gate_and_canary(rec, v, X, y, retrained=False, bad=True)
            if killed:
                self._wait_healed(*killed)
            rest = p.day_s - (time.time() - begin)
            if rest > 0:
                time.sleep(rest)
        except KeyboardInterrupt:
            raise  # teardown kills Locust: no results to wait for
        except BaseException:
            self._end_load(rec, begin)  # a failing day still counts its traffic
            raise
        self._end_load(rec, begin)
        return rec

    def _end_load(self, rec: dict, begin: float) -> None:
        load, self.load = self.load, None
        if load is not None:
            self._day_load(rec, load.stop(), begin)

    def _day_load(self, rec: dict, res: dict, begin: float) -> None:
        p = self.plan
        rec["requests"] = int(res.get("requests") or 0)
        rec["failed_requests"] = int(res.get("failures") or 0)
        p95 = res.get("p95_ms")
        rec["p95_ms"] = round(float(p95), 2) if p95 is not None and p95 == p95 else None
        if rec["p95_ms"] is not None:
            self.p95s.append(rec["p95_ms"])
        self.cum["requests"] += rec["requests"]
        self.cum["failed"] += rec["failed_requests"]
        rec["slo_budget_left"] = budget_left(self.cum["requests"], self.cum["failed"],
                                             p.slo_availability)
        rps = float(res.get("rps") or 0.0)
        rec["cost_per_1m"] = cost_per_1m(rps, len(self.dep.replicas)) if rps else None
        with self._lock:
            seen = self.day_alerts.get(rec["day"], set())
        # a drift alert still firing from an earlier day is that day's, not this one's
        seen = {a for a in seen if a != "ModelInputDrift"}
        rec["alerts"] = sorted(set(rec["alerts"]) | seen)
        seconds = res.get("timeline") or []
        with self._lock:
            rows = [s for s in self.samples if s["day"] == rec["day"] and "requests" not in s]
        filled = bucket_load([r["epoch"] for r in rows], seconds)
        for r, f in zip(rows, filled):
            r.update(f)
            r["canary_weight"] = weight_at(self.canary_points, r["epoch"])

    def _kill(self) -> tuple:
        """SIGKILL production replica 1 under traffic; returns ``(replica, killed_at)``."""
        time.sleep(min(1.0, self.plan.day_s / 4))  # under traffic for a moment first
        r = self.backend.kill_replica(self.dep, 1)
        self.event("replica_killed", f"SIGKILL {r.name}")
        return r, time.time()

    def _wait_healed(self, r, killed: float, timeout_s: float = 120.0) -> None:
        """Until the restart policy brought the killed replica back and every one is ready."""
        while time.time() < killed + timeout_s:
            states = self.backend.status(self.dep)
            if states[1]["restarts"] >= 1 and all(s["ready"] for s in states):
                self.event("replica_healed", f"{r.name} restarted by the restart policy and "
                                             f"ready {time.time() - killed:.1f} s after the kill")
                return
            time.sleep(0.25)
        raise DayFailed(f"replica {r.name} was not back within {timeout_s:g} s", fatal=True)

    def _drift_retrain(self, rec: dict, res: dict) -> str | None:
        """The drift alert's path: Prometheus rule -> Alertmanager -> receiver -> pipeline."""
        from .. import monitoring

        after = time.time() - 1
        self.event("drift_alert", f"{len(res['flagged_features'])} feature(s) drifted "
                                  f"(max PSI {rec['drift_score']:.3f}); gauges published")
        if self.summary["drift_detected_day"] is not None and \
                monitoring.alert_state("ModelInputDrift") == "firing":
            # still firing since an earlier day: Alertmanager does not notify again and the
            # receiver started its retrain then
            rec["alerts"].append("ModelInputDrift")
            self.event("alert", "ModelInputDrift still firing since an earlier day (its "
                                "retrain already ran)")
            return None
        with self._room_for_training("the alert-triggered retrain"):
            done = self._alert_to_retrain(rec, after)
        rec["pipeline_runs"] += 1
        if not done.get("ok"):
            done = _already_trained(done)
        if not done.get("ok"):
            raise DayFailed(f"the alert-triggered pipeline run failed: {done.get('error')}")
        v = str(done["version"])
        self.event("pipeline_run", f"retrain finished: {self.name} v{v} as @{done['alias']}"
                   + (" (this batch was trained on before: the registered version is reused)"
                      if done.get("reused") else ""))
        if self.summary["retrained_day"] is None:
            self.summary["retrained_day"] = self.day
        return self._registered(rec, v, "pipeline (alert-triggered retrain)")

    def _alert_to_retrain(self, rec: dict, after: float) -> dict:
        """Wait for ModelInputDrift at the receiver, then for the retrain it started; returns
        the retrain's ``finished`` record once its process has exited and Prefect's server
        this run started is stopped."""
        from ..monitoring import alerting

        deadline = time.time() + 30
        fired = None
        while time.time() < deadline and fired is None:
            for note in alerting.received("alerts"):
                if note.get("received_at", 0) < after:
                    continue
                for a in note.get("alerts", []):
                    if a.get("status") == "firing" and \
                            a.get("labels", {}).get("alertname") == "ModelInputDrift":
                        fired = a
            time.sleep(0.5)
        if fired is None:
            raise DayFailed("the drift was measured but ModelInputDrift did not reach the "
                            "receiver within 30 s (see `mlops-course monitor status`)")
        rec["alerts"].append("ModelInputDrift")
        if self.summary["drift_detected_day"] is None:
            self.summary["drift_detected_day"] = self.day
        self.event("alert", "ModelInputDrift firing: Alertmanager called the receiver, "
                            "which started the pipeline")
        try:
            return alerting.wait_for_retrain(after=after, timeout=240)
        finally:
            _reap_retrains(after)
            self._release_prefect()

    @contextlib.contextmanager
    def _room_for_training(self, what: str):
        """Production scaled in by one replica (lesson 02's ``Backend.scale``: nginx stops
        sending it traffic first) while ``what`` runs, then back out, ready, before the
        canary. On one 2 GB machine (Binder) a retrain (the pipeline's process and Prefect's
        server, ~580 MB) does not fit beside two replicas (~290 MB each), the driver, Locust
        and the monitoring within the 1.6 GB budget; one replica fewer costs redundancy for
        the retrain's seconds (on Binder's one CPU the replicas share that CPU anyway, and
        the week's traffic fits one replica). In the cloud the training job runs on machines
        of its own."""
        n = len(self.dep.replicas)
        if n < 2:
            yield
            return
        self.backend.scale(self.dep, n - 1)
        self.event("scaled", f"production scaled in to {n - 1} replica(s) while {what} runs "
                             "(memory for the training job)")
        interrupted = False
        try:
            yield
        except KeyboardInterrupt:
            interrupted = True  # teardown stops production: nothing to scale back out
            raise
        finally:
            if not interrupted:
                self.backend.scale(self.dep, n)
                self.event("scaled", f"production back to {n} replicas (ready)")

    def _scheduled_retrain(self, rec: dict) -> str | None:
        """A scheduled retrain: the same pipeline entry point, started by the clock."""
        from ..monitoring import alerting
        from ..supervisor import Supervisor

        after = time.time() - 1
        name = f"capstone-retrain-{self.day}"
        pdir = self.out / "pipeline"
        with self._room_for_training("the scheduled retrain"):
            Supervisor().start(name, [sys.executable, "-m", "course_helpers.monitoring.alerting",
                                      "retrain", "--dir", str(pdir), "--alertname", "schedule",
                                      "--profile", self.plan.profile], timeout=5)
            try:
                done = alerting.wait_for_retrain(after=after, timeout=240, poll=0.5,
                                                 directory=pdir)
            except CourseError:
                done = None
            finally:
                Supervisor().stop(name)
        rec["pipeline_runs"] += 1
        if not done or not done.get("ok"):
            raise DayFailed(f"the scheduled pipeline run failed: {(done or {}).get('error')}")
        v = str(done["version"])
        self.event("pipeline_run", f"scheduled retrain: {self.name} v{v}")
        return self._registered(rec, v, "pipeline (scheduled)")

    def _registered(self, rec: dict, version: str, source: str) -> str | None:
        """Record a retrain's ``version`` (traced to ``source``); None when the retrain
        reused the version already in production."""
        if version == self.version:
            return None
        rec["registered"].append(version)
        self.trace_version(version, source)
        self.event("registered", f"{self.name} v{version}")
        return version

    def _gate_and_canary(self, rec: dict, version: str, X, y, retrained: bool,
                         bad: bool = False) -> None:
        import mlflow.sklearn

        from .. import tracking
        from ..cicd import gates
        from ..monitoring import drift
        from ..rollout.canary import ServerPool, run_canary
        from ..rollout.decision import Thresholds

        p = self.plan
        # the offline gate scores both on fresh rows of today's world (not the training rows)
        X_test, y_test = drift.make_window("covariate", self.day, p.rows, seed=self.seed + 7,
                                           onset=p.drift_day)
        with tracking.using():
            cand = mlflow.sklearn.load_model(f"models:/{self.name}/{version}")
            champ = mlflow.sklearn.load_model(f"models:/{self.name}/{self.version}")
        g = gates.model_gate(cand, X_test, y_test, champion=champ)
        self.gates.append({"day": self.day, "stage": "model", "version": version,
                           "champion": self.version, "passed": g.passed, "lines": g.lines()})
        self.event("gate", f"v{version} vs production v{self.version}: "
                           f"{'passed' if g.passed else 'failed'} ("
                           + "; ".join(c.line() for c in g.checks if not c.passed or
                                       c.name in ("no regression", "latency")) + ")")
        if not g.passed:
            return
        steps = list(p.canary_steps)
        stable_uri = f"models:/{self.name}/{self.version}"
        canary_uri = f"models:/{self.name}/{version}"
        started = time.time()
        # the analysis reads the two servers' /metrics directly (lesson 09's scrape mode):
        # Prometheus's file discovery would find the new canary only after up to 5 s, one
        # wasted analysis per canary; Prometheus still watches production all week
        pool = ServerPool(prefix="capstone-canary")
        # the stable track is production replica 0, lent to the canary (one model server
        # fewer: ~300 MB on Binder); the pool starts only the canary's server
        lent = pool.key(stable_uri)
        pool.handles[lent] = self._replica_handle(0)
        try:
            report = run_canary(stable_uri, canary_uri, steps, p.canary_interval_s,
                                thresholds=Thresholds(min_requests=p.min_requests),
                                metrics="scrape", users=p.canary_users,
                                profile=p.profile, out=self.out / f"canary-day{self.day}",
                                promote=False, verbose=False, servers=pool)
        finally:
            pool.handles.pop(lent, None)  # production's, not the pool's to stop
            pool.close()
        # the report's points are analyses (the end of each interval): a weight was in force
        # from the analysis before it (the first from one interval earlier)
        t_zero = time.time() - report.get("seconds", 0)
        prev = None
        for pt in report.get("timeline", []):
            since = prev if prev is not None else pt["t"] - p.canary_interval_s
            self.canary_points.append((t_zero + max(0.0, since), int(pt["weight"])))
            prev = pt["t"]
        self.canary_points.append((time.time(), 0))
        self.canary_points.sort()
        max_w = max([s["weight"] for s in report["steps"]] or [0])
        for s in report["steps"]:
            self.event("canary_step", f"v{version} at {s['weight']}%: {s['verdict']} "
                                      f"({s['reason']})")
        self.canaries.append({"day": self.day, "version": version, "bad": bad,
                              "outcome": report["outcome"], "max_weight": max_w,
                              "steps": [{k: s[k] for k in ("weight", "verdict", "reason")}
                                        for s in report["steps"]],
                              "rollback_s": report.get("rollback_s"),
                              "seconds": round(time.time() - started, 1)})
        if bad:
            self.summary["bad_model_max_weight"] = max(self.summary["bad_model_max_weight"] or 0,
                                                       max_w)
        if report["outcome"] == "promoted":
            old = self.version
            tracking.promote(self.name, version, reason=f"capstone day {self.day}: canary "
                                                        f"{','.join(map(str, steps))} passed")
            self._roll(version)
            rec["promoted"] = version
            self.event("promoted", f"v{version} replaced v{old} in production (replicas "
                                   f"restarted one at a time)")
        else:
            rec["rolled_back"] = version
            if tracking.resolve(self.name) == version:  # the pipeline's gate had moved it
                tracking.promote(self.name, self.version, reason="canary rolled back")
            self.event("rolled_back", f"v{version}: {report['outcome']} at {max_w}% "
                                      f"(production stays on v{self.version})")

    def _skew_check(self, version: str, model, X) -> None:
        """Training/serving skew, tested: the same rows through production's nginx and
        through the registered model in this process must give the same probabilities."""
        import urllib.request

        import numpy as np

        rows = X.head(50)
        body = json.dumps({"rows": rows.to_dict("records")}).encode()
        req = urllib.request.Request(self.dep.url + "/predict", data=body,
                                     headers={"Content-Type": "application/json"})
        entry = {"day": self.day, "version": str(version), "rows": len(rows)}
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                out = json.loads(resp.read())
            served = np.asarray(out["probabilities"], dtype=float)[:, -1]
            names = list(getattr(model, "feature_names_in_", rows.columns))
            offline = model.predict_proba(rows[names])[:, -1]
            diff = float(np.max(np.abs(served - offline)))
            entry |= {"served_version": str(out.get("model_version")),
                      "max_abs_diff": diff,
                      "passed": diff <= 1e-6 and str(out.get("model_version")) == str(version)}
        except Exception as err:  # noqa: BLE001 - a failed check is evidence, not a crash
            entry |= {"passed": False, "error": str(err)}
        self.skew.append(entry)

    def _replica_handle(self, index: int):
        """A :class:`~course_helpers.serving.server.ServerHandle` for production replica
        ``index`` (no prediction log of its own)."""
        from ..serving.server import ServerHandle

        r = self.dep.replicas[index]
        return ServerHandle(name=r.name, url=r.url, port=int(r.url.rsplit(":", 1)[1]),
                            pid=r.pid or 0, workers=self.dep.spec.workers_per_replica,
                            db=None, workspace=config.workspace())

    def _roll(self, version: str) -> None:
        """Rolling update: each replica is stopped gracefully and the restart policy starts it
        again on the same port with the new model (nginx sends traffic to the other)."""
        import signal

        from ..deploy.nginx import FAIL_TIMEOUT_S
        from ..supervisor import Supervisor

        self.dep.spec.model_uri = f"models:/{self.name}/{version}"
        for i, r in enumerate(list(self.dep.replicas)):
            before = self.backend.restarts.get(r.name, 0)
            rec = Supervisor().get(r.name)
            if rec is not None and rec.is_alive():
                # SIGTERM (gunicorn's graceful stop) to the replica's group; the record stays,
                # so the watchdog reaps it and restarts it (Supervisor.stop would race it)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(rec.pid), signal.SIGTERM)
            deadline = time.time() + 120
            while time.time() < deadline:
                st = self.backend.status(self.dep)[i]
                if st["restarts"] > before and st["ready"]:
                    break
                time.sleep(0.25)
            else:
                raise DayFailed(f"replica {r.name} did not come back with v{version}", fatal=True)
            if i < len(self.dep.replicas) - 1:
                # nginx skips a replica that failed for FAIL_TIMEOUT_S: wait until it takes
                # the restarted one back before stopping the next, or both look down at once
                time.sleep(FAIL_TIMEOUT_S + 1)
        self.version = version
        # the new model was trained on today's world: monitor drift against it from now on
        from ..monitoring import drift

        X, y = drift.make_window("covariate", self.day, 2 * self.plan.rows,
                                 seed=self.seed + 3, onset=self.plan.drift_day)
        import mlflow.sklearn

        from .. import tracking

        with tracking.using():
            model = mlflow.sklearn.load_model(f"models:/{self.name}/{version}")
        self.monitor = drift.DriftMonitor().fit(X, model, y)
        drift.export({"alert": False, "window": self.day, "psi": {}, "ks_p": {},
                      "flagged_features": []})
        self._skew_check(version, model, X)

    # writing --------------------------------------------------------------------------
    def data(self) -> dict:
        s = dict(self.summary)
        s["wall_s"] = round(time.time() - self.t0, 1)
        s["peak_mb"] = round(self.peak_mb, 1)
        s["peak_rss_mb"] = round(self.peak_rss_mb, 1)
        p95_ok = all(v <= self.plan.slo_p95_ms for v in self.p95s)
        left = self.days[-1]["slo_budget_left"] if self.days else None
        s["slo_met"] = bool(left is not None and left > 0 and p95_ok
                            and all(d.get("status") == "ok" for d in self.days))
        return {"profile": self.plan.profile, "seed": self.seed, "days": self.days,
                "summary": s, "events": self.events,
                "plan": dataclasses.asdict(self.plan),
                "slo": {"availability": self.plan.slo_availability,
                        "p95_ms": self.plan.slo_p95_ms},
                "gates": self.gates, "canaries": self.canaries, "lineage": self.trace,
                "skew": self.skew, "features": self.features,
                # restarts by the restart policy, per replica: the kill, each rolling update,
                # and nothing else (more means replicas crash on their own)
                "restarts": dict(getattr(self.backend, "restarts", {}) or {})}

    def write(self) -> dict:
        import pandas as pd

        data = self.data()
        tmp = self.out / ".capstone.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, self.out / "capstone.json")
        with self._lock:
            rows = [{c: s.get(c) for c in TIMELINE_COLUMNS} for s in self.samples]
            mem = list(self.memory)
        pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS)).to_csv(self.out / "timeline.csv",
                                                                   index=False)
        pd.DataFrame(mem, columns=list(MEMORY_COLUMNS)).to_csv(self.out / "memory.csv",
                                                                index=False)
        return data


def _already_trained(done: dict) -> dict:
    """A retrain that found no new batch because this exact batch was trained on before
    (lesson 03's trigger ledger is idempotent: a second week with the same seed delivers
    the same data): the version that run registered, from the ledger; else ``done``."""
    from ..monitoring import alerting
    from ..pipeline import triggers

    recent = alerting.recent_data_path()
    if "no batch was pending" not in str(done.get("error")) or not recent.exists():
        return done
    entry = triggers.ledger(recent.parent / "inbox").get(triggers.digest(recent))
    if entry and entry.get("status") == "processed" and entry.get("version"):
        return {**done, "ok": True, "version": entry["version"],
                "alias": entry.get("alias"), "reused": True}
    return done


def _reap_retrains(after: float, timeout_s: float = 30.0) -> list[str]:
    """Wait until the retrain processes the receiver started since ``after`` have exited
    (their record is written before the interpreter flushes Prefect's events and exits:
    ~350 MB still held), stopping any still alive after ``timeout_s``; returns their names.
    The next step starts a canary server: the two must not overlap."""
    from ..monitoring import alerting
    from ..supervisor import Supervisor

    names = [r["process"] for r in alerting.received("retrain")
             if r.get("event") == "started" and r.get("at", 0) >= after and r.get("process")]
    sup = Supervisor()
    deadline = time.time() + timeout_s
    for name in names:
        while time.time() < deadline:
            rec = sup.get(name)
            if rec is None or not rec.is_alive():
                break
            time.sleep(0.2)
        sup.stop(name)
    return names


def _healthy(week: Week) -> bool:
    """Is production still serving (every replica alive)?"""
    try:
        return all(s["alive"] for s in week.backend.status(week.dep))
    except Exception:  # noqa: BLE001
        return False


def run_week(profile: str = "classroom", days: int | None = None, out: str | Path | None = None,
             seed: int = 0, backend: str = "local", verbose: bool = True) -> WeekReport:
    """Play a compressed week in production (see the module docstring) and write the run
    directory (default ``<workspace>/capstone/<profile>/``); returns a :class:`WeekReport`.

    A day that fails is recorded (``status``) and the week goes on when production is still
    serving; otherwise it stops with one sentence naming the day. Ctrl-C (or SIGTERM turned
    into KeyboardInterrupt by the CLI) stops everything the run started, then re-raises."""
    plan = make_plan(profile, days)
    if backend not in ("local", "auto", "docker"):
        raise CourseError(f"unknown backend {backend!r}: choose local, docker or auto")
    out = Path(out) if out else config.workspace_dir("capstone", plan.profile)
    if out.resolve() == (config.workspace() / "run").resolve():
        raise CourseError(f"{out} is where the supervisor keeps its records (it deletes JSON "
                          "files it cannot read there): choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("capstone.json", "timeline.csv", "memory.csv", "timeline.png", "report.md"):
        (out / stale).unlink(missing_ok=True)
    week = Week(plan, out, seed=seed, backend=backend, verbose=verbose)
    week.say(f"capstone: {plan.days} days, profile {plan.profile}; drift on day "
             f"{plan.drift_day}, a bad model on day {plan.bad_model_day}, a replica killed on "
             f"day {plan.kill_day}; writing to {out}")
    stopped: str | None = None
    try:
        week.setup()
        for day in range(1, plan.days + 1):
            week.say(f"day {day}")
            try:
                rec = week.run_day(day)
            except (DayFailed, CourseError, RuntimeError, OSError, ValueError) as err:
                msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                week.event("day_failed", msg)
                partial = getattr(week, "partial", None) or {}
                rec = {k: None for k in DAY_KEYS} | {"alerts": [], "registered": []} | (
                    partial if partial.get("day") == day else {}) | {
                    "day": day, "status": f"failed: {msg}"}
                fatal = getattr(err, "fatal", False) or not _healthy(week)
                week.days.append(rec)
                week.write()
                if fatal:
                    stopped = f"day {day} failed and production is not serving, so the week " \
                              f"stopped: {msg}"
                    break
                continue
            week.days.append(rec)
            week.write()
    except KeyboardInterrupt:
        week.summary["interrupted"] = True
        raise
    finally:
        week.teardown()
        data = week.write()
        if not week.summary.get("interrupted"):
            with contextlib.suppress(Exception):
                from .report import write_outputs

                write_outputs(out, data)
    if stopped:
        raise CourseError(stopped)
    return WeekReport(out, json.loads((out / "capstone.json").read_text()))
