"""Shadow deployment: nginx ``mirror`` sends a copy of live traffic to the challenger, whose
answers the client never sees; both servers log their predictions, and
:func:`compare_logs` joins the logs on the request id nginx gives both copies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from pathlib import Path

from .. import config
from ..errors import CourseError

PREFIX = "shadow"
#: seconds after each mirror switch (nginx reload) whose requests count for no condition
#: (at least until the reload has returned)
SETTLE_S = 0.3


def read_log(db: str | Path):
    """A server's prediction log (SQLite) as a DataFrame."""
    import pandas as pd

    path = Path(str(db).removeprefix("sqlite:///"))
    if not path.exists():
        raise CourseError(f"no prediction log at {path}: was the server started with a db?")
    with sqlite3.connect(path, timeout=5) as con:
        return pd.read_sql_query("SELECT request_id, row_index, ts, model_version, variant, "
                                 "prediction, probability, latency_ms FROM predictions", con)


def compare_logs(primary, shadow) -> dict:
    """Agreement and latency of a shadow against the primary, from their prediction logs
    (paths or DataFrames), matched on ``(request_id, row_index)``.

    Returns ``matched`` (predictions both answered), ``primary_only`` (the shadow missed
    them: it was slow, down or erroring), ``agreement`` (share of matched predictions with
    the same class), ``max_probability_diff``, and the server-side latency (ms) of each,
    with ``latency_diff_p50_ms``/``latency_diff_p95_ms`` (shadow minus primary, per pair),
    and ``lag_p50_ms``/``lag_p95_ms``/``lag_max_ms``: how much later the shadow finished each
    request than the primary (nginx keeps a client's keep-alive connection until the mirror
    subrequest ends, so a lag longer than the client's pause delays its next request).
    """
    import numpy as np

    a = primary if hasattr(primary, "columns") else read_log(primary)
    b = shadow if hasattr(shadow, "columns") else read_log(shadow)
    key = ["request_id", "row_index"]
    m = a.merge(b, on=key, suffixes=("_primary", "_shadow"))
    out = {"primary_rows": len(a), "shadow_rows": len(b), "matched": len(m),
           "primary_only": int(len(a) - len(m)), "agreement": float("nan"),
           "max_probability_diff": float("nan")}
    if len(m):
        diff = m["latency_ms_shadow"] - m["latency_ms_primary"]
        lag = (m["ts_shadow"] - m["ts_primary"]) * 1000
        out.update(
            agreement=float((m["prediction_primary"] == m["prediction_shadow"]).mean()),
            max_probability_diff=float(np.nanmax(np.abs(m["probability_primary"]
                                                         - m["probability_shadow"]))),
            primary_p95_ms=float(m["latency_ms_primary"].quantile(0.95)),
            shadow_p95_ms=float(m["latency_ms_shadow"].quantile(0.95)),
            latency_diff_p50_ms=float(diff.quantile(0.5)),
            latency_diff_p95_ms=float(diff.quantile(0.95)),
            lag_p50_ms=float(lag.quantile(0.5)), lag_p95_ms=float(lag.quantile(0.95)),
            lag_max_ms=float(lag.max()))
    return out


@dataclasses.dataclass
class Isolation:
    """What :func:`isolate_shadow` changed: the shadow's niceness and the CPUs each server
    may use (``None``: unchanged). :meth:`restore` puts the processes back."""

    niceness: int
    primary_cpus: list[int] | None
    shadow_cpus: list[int] | None
    idle: bool = False
    autogroup: bool = False
    _saved: list = dataclasses.field(default_factory=list, repr=False)
    _policies: list = dataclasses.field(default_factory=list, repr=False)
    _groups: list = dataclasses.field(default_factory=list, repr=False)

    def describe(self) -> dict:
        return {"shadow_niceness": self.niceness, "shadow_sched_idle": self.idle,
                "shadow_autogroup_niced": self.autogroup,
                "primary_cpus": self.primary_cpus, "shadow_cpus": self.shadow_cpus}

    def restore(self) -> None:
        import psutil

        for pid, nice in self._groups:
            try:
                Path(f"/proc/{pid}/autogroup").write_text(str(nice))
            except OSError:
                pass
        self._groups.clear()

        for pid, policy in self._policies:
            try:
                os.sched_setscheduler(pid, policy, os.sched_param(0))
            except OSError:
                pass
        self._policies.clear()

        for proc, nice, cpus in self._saved:
            try:
                proc.cpu_affinity(cpus)
                proc.nice(nice)  # lowering niceness back needs root (CAP_SYS_NICE)
            except (psutil.Error, OSError):
                pass
        self._saved.clear()


