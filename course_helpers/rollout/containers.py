"""Rollout tracks as Docker containers: lesson 02's Docker backend under the canary controller.

Each track (``stable``, ``canary``) is a one-replica deployment of the Docker backend
(:class:`course_helpers.deploy.docker.DockerBackend`): the serving image with its CPU and
memory limits, the model copied from the registry and mounted read-only, the replica's port
published on 127.0.0.1. The controller's own nginx weights the two replicas' host ports,
exactly as it weights two local servers, and Prometheus scrapes the same ports. Containers
write no prediction log on the host (``db`` is None).
"""

from __future__ import annotations

import dataclasses
import threading

#: Each container's share of the machine: one CPU, as a local server pinned to one.
CPUS_PER_TRACK = 1.0
MEMORY_MB_PER_TRACK = 1024

_lock = threading.Lock()
_running: dict[str, tuple[object, object]] = {}  # name -> (DockerBackend, Deployment)


@dataclasses.dataclass
class ContainerHandle:
    """A track's container, with what the controller reads of a local server's handle:
    ``url`` (its published 127.0.0.1 port), ``pid`` (on the host), ``db`` (None) and
    :meth:`stop`."""

    name: str
    url: str
    pid: int | None
    container_id: str | None
    db: str | None = None

    def predict(self, rows: list[dict] | dict, timeout: float = 30) -> dict:
        """POST one row (a dict) or a batch (a list of dicts) to /predict."""
        from ..serving.server import post_predict

        return post_predict(self.url, rows, timeout)

    def stop(self) -> bool:
        """Take the container down (SIGTERM, drain, remove); False if it was not running."""
        return stop_containers([self.name]) == [self.name]


def start_container(name: str, model_uri: str, verbose: bool = False) -> ContainerHandle:
    """Start ``model_uri`` as a one-replica Docker deployment called ``name`` (no prediction
    cache, so a slow or failing model shows) and wait until it answers ``/ready``."""
    from ..deploy.docker import DockerBackend
    from ..deploy.spec import DeploymentSpec

    backend = DockerBackend(verbose=verbose)
    spec = DeploymentSpec(model_uri=model_uri, name=name, replicas=1,
                          cpus_per_replica=CPUS_PER_TRACK,
                          memory_mb_per_replica=MEMORY_MB_PER_TRACK, cache="none", db=None)
    dep = backend.up(spec)
    with _lock:
        _running[name] = (backend, dep)
    r = dep.replicas[0]
    return ContainerHandle(name, r.url, r.pid, r.container_id)


def stop_containers(names: list[str]) -> list[str]:
    """Take down the named container deployments this process started; returns those it
    stopped (a name whose start failed has nothing left: the backend removed it)."""
    import concurrent.futures

    with _lock:
        found = [(n, _running.pop(n)) for n in names if n in _running]

    def down(item) -> None:
        backend, dep = item[1]
        backend.down(dep)

    if found:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(found)) as pool:
            list(pool.map(down, found))
    return [n for n, _ in found]
