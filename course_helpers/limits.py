"""CPU and memory limits for local processes: CPU pinning and Linux memory cgroups.

The ground floor: the supervisor, the model server and the local backend all use it, and
it imports nothing of the course. Root on a cgroup v1 or v2 host can create a memory
cgroup per process group; elsewhere (Binder, laptops without root) ``memory_prefix``
returns None and the limit is not enforced. ``cpu_prefix`` pins with ``taskset``.
(``config.cpu_limit`` and ``config.memory_limit_bytes`` read the limits *this* process
runs under.)

Every Linux-only call has a portable fallback, so macOS and other laptops run the same code
unpinned and without a memory cgroup: ``usable_cpus`` (``os.sched_getaffinity``, else every
CPU), ``cpu_prefix`` (``taskset``, else nothing), ``memory_prefix`` (a writable cgroup, else
None), ``file_lock`` (``fcntl.flock``, else no lock).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")
PARENT = "mlops-course"


def usable_cpus() -> list[int]:
    """The CPU numbers this process may run on: its affinity on Linux, every CPU elsewhere
    (macOS and Windows have no ``os.sched_getaffinity``)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return sorted(getaffinity(0))
        except OSError:
            pass
    return list(range(os.cpu_count() or 1))


@contextlib.contextmanager
def file_lock(handle: IO) -> Iterator[bool]:
    """Hold an exclusive lock on an open file while the block runs (``fcntl.flock``); yields
    False, without locking, where ``fcntl`` does not exist (Windows without WSL)."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield True
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


def _group(name: str) -> tuple[Path, str, str] | None:
    """(directory, limit file, procs file) for a new group, or None if we may not create one
    (not Linux, no cgroup file system, not writable)."""
    if not sys.platform.startswith("linux"):
        return None
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    try:
        if (V1 / "memory.limit_in_bytes").exists():
            base, limit = V1 / PARENT, "memory.limit_in_bytes"
        elif (V2 / "cgroup.controllers").exists() and \
                "memory" in (V2 / "cgroup.controllers").read_text():
            base, limit = V2 / PARENT, "memory.max"
        else:
            return None
    except OSError:
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
    taskset = shutil.which("taskset") if sys.platform.startswith("linux") else None
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
    """True where this process may create memory cgroups (root on Linux with cgroups)."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0 and _group("probe") is not None \
        and (remove("probe") or True)


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