def _tree(pid: int) -> list:
    import psutil

    try:
        p = psutil.Process(pid)
        return [p] + p.children(recursive=True)
    except psutil.Error:
        return []


def _autogroup(pid: int | str) -> tuple[str, int] | None:
    """A process's autogroup (``/proc/PID/autogroup``: name, nice), None without one."""
    try:
        name, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
        return name, int(nice)
    except (OSError, ValueError):
        return None


def isolate_shadow(primary_pid: int, shadow_pid: int, niceness: int = 10,
                   pin: bool = True, pin_primary: bool = True,
                   idle: bool = False, autogroup: bool = True) -> Isolation:
    """Keep a shadow from taking CPU from the live server on the same machine: the shadow's
    processes (``shadow_pid`` and its children: gunicorn's master and workers) get
    ``niceness`` (the scheduler serves the live server first), and with ``pin`` and at least
    two CPUs the live server gets one CPU and the shadow another, so a mirrored request
    never waits for the shadow's prediction to leave the CPU. On a platform the shadow runs
    on other nodes; this is the one-machine equivalent. Undo with ``.restore()``.

    On Linux with ``kernel.sched_autogroup_enabled``, a niceness only ranks processes of
    the same session: servers started in their own sessions share the CPU as equals
    whatever their niceness (sched(7), "The autogroup feature"). ``autogroup`` (default)
    also gives the shadow's own session group ``niceness`` (``/proc/PID/autogroup``), if it has its
    own (not the caller's or the live server's); ``idle`` puts the shadow under
    ``SCHED_IDLE`` (any other process that wakes up preempts it at once)."""
    import psutil

    cpus = sorted(os.sched_getaffinity(0))
    iso = Isolation(niceness, None, None)
    prim, shad = _tree(primary_pid), _tree(shadow_pid)
    for proc in prim + shad:
        try:
            iso._saved.append((proc, proc.nice(), proc.cpu_affinity()))
        except psutil.Error:
            pass
    for proc in shad:
        try:
            proc.nice(max(proc.nice(), niceness))
        except psutil.Error:
            pass
    group = _autogroup(shadow_pid) if autogroup else None
    if group and group[0] not in {(_autogroup(p) or ("",))[0] for p in ("self", primary_pid)}:
        try:
            Path(f"/proc/{shadow_pid}/autogroup").write_text(str(max(group[1], niceness)))
            iso._groups.append((shadow_pid, group[1]))
            iso.autogroup = True
        except OSError:
            pass
    if idle and hasattr(os, "SCHED_IDLE"):
        iso.idle = True
        for proc in shad:
            try:
                iso._policies.append((proc.pid, os.sched_getscheduler(proc.pid)))
                os.sched_setscheduler(proc.pid, os.SCHED_IDLE, os.sched_param(0))
            except OSError:
                pass
    if pin and len(cpus) >= 2:
        iso.shadow_cpus = [cpus[-1]]
        if pin_primary:
            iso.primary_cpus = [cpus[0]]
        for procs, mine in ((prim, iso.primary_cpus), (shad, iso.shadow_cpus)):
            for proc in procs if mine else []:
                try:
                    proc.cpu_affinity(mine)
                except psutil.Error:
                    pass
    return iso


RAW_LOCUSTFILE = Path(__file__).with_name("locust_raw.py")
#: :func:`run_shadow`'s default isolation: the shadow niced with its session group and on
#: the last CPU, the live server free to use every CPU. Timed at the load balancer (the
#: ``lb`` figures), a live server pinned to one CPU beside a shadow niced only within its
#: own session answered clearly slower with the mirror on; with the shadow's group niced
#: and the live server not pinned, the difference stayed near the A/A noise.
ISOLATION = {"autogroup": True, "pin_primary": False}


