"""The local backend: each replica is a gunicorn process group pinned to its own CPUs.

Replicas run the command and settings of :mod:`.recipe`, as containers do: the same server
code and settings whatever the topology, so lesson 02 compares topologies, not settings.

This is what Binder students run (no Docker there), so it behaves like the Docker backend:
nginx in front, a restart policy (a watchdog restarts a crashed replica on the same port),
``scale`` without a restart of the load balancer. Memory limits use a cgroup per replica
where the OS allows it (root); elsewhere (Binder) they are validated but not enforced.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from .. import limits
from ..monitoring.discovery import register_deployment, unregister_deployment
from ..supervisor import Supervisor, free_port
from . import recipe
from .base import Deployment, Replica
from .nginx import LoadBalancer, Server, Upstream
from .spec import DeploymentSpec


def _upstream(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


class LocalBackend:
    """Deployments as local processes; see the module docstring."""

    name = "local"

    def __init__(self, restart: bool = True, watch_interval_s: float = 0.25,
                 verbose: bool = False) -> None:
        self.restart = restart
        self.verbose = verbose
        self.watch_interval_s = watch_interval_s
        self._watchers: dict[str, tuple[threading.Event, threading.Thread]] = {}
        self._lock = threading.Lock()
        self.restarts: dict[str, int] = {}

    # lifecycle -----------------------------------------------------------------
    def up(self, spec: DeploymentSpec) -> Deployment:
        import concurrent.futures

        spec.validate()
        sets = spec.cpu_sets()
        started = time.monotonic()
        if self.verbose:
            print(f"{spec.name}: starting {spec.replicas} replica(s), each loads the model...",
                  flush=True)
        # replicas start side by side (each loads the model: seconds of CPU), then nginx
        with concurrent.futures.ThreadPoolExecutor(max_workers=spec.replicas) as pool:
            futures = [pool.submit(self._start_replica, spec, i, sets[i])
                       for i in range(spec.replicas)]
            concurrent.futures.wait(futures)
        replicas = [f.result() for f in futures if f.exception() is None]
        try:
            for f in futures:
                if f.exception() is not None:
                    raise f.exception()
            if self.verbose:
                print(f"{spec.name}: {len(replicas)} replica(s) ready in "
                      f"{time.monotonic() - started:.1f} s", flush=True)
            lb = LoadBalancer(f"{spec.name}-lb").start(self._upstreams(spec, replicas))
        except BaseException:
            for r in replicas:
                Supervisor().stop(r.name)
            raise
        dep = Deployment(spec=spec, backend=self.name, replicas=replicas, url=lb.url)
        if self.restart:
            self._watch(dep)
        register_deployment(dep)  # Prometheus scrapes every replica (file_sd)
        return dep

    def down(self, dep: Deployment) -> None:
        """Stop the load balancer and every replica (side by side: each stop waits for its
        server's graceful exit). A restart the watchdog has in progress is not waited for:
        its process is stopped with the others, and its readiness wait ends at once."""
        import concurrent.futures

        unregister_deployment(dep)
        item = self._watchers.pop(dep.url, None)
        if item:
            item[0].set()  # no new restart from here on
        LoadBalancer(f"{dep.spec.name}-lb").stop()
        names = [r.name for r in dep.replicas]

        def stop_all() -> None:
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
                list(pool.map(Supervisor().stop, names))

        stop_all()
        if item:
            item[1].join(timeout=130)  # a restart in progress fails now that its process is gone
            stop_all()  # a restart recorded between the first stop and the join
        for name in names:
            limits.remove(name)

    def status(self, dep: Deployment) -> list[dict]:
        import json

        from ..readiness import probe

        out = []
        for r in dep.replicas:
            rec = Supervisor().get(r.name)
            ready = probe(r.url + "/ready", timeout=2, expect=lambda status, body: status == 200
                          and json.loads(body).get("status") == "ready").ok
            out.append({"replica": r.name, "url": r.url, "pid": rec.pid if rec else None,
                        "alive": bool(rec and rec.is_alive()), "ready": ready, "cpus": r.cpus,
                        "memory_limit_mb": (limits.memory_limit_of(r.name) or 0) // 2**20 or None,
                        "restarts": self.restarts.get(r.name, 0)})
        return out

    def scale(self, dep: Deployment, replicas: int) -> Deployment:
        """Add or remove replicas; nginx is reloaded, not restarted."""
        spec = DeploymentSpec(**{**dep.spec.__dict__, "replicas": replicas}).validate()
        current = list(dep.replicas)
        lb = LoadBalancer(f"{spec.name}-lb", port=int(dep.url.rsplit(":", 1)[1]))
        with self._lock:
            if replicas > len(current):
                sets = spec.cpu_sets()
                for i in range(len(current), replicas):
                    current.append(self._start_replica(spec, i, sets[i]))
                lb.update(self._upstreams(spec, current))
            elif replicas < len(current):
                keep, drop = current[:replicas], current[replicas:]
                lb.update(self._upstreams(spec, keep))  # stop sending them traffic first
                for r in drop:
                    Supervisor().stop(r.name)
                    limits.remove(r.name)
                current = keep
            dep.spec, dep.replicas = spec, current
        register_deployment(dep)
        return dep

    def kill_replica(self, dep: Deployment, index: int = 0) -> Replica:
        """Crash one replica: SIGKILL its whole process group (no graceful shutdown)."""
        r = dep.replicas[index]
        rec = Supervisor().get(r.name)
        if rec is None or not rec.is_alive():
            raise RuntimeError(f"replica {r.name} is not running")
        os.killpg(os.getpgid(rec.pid), signal.SIGKILL)
        return r

    # internals -----------------------------------------------------------------
    def _start_replica(self, spec: DeploymentSpec, index: int, cpus: list[int],
                       port: int | None = None) -> Replica:
        """One replica: gunicorn with the recipe's worker class and settings (the same for
        every topology, see :func:`.recipe.server_settings`), pinned to ``cpus``, in a
        memory cgroup where the OS allows, supervised, started once ``/ready`` answers."""
        from .. import config
        from ..serving.app import Settings
        from ..serving.server import gunicorn_command
        from ..tracking import current_uri

        name = f"{spec.name}-r{index}"
        port = port or free_port()
        db = spec.db
        if db == "default":
            db = str(config.workspace_dir("serving") / f"{name}.db")
        settings = Settings(model_uri=spec.model_uri, cache=spec.cache, db=db,
                            max_requests_per_connection=recipe.MAX_REQUESTS_PER_CONNECTION)
        env = settings.to_env() | recipe.server_settings("127.0.0.1", port) | {
            "PROMETHEUS_MULTIPROC_DIR": str(config.workspace_dir("serving", f"{name}.prom")),
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
            "MLFLOW_TRACKING_URI": current_uri(), "MLOPS_REPLICA": name}
        master = f"unix:{config.workspace_dir('serving') / f'{name}.sock'}"
        cmd = gunicorn_command(spec.workers_per_replica, master, recipe.WORKER_CLASS)
        cmd = limits.cpu_prefix(cpus) + cmd
        cmd = (limits.memory_prefix(name, spec.memory_mb_per_replica) or []) + cmd
        rec = Supervisor().start(name, cmd, port=port, url=f"http://127.0.0.1:{port}/ready",
                                 timeout=120, env=env)
        return Replica(name=name, url=f"http://127.0.0.1:{port}", pid=rec.pid, cpus=cpus)

    @staticmethod
    def _upstreams(spec: DeploymentSpec, replicas: list[Replica]) -> list[Upstream]:
        servers = [Server(r.url.removeprefix("http://"), weight=spec.weight) for r in replicas]
        return [Upstream(_upstream(spec.name), servers)]

    def _watch(self, dep: Deployment) -> None:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.watch_interval_s):
                with self._lock:
                    for i, r in enumerate(list(dep.replicas)):
                        if stop.is_set():
                            return
                        rec = Supervisor().get(r.name)
                        if rec is not None and rec.is_alive():
                            continue
                        port = int(r.url.rsplit(":", 1)[1])
                        Supervisor().stop(r.name)  # reap leftovers of the crashed group
                        self.restarts[r.name] = self.restarts.get(r.name, 0) + 1
                        try:
                            new = self._start_replica(dep.spec, i, r.cpus or [], port=port)
                        except Exception:
                            stop.wait(1)  # try again on the next round (unless stopping)
                            continue
                        dep.replicas[i] = new

        thread = threading.Thread(target=loop, name=f"watch-{dep.spec.name}", daemon=True)
        thread.start()
        self._watchers[dep.url] = (stop, thread)
