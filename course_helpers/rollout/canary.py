"""The canary controller: champion and challenger behind nginx, weight raised step by step
while the challenger's own metrics stay healthy; rolled back or promoted automatically.

    report = run_canary("models:/rollout-demo@champion", "models:/rollout-demo@challenger",
                        steps=[5, 25, 50, 100], interval_s=5)

Per step: nginx is reloaded with weights ``100 - w`` (stable) and ``w`` (canary); after
``interval_s`` the analysis (:func:`.decision.decide_step`) reads both tracks' metrics over
the window since the weight changed. ``wait`` (too few canary requests) extends the window;
``max_waits`` waits in a row count as one failed check. A failed analysis at the
``max_failed_checks``-th failure sets the canary's weight to 0 and stops (``rolled_back``);
a pass at 100 % promotes: ``@champion`` moves to the challenger's version and the old one
keeps ``@previous`` (:func:`course_helpers.tracking.promote`). Ctrl-C sends all traffic back
to the stable version and stops everything. ``rollout.json`` and ``rollout.png`` record it.
``backend="docker"`` runs both versions as lesson 02's containers (:mod:`.containers`) behind
the same nginx weights, scraped by the same Prometheus.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from .. import config
from ..errors import CourseError
from .decision import Thresholds, TrackMetrics, decide_step, parse_steps

PREFIX = "rollout"


@dataclasses.dataclass
class Track:
    """One deployed version: ``stable`` or ``canary``."""

    track: str
    model_uri: str
    handle: object  # serving.ServerHandle

    @property
    def address(self) -> str:
        return self.handle.url.removeprefix("http://")


def _resolve(uri: str, what: str) -> tuple[str | None, str | None]:
    """Check ``uri`` resolves (one sentence otherwise); returns ``(name, version)`` for a
    registry URI, ``(None, None)`` for a path or run URI."""
    from ..serving.loading import ServerStartError, check_model, parse_alias

    try:
        check_model(uri)
    except ServerStartError as err:
        raise CourseError(f"the {what} model does not resolve, nothing was deployed: {err}") from None
    alias = parse_alias(uri)
    if alias:
        from .. import tracking

        return alias[0], tracking.resolve(*alias)
    if uri.startswith("models:/"):
        name, _, version = uri[len("models:/"):].partition("/")
        return name, version or None
    return None, None


def prometheus_source(job: str = PREFIX):
    """Lesson 08's Prometheus as a :class:`.metrics.PrometheusSource`, or one sentence saying
    to start it."""
    from .metrics import PrometheusSource

    try:
        from .. import monitoring
    except ImportError:
        raise CourseError("Prometheus support (lesson 08's course_helpers.monitoring) is not "
                          "installed here: use --metrics scrape") from None
    prom = monitoring.running()
    if prom is None:
        raise CourseError("Prometheus is not running: start it with `mlops-course monitor up` "
                          "(or use --metrics scrape to read the servers directly)")
    return PrometheusSource(monitoring.query, job=job, scrape_interval_s=prom.interval_s)


def _upstreams(stable: Track, canary: Track, weight: int):
    from ..deploy.nginx import Server, Upstream

    servers = [Server(stable.address, weight=100 - weight), Server(canary.address, weight=weight)]
    if weight >= 100:
        servers = [Server(stable.address, weight=0), Server(canary.address, weight=100)]
    return [Upstream(PREFIX, servers)]


def _first_request_ts(db: str | None, since: float) -> float | None:
    """The time of the first prediction the canary logged after ``since`` (its SQLite log)."""
    import sqlite3

    if not db:
        return None
    try:
        with sqlite3.connect(db, timeout=5) as con:
            row = con.execute("SELECT MIN(ts) FROM predictions WHERE ts >= ?", (since,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None
    except sqlite3.Error:
        return None


BACKENDS = ("local", "docker")


def start_tracks(uris: dict[str, str], prefix: str, started: list[str],
                 backend: str = "local") -> dict[str, Track]:
    """Start one model server per track, side by side (each loads its model: seconds of CPU),
    no prediction cache (a cached answer would hide a slow or failing model). ``backend``
    ``local``: a supervised process with a prediction log each; ``docker``: a container of
    lesson 02's Docker backend (:mod:`.containers`). Names go into ``started`` before they
    start, so the caller can stop them with :func:`stop_servers`."""
    import concurrent.futures

    from ..serving import serve
    from .containers import start_container

    if backend not in BACKENDS:
        raise CourseError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")

    def one(track: str, uri: str) -> Track:
        name = f"{prefix}-{track}"
        if backend == "docker":
            return Track(track, uri, start_container(name, uri))
        return Track(track, uri, serve(uri, name=name, cache="none", variant=track, workers=1))

    started.extend(f"{prefix}-{t}" for t in uris)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(uris)) as pool:
        futures = {t: pool.submit(one, t, u) for t, u in uris.items()}
        concurrent.futures.wait(futures.values())
    for f in futures.values():
        if f.exception() is not None:
            raise f.exception()
    return {t: f.result() for t, f in futures.items()}


class ServerPool:
    """Model servers kept across rollouts, one per model version: a lesson that runs a bad
    canary, a good one and a shadow on the same champion starts each version once
    (each start loads a model: seconds of CPU on a one-CPU Binder).

        with ServerPool() as pool:
            run_canary(champion, bad, servers=pool)
            run_canary(champion, good, servers=pool)   # reuses the champion's server
            run_shadow(previous, champion, servers=pool)  # reuses both

    A registry URI is keyed by the version its alias resolves to *now* (an alias that moves
    later does not change what a kept server serves). Kept servers have no prediction cache
    and a prediction log each, like :func:`start_tracks`'s; :meth:`close` stops them (the
    supervisor's cleanup does too).
    """

    def __init__(self, prefix: str = "kept", backend: str = "local") -> None:
        self.prefix, self.backend = prefix, backend
        self.handles: dict[str, object] = {}

    @staticmethod
    def key(uri: str) -> str:
        """``NAME/VERSION`` for a registry URI (alias resolved), else the URI itself."""
        name, version = _resolve(uri, "requested")
        return f"{name}/{version}" if name and version else uri

    def tracks(self, uris: dict[str, str]) -> dict[str, Track]:
        """A :class:`Track` per ``{track: uri}``, starting (side by side) only the versions
        this pool does not serve yet."""
        keys = {t: self.key(u) for t, u in uris.items()}
        missing = {}
        for t, k in keys.items():
            if k not in self.handles and k not in missing.values():
                missing[t] = k
        if missing:
            names: list[str] = []
            prefix = f"{self.prefix}-{len(self.handles)}"
            try:
                fresh = start_tracks({t: uris[t] for t in missing}, prefix, names,
                                     backend=self.backend)
            except BaseException:
                stop_servers(names)
                raise
            for t, k in missing.items():
                self.handles[k] = fresh[t].handle
                self._warm(fresh[t].handle)
        return {t: Track(t, uris[t], self.handles[keys[t]]) for t in uris}

    @staticmethod
    def _warm(handle, n: int = 20) -> None:
        """A few predictions before a new server gets traffic, one row at a time: its first
        answers are slower (lazy imports, first allocations), and a cold canary's p95 judged
        against a warm kept stable would fail the latency check for the wrong reason."""
        from ..data import request_rows

        for row in request_rows(n, seed=5):
            try:
                handle.predict(row)
            except Exception:  # noqa: BLE001 - a failing (seeded-fault) model still warms up
                pass

    def release(self, uri: str) -> bool:
        """Stop the kept server of ``uri``'s version (e.g. a rolled-back canary: nothing
        will route to it again); False if the pool had none."""
        handle = self.handles.pop(self.key(uri), None)
        if handle is not None:
            handle.stop()
        return handle is not None

    def close(self) -> None:
        """Stop every kept server."""
        import concurrent.futures

        handles = list(self.handles.values())
        self.handles.clear()
        if handles:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(handles)) as pool:
                list(pool.map(lambda h: h.stop(), handles))

    def __enter__(self) -> "ServerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stop_servers(names: list[str]) -> None:
    """Stop servers side by side (each finishes its in-flight requests: seconds), local
    processes and containers alike."""
    import concurrent.futures

    from ..supervisor import Supervisor
    from .containers import stop_containers

    done = set(stop_containers(names))
    names = [n for n in names if n not in done]
    if names:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(lambda n: Supervisor().stop(n), names))


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 5)


def run_canary(stable_uri: str, canary_uri: str, steps: list[int] | str = "5,25,50,100",
               interval_s: float = 5.0, *, max_failed_checks: int = 1, max_waits: int = 3,
               thresholds: Thresholds | None = None, metrics: str = "prometheus",
               users: int | None = None, rate_per_user: float = 10.0, load: bool = True,
               profile: str | None = None, out: str | Path | None = None,
               promote: bool = True, verbose: bool = True,
               servers: ServerPool | None = None, backend: str = "local") -> dict:
    """Run a canary rollout end to end; see the module docstring. Returns the report
    written to ``<out>/rollout.json`` (default ``<workspace>/rollout/canary``).

    ``metrics``: ``prometheus`` (lesson 08's server, which must be running) or ``scrape``
    (the servers' ``/metrics`` directly). ``load``: drive paced Locust users through nginx
    during the rollout (``users`` defaults to the profile's, each ``rate_per_user`` req/s).
    ``servers``: a :class:`ServerPool` to take the two model servers from (and leave them
    running in, for the next rollout); by default they are started and stopped here, as
    ``backend`` says: ``local`` processes or ``docker`` containers (lesson 02's backend).
    """
    from ..deploy.nginx import LoadBalancer
    from .load import BackgroundLoad
    from .metrics import ScrapeSource

    try:
        steps = parse_steps(steps)
    except ValueError as err:
        raise CourseError(str(err)) from None
    if interval_s <= 0:
        raise CourseError("--interval must be a positive number of seconds")
    if max_failed_checks < 1:
        raise CourseError("--max-failed-checks must be at least 1")
    if backend not in BACKENDS:
        raise CourseError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if metrics not in ("prometheus", "scrape"):
        raise CourseError(f"--metrics must be prometheus or scrape, not {metrics!r}")
    thresholds = thresholds or Thresholds()
    prof = config.get_profile(profile)
    say = print if verbose else (lambda *a, **k: None)
    # checks before anything is deployed
    canary_name, canary_version = _resolve(canary_uri, "canary")
    stable_name, stable_version = _resolve(stable_uri, "stable")
    source = prometheus_source() if metrics == "prometheus" else None
    out = Path(out) if out else config.workspace_dir("rollout", "canary")
    out.mkdir(parents=True, exist_ok=True)

    report: dict = {"stable": stable_uri, "canary": canary_uri,
                    "stable_version": stable_version, "canary_version": canary_version,
                    "steps_planned": steps, "interval_s": interval_s,
                    "max_failed_checks": max_failed_checks,
                    "thresholds": dataclasses.asdict(thresholds), "metrics": metrics,
                    "profile": prof.name, "backend": servers.backend if servers else backend,
                    "steps": [], "timeline": [], "outcome": None}
    started: list[str] = []
    lb = LoadBalancer(f"{PREFIX}-lb")
    traffic = None
    weight = 0
    t0 = time.time()
    try:
        deploy_started = time.time()
        uris = {"stable": stable_uri, "canary": canary_uri}
        tracks = (servers.tracks(uris) if servers is not None
                  else start_tracks(uris, PREFIX, started, backend=backend))
        stable, canary = tracks["stable"], tracks["canary"]
        say(f"stable {stable_uri} at {stable.handle.url}, canary {canary_uri} at "
            f"{canary.handle.url}")
        lb.start(_upstreams(stable, canary, 0))
        started.append(lb.name)
        report["url"] = lb.url
        report["tracks"] = {t: {"url": tr.handle.url,
                                "container": getattr(tr.handle, "container_id", None)}
                            for t, tr in tracks.items()}
        if metrics == "prometheus":
            from .. import monitoring

            for tr in (stable, canary):  # job rollout-stable / rollout-canary
                monitoring.set_targets(f"{PREFIX}-{tr.track}", [tr.address],
                                       {"track": tr.track})
        else:
            source = ScrapeSource({t: tr.handle.url for t, tr in tracks.items()})
        if load:
            traffic = BackgroundLoad(lb.url, users or prof.users, rate_per_user,
                                     max_s=int(len(steps) * interval_s * (max_waits + 2) + 120),
                                     out_dir=out).start()
        t0 = time.time()
        first_weight_at = None
        failed = 0
        outcome = None
        for i, w in enumerate(steps):
            final = i == len(steps) - 1
            lb.update(_upstreams(stable, canary, w))
            weight = w
            if first_weight_at is None:
                first_weight_at = time.time()
            say(f"weight {w}% -> canary")
            source.mark()
            waits = 0
            while True:
                time.sleep(interval_s)
                m = source.read()
                dec = decide_step(m["canary"], m.get("stable"), final=final,
                                  failed_checks=failed, max_failed_checks=max_failed_checks,
                                  thresholds=thresholds)
                if dec.verdict == "wait":
                    waits += 1
                    if waits >= max_waits:  # no evidence for too long: a failed check
                        failed += 1
                        dec.failed_checks = failed
                        dec.verdict = "rollback" if failed >= max_failed_checks else "continue"
                        dec.reason += f"; {waits} waits in a row count as a failed check"
                        waits = 0
                else:
                    failed = dec.failed_checks
                entry = {"weight": w, "t": round(time.time() - t0, 2),
                         "checks": [{k: (_num(v) if isinstance(v, float) else v)
                                     for k, v in c.items()} for c in dec.checks],
                         "verdict": dec.verdict, "reason": dec.reason,
                         "failed_checks": dec.failed_checks,
                         "canary_requests": round(m["canary"].requests, 1),
                         "stable_requests": round(m["stable"].requests, 1)}
                report["steps"].append(entry)
                report["timeline"].append(_point(entry, w, m))
                say(f"  {w}%: {dec.verdict} ({dec.reason})")
                if dec.verdict == "rollback":
                    outcome = "rolled_back"
                    break
                if dec.verdict == "promote":
                    outcome = "promoted"
                    break
                if dec.verdict == "continue" and not any(
                        not c["passed"] for c in dec.checks):
                    break  # passed: next step
                if dec.verdict == "continue":
                    source.mark()  # failed below the limit: analyse this step again
            if outcome:
                break
        if outcome == "rolled_back":
            lb.update(_upstreams(stable, canary, 0))
            weight = 0
            rolled = time.time()
            first = _first_request_ts(canary.handle.db, deploy_started) or first_weight_at
            report["rollback_s"] = round(rolled - first, 2)
            report["timeline"].append({"t": round(rolled - t0, 2), "weight": 0})
            say(f"rolled back: canary weight 0 ({report['rollback_s']} s after its first request)")
        elif outcome == "promoted":
            report["promotion_s"] = round(time.time() - t0, 2)
            if promote and canary_name and canary_version:
                from .. import tracking

                p = tracking.promote(canary_name, canary_version,
                                     reason=f"canary {','.join(map(str, steps))} passed")
                report["promotion"] = {"model": canary_name, "champion": p.version,
                                       "previous": p.previous}
                say(f"promoted: {canary_name}@champion -> version {p.version} "
                    f"(@previous -> {p.previous})")
        report["outcome"] = outcome
    except KeyboardInterrupt:
        report["outcome"] = "interrupted"
        if lb.name in started and weight > 0:
            try:
                lb.update(_upstreams(stable, canary, 0))  # traffic back to stable first
                weight = 0
                report["timeline"].append({"t": round(time.time() - t0, 2), "weight": 0})
            except Exception:
                pass
        report["weight_at_exit"] = weight
        raise
    finally:
        if traffic is not None:
            if report["outcome"] == "interrupted":
                traffic.kill()
            else:
                res = traffic.stop()
                report["load"] = {k: res.get(k) for k in ("requests", "failures", "rps",
                                                          "p50_ms", "p95_ms")}
                report["failed_requests"] = res.get("failures", 0)
                report["client_timeline"] = [{"t": round(r["t"] - t0, 2), "ok": r["ok"],
                                              "failed": r["failed"]}
                                             for r in res.get("timeline", [])]
        if lb.name in started:
            lb.stop()
        stop_servers([n for n in started if n != lb.name])
        if metrics == "prometheus" and started:
            try:
                from .. import monitoring

                for tr in ("stable", "canary"):
                    monitoring.remove_targets(f"{PREFIX}-{tr}")
            except Exception:
                pass
        report["seconds"] = round(time.time() - t0, 2)
        (out / "rollout.json").write_text(json.dumps(report, indent=2))
    try:
        from .plots import rollout_plot
        import matplotlib.pyplot as plt

        fig = rollout_plot(report)
        fig.savefig(out / "rollout.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    except Exception as err:  # the plot is a bonus: never lose the report over it
        say(f"(no plot: {err})")
    report["out"] = str(out)
    return report


def _point(entry: dict, weight: int, m: dict[str, TrackMetrics]) -> dict:
    return {"t": entry["t"], "weight": weight,
            "canary_error_ratio": _num(m["canary"].error_ratio),
            "stable_error_ratio": _num(m["stable"].error_ratio),
            "canary_p95_ms": _num(m["canary"].p95_ms), "stable_p95_ms": _num(m["stable"].p95_ms)}


def steps_table(report: dict):
    """One row per analysis of a rollout report: weight, seconds, verdict, canary requests,
    error ratio, p95 and the p95 ratio to stable (with each threshold), and the reason."""
    import pandas as pd

    rows = []
    for s in report.get("steps", []):
        row = {"weight": s["weight"], "t_s": s["t"], "verdict": s["verdict"],
               "canary_requests": s["canary_requests"]}
        for c in s["checks"]:
            if c["name"] != "requests":
                row[c["name"]] = c["value"]
                row[f"{c['name']}_max"] = c["threshold"]
        row["reason"] = s["reason"]
        rows.append(row)
    return pd.DataFrame(rows)
