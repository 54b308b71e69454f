"""The interface both backends implement, and what they hand back."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from .spec import DeploymentSpec


@dataclasses.dataclass
class Replica:
    """One running server: where it answers and how to find it again."""

    name: str
    url: str  # http://127.0.0.1:PORT, reachable from the host
    pid: int | None = None  # local backend: the gunicorn master; docker: the container's init
    container_id: str | None = None
    cpus: list[int] | None = None


@dataclasses.dataclass
class Deployment:
    """A spec that is running: its replicas and the load balancer's URL in front of them."""

    spec: DeploymentSpec
    backend: str  # "local" or "docker"
    replicas: list[Replica]
    url: str  # the load balancer: what clients and Locust call


class Backend(Protocol):
    """``up`` starts a spec behind a load balancer and waits until every replica is ready;
    ``status`` reports each replica; ``scale`` changes the replica count and reloads the load
    balancer without a restart; ``kill_replica`` crashes one replica (SIGKILL, for fault
    injection); ``down`` stops everything it started."""

    name: str

    def up(self, spec: DeploymentSpec) -> Deployment: ...

    def status(self, dep: Deployment) -> list[dict]: ...

    def scale(self, dep: Deployment, replicas: int) -> Deployment: ...

    def kill_replica(self, dep: Deployment, index: int = 0) -> Replica: ...

    def down(self, dep: Deployment) -> None: ...


def crash_and_recover(backend: Backend, dep: Deployment, index: int = 0,
                      timeout_s: float = 90.0) -> dict:
    """SIGKILL replica ``index``, then send one prediction at a time through the load balancer
    until the restart policy has brought it back and every replica is ready.

    Returns ``seconds`` (from the kill until all replicas are ready), ``answers`` and
    ``failures`` (predictions meanwhile). Raises CourseError after ``timeout_s``.
    """
    import json
    import time
    import urllib.request

    from ..data import request_rows
    from ..errors import CourseError

    body = json.dumps({"row": request_rows(1)[0]}).encode()
    killed_at = time.monotonic()
    backend.kill_replica(dep, index)
    answers = failures = 0
    while True:
        req = urllib.request.Request(dep.url + "/predict", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
            answers += 1
        except OSError:  # HTTP errors too: a 502 while nginx finds no replica
            failures += 1
        states = backend.status(dep)
        if (states[index]["restarts"] or 0) >= 1 and all(s["ready"] for s in states):
            return {"seconds": round(time.monotonic() - killed_at, 2), "answers": answers,
                    "failures": failures}
        if time.monotonic() - killed_at > timeout_s:
            raise CourseError(f"replica {index} of {dep.spec.name} was not back and ready within "
                              f"{timeout_s:g} s: see `mlops-course status` and its log")
        time.sleep(0.1)
