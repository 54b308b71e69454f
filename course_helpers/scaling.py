"""Lesson 02: scale up or out? Deploy single-large and many-small, load them, break them.

The load round steps the users up in four equal steps (so latency can be read against
users); the fault round holds all users, paced to a fixed share of the capacity the load
round measured, and kills one replica a third of the way in.

Both topologies get the same CPUs: on two CPUs, 1 replica x 2 workers against 2 replicas
x 1 worker on 1 CPU each; on one CPU (Binder), 1 x 2 against 2 x 1 sharing that CPU.

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


#: The fault round offers this share of the capacity measured in the first load round, to
#: both topologies: one of two replicas can carry it alone, so a crash should cost
#: retries, not failures.
FAULT_LOAD_SHARE = 0.5


@dataclasses.dataclass
class FaultResult:
    """A replica killed during a load test: what it cost and how long until clean answers.

    ``failed_ratio``: failed / requests over the whole round; ``recovery_s``: seconds from
    the kill to the end of the last second with a failed request (0 when nothing failed);
    ``dark_s``: whole seconds after the kill in which no request succeeded.
    ``rate_per_user``: the pace of each user (requests/s; 0: unpaced).
    """

    failed_requests: int
    requests: int
    recovery_s: float
    dark_s: int
    kill_at_s: float
    load: LoadResult
    rate_per_user: float = 0.0

    @property
    def failed_ratio(self) -> float:
        return round(self.failed_requests / self.requests, 4) if self.requests else 0.0

    def summary(self) -> dict:
        return {"failed_requests": self.failed_requests, "requests": self.requests,
                "failed_ratio": self.failed_ratio, "recovery_s": self.recovery_s,
                "dark_s": self.dark_s, "kill_at_s": self.kill_at_s,
                "rate_per_user": self.rate_per_user}


def specs(model_uri: str, cpus: int = 2, cache: str = "none") -> dict[str, DeploymentSpec]:
    """The two topologies with the same total CPUs and the same number of worker processes.

    ``cpus >= 2``: 1 replica x ``cpus`` workers, or ``cpus`` replicas x 1 worker on 1 CPU
    each. ``cpus == 1``: 1 replica x 2 workers, or 2 replicas x 1 worker sharing the CPU
    (half each): with one worker each, both would be the same deployment.
    """
    if cpus >= 2:
        return {
            "single-large": DeploymentSpec.single_large(model_uri, cpus=cpus,
                                                        name="single-large", cache=cache),
            "many-small": DeploymentSpec.many_small(model_uri, replicas=cpus,
                                                    name="many-small", cache=cache),
        }
    return {
        "single-large": DeploymentSpec.single_large(model_uri, cpus=1, workers=2,
                                                    name="single-large", cache=cache),
        "many-small": DeploymentSpec.many_small(model_uri, replicas=2, cpus=1,
                                                name="many-small", cache=cache),
    }


def describe(spec: DeploymentSpec) -> str:
    """``1 replica x 2 workers on 1 CPU`` / ``2 replicas x 1 worker, 0.5 CPU each``."""
    r, w = spec.replicas, spec.workers_per_replica
    where = (f"on {spec.cpus_per_replica:g} CPU{'s' if spec.cpus_per_replica != 1 else ''}"
             if r == 1 else f"{spec.cpus_per_replica:g} CPU each")
    return (f"{r} replica{'s' if r > 1 else ''} x {w} worker{'s' if w > 1 else ''}"
            f"{' ' if r == 1 else ', '}{where}")


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
               users: int, duration_s: int, label: str, progress: bool = True,
               rate_per_user: float | None = None, start_timeout_s: float = 60.0) -> Rehearsal:
    """Load ``dep`` for ``duration_s`` and, meanwhile, call each ``(at_s, name, fn)`` of
    ``actions`` ``at_s`` seconds after the load began (its first request: Locust itself
    takes seconds to start on a busy machine), in order; a slow action delays the next.
    ``rate_per_user``: requests/s per user at most (None: unpaced)."""
    import os
    import tempfile

    box: dict = {}
    fd, marker = tempfile.mkstemp(prefix="locust-started-", dir=config.workspace_dir("loadtests"))
    os.close(fd)
    os.unlink(marker)

    def drive() -> None:
        try:
            box["load"] = run_locust(dep.url, users=users, spawn_rate=users,
                                     duration_s=duration_s, label=label, progress=progress,
                                     rate_per_user=rate_per_user, started_file=marker)
        except BaseException as err:  # surfaced below
            box["error"] = err

    thread = threading.Thread(target=drive, daemon=True)
    launched = time.time()
    thread.start()
    while not os.path.exists(marker):  # the first request, or Locust gave up
        if not thread.is_alive() or time.time() - launched > start_timeout_s:
            break
        time.sleep(0.05)
    try:
        with open(marker) as fh:
            started = float(fh.read())
        os.unlink(marker)
    except (OSError, ValueError):
        started = launched  # no request at all: the error (if any) surfaces below
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
                label: str, progress: bool = True,
                rate_per_user: float | None = None) -> FaultResult:
    """Kill replica 0 ``kill_at_s`` seconds into a load test, then measure the damage.

    ``rate_per_user`` paces the users (requests/s each): without it, users that get an
    instant 502 fire again at once and the failure count measures the client's speed.
    """
    run = under_load(dep, [(kill_at_s, "kill", lambda: backend.kill_replica(dep, 0))],
                     users=users, duration_s=duration_s, label=label, progress=progress,
                     rate_per_user=rate_per_user)
    load, killed_at = run.load, run.started + run.events["kill"]
    recovery, dark = damage(load.timeline(), killed_at)
    return FaultResult(failed_requests=load.failures, requests=load.requests,
                       recovery_s=recovery, dark_s=dark,
                       kill_at_s=round(run.events["kill"], 2), load=load,
                       rate_per_user=round(rate_per_user or 0.0, 2))


def damage(timeline, killed_at: float) -> tuple[float, int]:
    """``(recovery_s, dark_s)`` of a per-second timeline (columns t, ok, failed) after a
    kill at epoch ``killed_at``: seconds from the kill to the end of the last second with a
    failure, and whole seconds from the kill's second on in which nothing succeeded
    (seconds with no response at all count as dark; the run's last, cut-short second not)."""
    if timeline.empty:
        return 0.0, 0
    after = timeline[timeline["t"] >= int(killed_at)]
    failing = after[after["failed"] > 0]
    recovery = float(failing["t"].max() + 1 - killed_at) if len(failing) else 0.0
    ok_by_second = dict(zip(after["t"], after["ok"]))
    seconds = range(int(killed_at), int(timeline["t"].max()))
    dark = sum(1 for t in seconds if ok_by_second.get(t, 0) == 0)
    return round(max(recovery, 0.0), 2), dark


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
             progress: bool = True, log=print, cpus: int | None = None,
             load_s: int | None = None, fault_s: int | None = None) -> dict:
    """Deploy each topology in turn, load-test it, kill a replica under load, tear it down
    (local backend: while the next topology starts).

    ``cpus`` defaults to what this process may use (affinity and cgroup quota), at most 2.
    ``load_s`` (default: the profile's duration) and ``fault_s`` (default: half of it, at
    least 10) are the lengths of the two rounds, in seconds.
    Returns ``{"profile", "backend", "cpus", "comparison", "single_large": {...},
    "many_small": {...}}`` plus the LoadResults and timelines under ``"_runs"`` (not
    serialised).
    """
    from . import model

    prof = config.get_profile(profile)
    be = get_backend(backend, verbose=False)
    cpus = cpus or max(1, min(2, int(config.cpu_limit())))
    topologies = specs("", cpus=cpus)
    comparison = (f"{cpus} CPU{'s' if cpus > 1 else ''}: "
                  + " against ".join(describe(s) for s in topologies.values()))
    if cpus == 1:
        comparison += " (one CPU: both topologies run two worker processes on it)"
    log(f"profile {prof.name}, backend {be.name}; {comparison}")
    log(f"preparing the {model_kind} model")
    uri = model.prepare(model_kind, profile=prof.name)
    load_s = load_s or prof.duration_s
    fault_s = fault_s or max(10, prof.duration_s // 2)
    out: dict = {"profile": prof.name, "backend": be.name, "model": model_kind, "cpus": cpus,
                 "comparison": comparison, "_runs": {}}
    teardowns = _Teardowns(be)
    with teardowns:
        for topology, spec in specs(uri, cpus=cpus).items():
            _one_topology(be, prof, topology, spec, load_s, fault_s, progress, log, out,
                          teardowns)
    return out


class _Teardowns:
    """Take local deployments down in the background: the next topology starts while the
    last one's servers finish their graceful exit (seconds of waiting, little CPU; its load
    round waits until they are gone). Leaving the ``with`` waits for every teardown and raises the
    first error."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def down(self, dep: Deployment) -> None:
        if self.backend.name != "local":  # containers: one Docker call at a time
            self.backend.down(dep)
            return

        def run() -> None:
            try:
                self.backend.down(dep)
            except BaseException as err:  # raised when the showdown ends
                self.errors.append(err)

        thread = threading.Thread(target=run, name=f"down-{dep.spec.name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def wait(self) -> None:
        """Block until every teardown started so far has finished."""
        for thread in self.threads:
            thread.join()

    def __enter__(self) -> "_Teardowns":
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        self.wait()
        if self.errors and exc_type is None:
            raise self.errors[0]


def _one_topology(be, prof, topology: str, spec: DeploymentSpec, load_s: int, fault_s: int,
                  progress: bool, log, out: dict, teardowns: _Teardowns) -> None:
    """Deploy one topology, run its load and fault rounds into ``out``, start its teardown."""
    key = TOPOLOGY_KEYS[topology]
    log(f"{topology}: {describe(spec)}: starting")
    dep = be.up(spec)
    teardowns.wait()  # the last topology's servers are gone before this one is loaded
    try:
        log(f"  load round: {prof.users} users in 4 steps, {load_s} s")
        load = load_round(dep, users=prof.users, duration_s=load_s,
                          label=f"{topology}-load", shape="step", progress=progress)
        sustained = peak_rps(load)
        log(f"  load: {sustained:.0f} req/s sustained with all users on "
            f"({load.rps:.0f} over the ramp), p95 {load.p95_ms:.0f} ms, "
            f"{load.failures} failures")
        # the same offered load for both topologies: set by the first load round
        rate = out.setdefault("fault_rate_per_user",
                              round(max(0.5, FAULT_LOAD_SHARE * sustained / prof.users), 2))
        log(f"  fault round: {prof.users} users at {rate:.1f} req/s each, {fault_s} s, "
            f"replica 0 killed at {fault_s / 3:.0f} s")
        fault = fault_round(be, dep, users=prof.users, duration_s=fault_s,
                            kill_at_s=fault_s / 3, label=f"{topology}-fault",
                            progress=progress, rate_per_user=rate)
        log(f"  fault: {fault.failed_requests} of {fault.requests} requests failed "
            f"({100 * fault.failed_ratio:.1f}%), {fault.dark_s} dark s, "
            f"recovered after {fault.recovery_s:.1f} s")
    finally:
        teardowns.down(dep)
    out[key] = {
        "requests": load.requests, "failures": load.failures, "rps": load.rps,
        "p50_ms": load.p50_ms, "p95_ms": load.p95_ms, "p99_ms": load.p99_ms,
        "mean_ms": load.mean_ms,
        "replicas": spec.replicas, "workers_per_replica": spec.workers_per_replica,
        "cpus_per_replica": spec.cpus_per_replica,
        "cpus_total": spec.cpus_total, "generator_cpu": load.generator_cpu,
        "peak_rps": sustained,
        "fault_injection": fault.summary(),
    }
    out["_runs"][key] = {"load": load, "fault": fault}
