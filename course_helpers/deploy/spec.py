"""One typed description of a deployment, whatever runs it (local processes, Docker, Kubernetes)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..errors import CourseError

TOPOLOGIES = ("single-large", "many-small", "custom")
BASE_MEMORY_MB = 200  # Python + FastAPI + scikit-learn + MLflow's loader, per worker, measured ~180


class SpecError(CourseError):
    """The spec cannot run; the message says why and what to change."""


@dataclasses.dataclass
class DeploymentSpec:
    """What to run: ``replicas`` servers, each with ``workers_per_replica`` processes,
    ``cpus_per_replica`` CPUs and ``memory_mb_per_replica`` MB, behind one load balancer.

    ``weight`` is the load balancer's share for this deployment's replicas (canaries use it).
    """

    model_uri: str
    name: str = "model"
    topology: str = "custom"
    replicas: int = 1
    workers_per_replica: int = 1
    cpus_per_replica: float = 1.0
    memory_mb_per_replica: int = 1024
    cache: str = "none"
    db: str | None = None
    weight: int = 1
    port: int = 8000  # the container port; local replicas get free ports

    @classmethod
    def single_large(cls, model_uri: str, cpus: float = 2, memory_mb: int = 2048,
                     workers: int | None = None, **kw) -> "DeploymentSpec":
        """Scale up: 1 replica on ``cpus`` CPUs with ``workers`` processes (default: one per CPU)."""
        workers = workers if workers is not None else max(1, int(round(cpus)))
        return cls(model_uri=model_uri, topology="single-large", replicas=1,
                   workers_per_replica=workers, cpus_per_replica=float(cpus),
                   memory_mb_per_replica=memory_mb, **kw)

    @classmethod
    def many_small(cls, model_uri: str, replicas: int = 2, memory_mb: int = 2048,
                   cpus: float | None = None, **kw) -> "DeploymentSpec":
        """Scale out: ``replicas`` replicas with 1 worker each, sharing ``cpus`` CPUs equally
        (default: 1 CPU each); ``memory_mb`` is the total, split equally too."""
        per_cpu = 1.0 if cpus is None else float(cpus) / replicas
        return cls(model_uri=model_uri, topology="many-small", replicas=replicas,
                   workers_per_replica=1, cpus_per_replica=per_cpu,
                   memory_mb_per_replica=max(1, memory_mb // replicas), **kw)

    @property
    def cpus_total(self) -> float:
        return self.replicas * self.cpus_per_replica

    @property
    def memory_mb_total(self) -> int:
        return self.replicas * self.memory_mb_per_replica

    def validate(self, machine_cpus: float | None = None) -> "DeploymentSpec":
        """Refuse what cannot run, with one sentence saying why; returns self."""
        from ..config import cpu_limit

        if self.topology not in TOPOLOGIES:
            raise SpecError(f"unknown topology {self.topology!r}: choose {', '.join(TOPOLOGIES)}")
        if self.replicas < 1:
            raise SpecError(f"{self.name}: replicas must be at least 1 (got {self.replicas}); "
                            "to stop a deployment, take it down instead.")
        if self.workers_per_replica < 1:
            raise SpecError(f"{self.name}: each replica needs at least 1 worker.")
        if self.cpus_per_replica <= 0:
            raise SpecError(f"{self.name}: cpus_per_replica must be positive.")
        machine = machine_cpus if machine_cpus is not None else cpu_limit()
        if self.cpus_total > machine + 1e-9:
            raise SpecError(
                f"{self.name}: {self.replicas} x {self.cpus_per_replica:g} CPUs = "
                f"{self.cpus_total:g} CPUs, but this machine gives {machine:g}; "
                "use fewer replicas or fewer CPUs each.")
        if self.weight < 0:
            raise SpecError(f"{self.name}: weight cannot be negative.")
        need = self.min_memory_mb()
        if self.memory_mb_per_replica < need:
            raise SpecError(
                f"{self.name}: {self.memory_mb_per_replica} MB per replica is too small to load "
                f"the model with {self.workers_per_replica} worker(s); give it at least {need} MB.")
        return self

    def min_memory_mb(self) -> int:
        """Rough floor: the runtime per worker plus three times the model's files."""
        return self.workers_per_replica * (BASE_MEMORY_MB + 3 * _model_mb(self.model_uri))

    def cpu_sets(self, machine_cpus: int | None = None) -> list[list[int]]:
        """CPU numbers for each replica, taken from the CPUs this process may use (its
        affinity): consecutive and non-overlapping where possible; replicas of less than
        one CPU share CPUs, wrapping around."""
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else list(range(os.cpu_count() or 1))
        if machine_cpus:
            allowed = allowed[:machine_cpus] or allowed
        n = len(allowed)
        per = max(1, int(round(self.cpus_per_replica)))
        return [[allowed[(r * per + i) % n] for i in range(per)] for r in range(self.replicas)]


def _model_mb(uri: str) -> int:
    path = Path(uri)
    if not path.is_dir():
        return 10  # a registry URI: assume a small model
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return max(1, total // 2**20)
