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