def read_access_log(path: str | Path):
    """The load balancer's timing log (:data:`.nginx.TIMING_LOG_FORMAT`) as an array of rows
    ``[start_epoch_s, request_ms, upstream_ms, status]``: the start is the line's end time
    minus nginx's request time; the upstream time adds up nginx's tries (NaN without one).
    All times have nginx's resolution, 1 ms."""
    import numpy as np

    rows = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()  # the upstream times, "0.003, 0.008 : 0.002", span fields
        if len(parts) < 5:
            continue
        end, took = float(parts[0]), float(parts[1])
        ups = [float(v) for v in " ".join(parts[2:-2]).replace(":", ",").split(",")
               if v.strip() not in ("", "-")]
        rows.append([end - took, took * 1000, sum(ups) * 1000 if ups else np.nan, int(parts[-2])])
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def assign_phases(starts, phases: list[dict]) -> dict:
    """For each condition in ``phases`` (dicts with ``condition``, ``from`` and ``to``, epoch
    seconds), a boolean mask of the ``starts`` (epoch seconds) that fell in one of its
    phases, ``from`` included, ``to`` excluded; a start in no phase is in no mask."""
    import numpy as np

    starts = np.asarray(starts, dtype=float)
    masks: dict = {}
    for ph in phases:
        mask = masks.setdefault(ph["condition"], np.zeros(len(starts), dtype=bool))
        mask |= (starts >= ph["from"]) & (starts < ph["to"])
    return masks


def _quantiles(values) -> dict:
    import numpy as np

    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    out = {f"p{q}_ms": round(float(np.percentile(values, q)), 2) if len(values)
           else float("nan") for q in (50, 95, 99)}
    out["mean_ms"] = round(float(values.mean()), 3) if len(values) else float("nan")
    return out


