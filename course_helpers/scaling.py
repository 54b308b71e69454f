"""Lesson 02: scale up or out? Deploy single-large and many-small, load them, break them.

The load round steps the users up in four equal steps (so latency can be read against
users); the fault round holds all users and kills one replica a third of the way in.

``showdown`` runs the whole experiment and returns the numbers ``mlops-course demo`` writes
to ``results.json``; the pieces (``load_round``, ``fault_round``, ``under_load``) serve the notebooks.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from . import config
from .deploy import Deployment, DeploymentSpec, get_backend
from .loadtest import LoadResult, run_locust

TOPOLOGY_KEYS = {"single-large": "single_large", "many-small": "many_small"}


@dataclasses.dataclass
class FaultResult:
    """A replica killed during a load test: what it cost and how long until clean answers.

    ``recovery_s``: seconds from the kill to the end of the last second with a failed
    request (0 when nothing failed); ``dark_s``: seconds in which nothing succeeded.
    """

    failed_requests: int
    requests: int
    recovery_s: float
    dark_s: int
    kill_at_s: float
    load: LoadResult

    def summary(self) -> dict:
        return {"failed_requests": self.failed_requests, "requests": self.requests,
                "recovery_s": self.recovery_s, "dark_s": self.dark_s, "kill_at_s": self.kill_at_s}


def specs(model_uri: str, cpus: int = 2, cache: str = "none") -> dict[str, DeploymentSpec]:
    """The two topologies with the same total CPUs: 1 x N workers, or N x 1 worker."""
    return {
        "single-large": DeploymentSpec.single_large(model_uri, cpus=cpus, name="single-large",
                                                    cache=cache),
        "many-small": DeploymentSpec.many_small(model_uri, replicas=cpus, name="many-small",
                                                cache=cache),
    }


def load_round(dep: Deployment, *, users: int, duration_s: int, label: str,
               shape: str = "constant", progress: bool = True) -> LoadResult:
    """Drive a running deployment through its load balancer."""
    return run_locust(dep.url, users=users, spawn_rate=users, duration_s=duration_s,
                      label=label, shape=shape, progress=progress)


@dataclasses.dataclass
class Rehearsal:
    """A load test with actions taken during it. ``started``: epoch seconds of the start;
    ``events`` / ``finished``: seconds from the start at which each action began / returned."""

    load: LoadResult
    started: float
    events: dict[str, float]
    finished: dict[str, float]


def under_load(dep: Deployment, actions: list[tuple[float, str, Callable[[], object]]], *,
               users: int, duration_s: int, label: str, progress: bool = True) -> Rehearsal:
    """Load ``dep`` for ``duration_s`` and, meanwhile, call each ``(at_s, name, fn)`` of
    ``actions`` ``at_s`` seconds after the start (in order; a slow action delays the next)."""
    box: dict = {}

    def drive() -> None:
        try:
            box["load"] = run_locust(dep.url, users=users, spawn_rate=users,
                                     duration_s=duration_s, label=label, progress=progress)
        except BaseException as err:  # surfaced below
            box["error"] = err

    thread = threading.Thread(target=drive, daemon=True)
    started = time.time()
    thread.start()
    events, finished = {}, {}
    for at_s, name, fn in actions:
        time.sleep(max(0.0, started + at_s - time.time()))
        events[name] = time.time() - started
        fn()
        finished[name] = time.time() - started
    thread.join(timeout=duration_s + 90)
    if "error" in box:
        raise box["error"]
    return Rehearsal(box["load"], started, events, finished)


def fault_round(backend, dep: Deployment, *, users: int, duration_s: int, kill_at_s: float,
                label: str, progress: bool = True) -> FaultResult:
    """Kill replica 0 ``kill_at_s`` seconds into a load test, then measure the damage."""
    run = under_load(dep, [(kill_at_s, "kill", lambda: backend.kill_replica(dep, 0))],
                     users=users, duration_s=duration_s, label=label, progress=progress)
    load, killed_at = run.load, run.started + run.events["kill"]
    tl = load.timeline()
    after = tl[tl["t"] >= int(killed_at)]
    failing = after[after["failed"] > 0]
    recovery = float(failing["t"].max() + 1 - killed_at) if len(failing) else 0.0
    dark = int(((after["ok"] == 0) & (after["failed"] > 0)).sum())
    return FaultResult(failed_requests=load.failures, requests=load.requests,
                       recovery_s=round(max(recovery, 0.0), 2), dark_s=dark,
                       kill_at_s=round(run.events["kill"], 2), load=load)


def peak_rps(load: LoadResult) -> float:
    """Median successful requests/s during the last step (all users on): the capacity."""
    tl = load.timeline()
    if tl.empty:
        return 0.0
    full = tl.iloc[:-1] if len(tl) > 2 else tl  # the last second is cut short by the stop
    top = full[full["users"] == full["users"].max()]
    if len(top) >= 3:
        return float(top["ok"].iloc[1:].median())  # skip the second in which users arrived
    return float(full["ok"].max())  # short (smoke) runs: the best full second


def showdown(profile: str | None = None, backend: str = "auto", model_kind: str = "forest",
             progress: bool = True, log=print) -> dict:
    """Deploy each topology in turn, load-test it, kill a replica under load, tear it down.

    Returns ``{"profile", "backend", "single_large": {...}, "many_small": {...}}`` plus the
    LoadResults and timelines under ``"_runs"`` (not serialised).
    """
    from . import model

    prof = config.get_profile(profile)
    be = get_backend(backend, verbose=False)
    cpus = max(1, min(2, int(config.cpu_limit())))
    log(f"profile {prof.name}, backend {be.name}, {cpus} CPUs; preparing the {model_kind} model")
    uri = model.prepare(model_kind, profile=prof.name)
    fault_s = max(10, prof.duration_s // 2)
    out: dict = {"profile": prof.name, "backend": be.name, "model": model_kind, "_runs": {}}
    for topology, spec in specs(uri, cpus=cpus).items():
        key = TOPOLOGY_KEYS[topology]
        log(f"{topology}: {spec.replicas} replica(s) x {spec.workers_per_replica} worker(s)")
        dep = be.up(spec)
        try:
            load = load_round(dep, users=prof.users, duration_s=prof.duration_s,
                              label=f"{topology}-load", shape="step", progress=progress)
            log(f"  load: {load.rps:.0f} req/s, p95 {load.p95_ms:.0f} ms, "
                f"{load.failures} failures")
            fault = fault_round(be, dep, users=prof.users, duration_s=fault_s,
                                kill_at_s=fault_s / 3, label=f"{topology}-fault",
                                progress=progress)
            log(f"  fault: {fault.failed_requests} failed requests, "
                f"recovered after {fault.recovery_s:.1f} s")
        finally:
            be.down(dep)
        out[key] = {
            "requests": load.requests, "failures": load.failures, "rps": load.rps,
            "p50_ms": load.p50_ms, "p95_ms": load.p95_ms, "p99_ms": load.p99_ms,
            "replicas": spec.replicas, "workers_per_replica": spec.workers_per_replica,
            "cpus_total": spec.cpus_total, "generator_cpu": load.generator_cpu,
            "peak_rps": peak_rps(load),
            "fault_injection": fault.summary(),
        }
        out["_runs"][key] = {"load": load, "fault": fault}
    return out
