"""CPU and memory limits for local processes: CPU pinning and Linux memory cgroups.

The ground floor: the supervisor, the model server and the local backend all use it, and
it imports nothing of the course. Root on a cgroup v1 or v2 host can create a memory
cgroup per process group; elsewhere (Binder, laptops without root) ``memory_prefix``
returns None and the limit is not enforced. ``cpu_prefix`` pins with ``taskset``.
(``config.cpu_limit`` and ``config.memory_limit_bytes`` read the limits *this* process
runs under.)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")
PARENT = "mlops-course"


def _group(name: str) -> tuple[Path, str, str] | None:
    """(directory, limit file, procs file) for a new group, or None if we may not create one."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    if (V1 / "memory.limit_in_bytes").exists():
        base, limit = V1 / PARENT, "memory.limit_in_bytes"
    elif (V2 / "cgroup.controllers").exists() and "memory" in (V2 / "cgroup.controllers").read_text():
        base, limit = V2 / PARENT, "memory.max"
    else:
        return None
    try:
        base.mkdir(exist_ok=True)
        if limit == "memory.max":  # v2: the parent must delegate the memory controller
            (base / "cgroup.subtree_control").write_text("+memory")
        path = base / safe
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    return path, limit, "cgroup.procs"


def cpu_prefix(cpus: list[int] | None) -> list[str]:
    """A command prefix that runs the command on ``cpus`` only (``taskset -c``); empty when
    no CPUs are given or ``taskset`` is missing (then the command runs unpinned)."""
    taskset = shutil.which("taskset")
    if not cpus or not taskset:
        return []
    return [taskset, "-c", ",".join(str(c) for c in cpus)]


def memory_prefix(name: str, memory_mb: int) -> list[str] | None:
    """A command prefix that joins a fresh memory cgroup of ``memory_mb`` MB, then execs.

    Everything the command forks inherits the group; None when cgroups are not writable.
    """
    group = _group(name)
    if group is None:
        return None
    path, limit, procs = group
    try:
        (path / limit).write_text(str(int(memory_mb) * 2**20))
    except OSError:
        return None
    return ["sh", "-c", f'echo $$ > {path / procs} && exec "$@"', "sh"]


def memory_limit_of(name: str) -> int | None:
    """The limit in bytes set for ``name``'s group, if any."""
    group = _group(name)
    if group is None:
        return None
    try:
        return int((group[0] / group[1]).read_text().strip())
    except (OSError, ValueError):
        return None


def remove(name: str) -> None:
    """Remove the (empty) group after its processes have exited."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    for base in (V1 / PARENT, V2 / PARENT):
        try:
            (base / safe).rmdir()
        except OSError:
            pass


def supported() -> bool:
    return os.geteuid() == 0 and _group("probe") is not None and (remove("probe") or True)


def remove_empty() -> None:
    """Remove every group of ours whose processes are gone (rmdir refuses non-empty ones)."""
    for base in (V1 / PARENT, V2 / PARENT):
        if base.is_dir():
            for child in base.iterdir():
                if child.is_dir():
                    try:
                        child.rmdir()
                    except OSError:
                        pass