def _generator_procs() -> list:
    """The Locust process(es) this process started with :data:`RAW_LOCUSTFILE`."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if str(RAW_LOCUSTFILE) in proc.cmdline():
                found.append(proc)
        except psutil.Error:
            pass
    return found


def run_shadow(stable_uri: str, shadow_uri: str, profile: str | None = None,
               out: str | Path | None = None, rate_per_user: float = 10.0,
               duration_s: int | None = None, servers=None, phase_s: float | None = None,
               isolate: bool | dict = True, compare_unisolated: bool = False,
               variants: dict[str, dict | str | None] | None = None,
               aa: bool = True, pin_generator: bool = False) -> dict:
    """Serve ``stable_uri`` behind nginx and load it with Locust with and without a mirror
    to ``shadow_uri``; compare the client p95 (``mirror_p95_ratio`` = with / without) and
    the two prediction logs. Writes ``shadow.json``; stops everything it started.

    The same requests are timed at the load balancer too (nginx's access log,
    ``lb-access.log`` in ``out``): ``lb_mirror_p95_ratio`` (and ``lb_p95_ratio_aa``,
    ``lb_p95_ratio_<variant>``) compare nginx's request time, which leaves out the load
    generator's own scheduling and the loopback; ``lb_upstream_mirror_p95_ratio`` compares
    the live server's answer time as nginx saw it. ``lb`` has each condition's figures (1 ms
    resolution: compare the means too).

    The comparison is fair to a busy machine: one Locust run (the profile's users, each
    ``rate_per_user`` req/s) while nginx switches the mirror on and off every ``phase_s``
    seconds in ABBA order, ``duration_s`` seconds per condition in all (default the
    profile's); each request counts for the condition it started in (the first
    ``SETTLE_S`` after a switch count for none), and each p95 is over every such request.
    Others' load on the machine then falls on both conditions alike. ``aa`` adds a second
    mirror-off condition: its ratio to the first (``p95_ratio_aa``, an A/A comparison) is the
    noise floor of ``mirror_p95_ratio`` on this machine at this moment.
    The mirror goes through nginx's relay (:mod:`course_helpers.deploy.nginx`), so no
    client waits for the shadow's answer.
    ``isolate``: while the mirror is on, isolate the shadow (:func:`isolate_shadow` with
    :data:`ISOLATION`; a dict gives its keyword arguments instead); ``compare_unisolated``
    adds phases of the mirror without isolation (``mirror_p95_ratio_unisolated``); ``variants`` adds more mirror conditions,
    ``{name: isolate_shadow kwargs, None (no isolation) or "off" (no mirror: a second
    baseline, whose ratio is the noise floor)}``, each with its ``p95_ratio_<name>``; the
    key ``relay`` False in a dict mirrors without nginx's relay (the client's keep-alive
    connection then waits for the shadow: see :mod:`course_helpers.deploy.nginx`). ``servers``: a
    :class:`.canary.ServerPool` to take the two model servers from (kept running, their
    priority and CPUs restored). ``pin_generator``: with at least two CPUs, keep Locust on
    the first CPU (the live server's when :func:`isolate_shadow` pins it) for the whole
    run, instead of letting it float over all of them.
    """
    import concurrent.futures

    import numpy as np

    from ..deploy.nginx import LoadBalancer, Server, Upstream
    from ..loadtest import run_locust
    from .canary import stop_servers

    prof = config.get_profile(profile)
    duration_s = duration_s or prof.duration_s
    # short phases: many switches spread the neighbours' bursts over both conditions
    phase_s = phase_s or (2.0 if prof.name == "smoke" else 1.5)
    iso_kw: dict[str, dict | str | None] = {"off": "off", "mirror": (
        (isolate if isinstance(isolate, dict) else dict(ISOLATION)) if isolate else None)}
    if aa:
        iso_kw["off_aa"] = "off"
    if compare_unisolated:
        iso_kw["mirror_unisolated"] = None
    iso_kw |= variants or {}
    conditions = list(iso_kw)
    n_phases = max(2, round(duration_s / phase_s))
    order = [c for i in range(n_phases)
             for c in (conditions if i % 2 == 0 else conditions[::-1])]  # ABBA: drift cancels
    out = Path(out) if out else config.workspace_dir("rollout", "shadow")
    out.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    lb = LoadBalancer(f"{PREFIX}-lb")
    lb.access_log = out / "lb-access.log"
    lb.access_log.unlink(missing_ok=True)
    generator_cpus = None
    iso = iso_done = None
    phases: list[dict] = []
    try:
        from .canary import start_tracks

        uris = {"stable": stable_uri, "shadow": shadow_uri}
        tracks = (servers.tracks(uris) if servers is not None
                  else start_tracks(uris, PREFIX, started))
        handles = {t: tr.handle for t, tr in tracks.items()}
        since = time.time()
        ups = [Upstream("primary", [Server(handles["stable"].url.removeprefix("http://"))]),
               Upstream("shadow", [Server(handles["shadow"].url.removeprefix("http://"))])]
        lb.start(ups, default="primary")
        started.append(lb.name)
        started_file = out / f"shadow-{os.getpid()}.started"
        started_file.unlink(missing_ok=True)
        total_s = len(order) * phase_s
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(run_locust, lb.url, users=prof.users, spawn_rate=prof.users,
                              duration_s=int(total_s + SETTLE_S + 6),
                              rate_per_user=rate_per_user, progress=False, out_dir=out,
                              label="shadow", started_file=started_file,
                              locustfile=RAW_LOCUSTFILE)
            while not started_file.exists() and not fut.done():
                time.sleep(0.1)
            cpus = sorted(os.sched_getaffinity(0))
            if pin_generator and len(cpus) >= 2:
                generator_cpus = cpus[:1]
                for proc in _generator_procs():
                    proc.cpu_affinity(generator_cpus)
            # phases on a fixed schedule from the first response, so that they all fit in
            # Locust's run whatever each reload costs (the reload eats into its own phase)
            t0 = time.time() + SETTLE_S
            for k, cond in enumerate(order):
                time.sleep(max(t0 + k * phase_s - time.time(), 0))
                kw = dict(iso_kw[cond]) if isinstance(iso_kw[cond], dict) else None
                relay = kw.pop("relay", True) if kw is not None else True
                if kw is not None:
                    iso = isolate_shadow(handles["stable"].pid, handles["shadow"].pid, **kw)
                switched = time.time()
                lb.update(ups, default="primary", mirror_relay=relay,
                          mirror=None if iso_kw[cond] == "off" else "shadow")
                phases.append({"condition": cond, "from": max(time.time(), switched + SETTLE_S),
                               "to": t0 + (k + 1) * phase_s,
                               "loadavg_1m": round(os.getloadavg()[0], 2)})
                time.sleep(max(phases[-1]["to"] - time.time(), 0))
                if iso is not None:
                    iso.restore()
                    if cond == "mirror":
                        iso_done = iso
                    iso = None
            lb.update(ups, default="primary")
            res = fut.result()
        raw = np.asarray(json.loads(Path(res.timeline_file + ".raw.json").read_text()),
                         dtype=float).reshape(-1, 3)
        time.sleep(1)  # the last mirrored requests land in the shadow's log
        lb_log = read_access_log(lb.access_log) if lb.access_log.exists() else np.empty((0, 4))
        primary = read_log(handles["stable"].db)
        mirrored = read_log(handles["shadow"].db)  # the log outlives runs: this run's rows only
        mirrored = mirrored[mirrored["ts"] >= since]
        ts = primary["ts"].to_numpy()
        in_cond = {c: np.zeros(len(primary), dtype=bool) for c in conditions}
        for ph in phases:
            in_cond[ph["condition"]] |= (ts >= ph["from"]) & (ts <= ph["to"])
        mirrored_conds = [c for c in conditions if iso_kw[c] != "off"]
        comparison = compare_logs(primary[np.logical_or.reduce(
            [in_cond[c] for c in mirrored_conds])], mirrored)
        lags = {c: compare_logs(primary[in_cond[c]], mirrored) for c in mirrored_conds}
    finally:
        if iso is not None:
            iso.restore()
        if lb.name in started:
            lb.stop()
        stop_servers([n for n in started if n != lb.name])
    pooled, lb_pooled = {}, {}
    client_masks = assign_phases(raw[:, 0], phases)
    lb_masks = assign_phases(lb_log[:, 0], phases)
    for cond in conditions:
        mask = client_masks.get(cond, np.zeros(len(raw), dtype=bool))
        lat, ok = raw[mask, 1], raw[mask, 2].astype(bool)
        pooled[cond] = {"requests": int(mask.sum()), "failures": int((~ok).sum()),
                        "seconds": round(sum(ph["to"] - ph["from"] for ph in phases
                                             if ph["condition"] == cond), 1),
                        **_quantiles(lat)}
        sel = lb_log[lb_masks.get(cond, np.zeros(len(lb_log), dtype=bool))]
        lb_pooled[cond] = {"requests": len(sel), "errors": int((sel[:, 3] >= 500).sum()),
                           **_quantiles(sel[:, 1]),
                           **{f"upstream_{k}": v for k, v in _quantiles(sel[:, 2]).items()}}
        if cond in lags:
            pooled[cond] |= {k: round(lags[cond][k], 2) for k in ("lag_p50_ms", "lag_p95_ms",
                                                                  "lag_max_ms")
                             if k in lags[cond]}
    for ph in phases:  # each phase's own p95 in the report: where the neighbours' bursts fell
        sel = raw[(raw[:, 0] >= ph["from"]) & (raw[:, 0] < ph["to"]), 1]
        ph["p95_ms"] = round(float(np.percentile(sel, 95)), 2) if len(sel) else None
    off = pooled["off"]["p95_ms"]

    def ratio(c: str, figures: dict | None = None, key: str = "p95_ms") -> float:
        figures = figures or pooled
        base = figures["off"][key]
        return round(figures[c][key] / base, 3) if base else float("nan")

    loads = [ph["loadavg_1m"] for ph in phases]
    report = {"profile": prof.name, "stable": stable_uri, "shadow": shadow_uri,
              "phases": len(phases), "phase_s": phase_s, "users": prof.users,
              "rate_per_user": rate_per_user, "settle_s": SETTLE_S,
              "isolation": iso_done.describe() if iso_done is not None else None,
              "p95_without_mirror_ms": off, "p95_with_mirror_ms": pooled["mirror"]["p95_ms"],
              "mirror_p95_ratio": ratio("mirror"),
              "requests_without": pooled["off"]["requests"],
              "requests_with": pooled["mirror"]["requests"],
              "failures_with": pooled["mirror"]["failures"], "pooled": pooled,
              "loadavg_1m": [min(loads), max(loads)] if loads else None,
              "generator_cpu": res.generator_cpu, "generator_cpus": generator_cpus,
              "comparison": comparison,
              "lb_mirror_p95_ratio": ratio("mirror", lb_pooled),
              "lb_upstream_mirror_p95_ratio": ratio("mirror", lb_pooled, "upstream_p95_ms"),
              "lb": lb_pooled}
    for name in variants or {}:
        report[f"p95_ratio_{name}"] = ratio(name)
        report[f"lb_p95_ratio_{name}"] = ratio(name, lb_pooled)
    if aa:
        report["p95_ratio_aa"] = ratio("off_aa")
        report["lb_p95_ratio_aa"] = ratio("off_aa", lb_pooled)
        report["lb_upstream_p95_ratio_aa"] = ratio("off_aa", lb_pooled, "upstream_p95_ms")
    report["phase_log"] = phases
    if compare_unisolated:
        report["p95_with_mirror_unisolated_ms"] = pooled["mirror_unisolated"]["p95_ms"]
        report["mirror_p95_ratio_unisolated"] = ratio("mirror_unisolated")
    (out / "shadow.json").write_text(json.dumps(report, indent=2))
    report["out"] = str(out)
    return report
