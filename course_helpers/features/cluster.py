"""A Dask scheduler and workers as separate processes, through the course supervisor.

This is how a multi-node cluster runs (one ``dask scheduler``, ``dask worker`` processes on
other machines pointing at it); here every process binds 127.0.0.1 and
``mlops-course cleanup`` stops them. Pass :attr:`Cluster.address` as ``--scheduler``.
"""

from __future__ import annotations

import dataclasses
import time

from ..supervisor import Supervisor, free_port


@dataclasses.dataclass
class Cluster:
    """Addresses of a running scheduler; :meth:`stop` stops it and its workers."""

    address: str
    dashboard_url: str
    workers: int
    name: str

    @property
    def dashboard_ui(self) -> str:
        """Where a browser finds the dashboard: through jupyter-server-proxy on a hub or Binder
        (``<server>/proxy/<port>/status``), else direct."""
        import os

        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
        if prefix and self.dashboard_url:
            port = self.dashboard_url.rsplit(":", 1)[1].split("/")[0]
            return f"{prefix.rstrip('/')}/proxy/{port}/status"
        return self.dashboard_url

    def stop(self) -> None:
        sup = Supervisor()
        sup.stop(f"{self.name}-workers")
        sup.stop(f"{self.name}-scheduler")


def start_cluster(workers: int = 2, memory_mb: int = 512, name: str = "dask",
                  timeout_s: float = 60.0, scheduler: str | None = None) -> Cluster:
    """Start ``dask scheduler`` and ``dask worker`` (``workers`` processes, one thread and
    ``memory_mb`` MB each); returns when every worker has registered. With ``scheduler``
    (``tcp://host:port``, e.g. the one the Dask dashboard launcher started) only the workers
    are started, and they join it."""
    from .engines import connect, require

    require("distributed")
    sup = Supervisor()
    if scheduler:
        connect(scheduler).close()  # one sentence within 10 s if nobody answers
        address, dash_url = scheduler, ""
    else:
        port, dash = free_port(), free_port()
        sup.start(f"{name}-scheduler", [
            "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
            "--dashboard-address", f"127.0.0.1:{dash}", "--no-show"], port=port,
            timeout=timeout_s)
        address, dash_url = f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{dash}/status"
    try:
        sup.start(f"{name}-workers", [
            "dask", "worker", address, "--nworkers", str(workers), "--nthreads", "1",
            "--memory-limit", f"{int(memory_mb)}MB", "--host", "127.0.0.1", "--no-dashboard"],
            timeout=timeout_s)
        client = connect(address)
        try:
            client.wait_for_workers(workers, timeout=timeout_s)
        finally:
            client.close()
    except BaseException:
        sup.stop(f"{name}-workers")
        sup.stop(f"{name}-scheduler")
        raise
    return Cluster(address=address, dashboard_url=dash_url, workers=workers, name=name)


def wait_gone(address: str, within_s: float = 10.0) -> bool:
    """True once nothing answers at ``address`` (after a stop)."""
    import socket

    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
        except OSError:
            return True
        time.sleep(0.2)
    return False
