"""Workspace, profiles and environment detection (Binder, Docker, real CPU and memory)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

PROFILE_ENV = "MLOPS_PROFILE"
HOME_ENV = "MLOPS_HOME"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of everything long-running, by name.

    ``users`` and ``duration_s`` bound load tests (Locust users, seconds);
    ``n_rows`` is the dataset size; ``cell_timeout_s`` bounds one notebook cell.
    """

    name: str
    users: int
    spawn_rate: int
    duration_s: int
    n_rows: int
    n_estimators: int
    cell_timeout_s: int


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", users=4, spawn_rate=4, duration_s=5, n_rows=2_000,
                     n_estimators=20, cell_timeout_s=120),
    "classroom": Profile("classroom", users=10, spawn_rate=10, duration_s=20, n_rows=20_000,
                         n_estimators=100, cell_timeout_s=300),
    "full": Profile("full", users=20, spawn_rate=5, duration_s=60, n_rows=200_000,
                    n_estimators=300, cell_timeout_s=900),
}
DEFAULT_PROFILE = "classroom"


def get_profile(name: str | None = None) -> Profile:
    """The profile named, else ``$MLOPS_PROFILE``, else ``classroom``."""
    name = (name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE).strip().lower()
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}"
        ) from None


def repo_root() -> Path | None:
    """The course checkout this package was imported from, if any."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists() and (here / "course_helpers").is_dir():
        return here
    return None


def workspace(create: bool = True) -> Path:
    """The one directory the helpers write to: ``$MLOPS_HOME``, else ``<repo>/.mlops``.

    Outside a checkout (an installed package), it falls back to ``~/.mlops``.
    """
    env = os.environ.get(HOME_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        root = repo_root()
        path = (root / ".mlops") if root else Path.home() / ".mlops"
    path = path.resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def workspace_dir(*parts: str) -> Path:
    """A subdirectory of the workspace, created on demand."""
    path = workspace().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_binder() -> bool:
    """True on mybinder.org (repo2docker sets these variables)."""
    return bool(os.environ.get("BINDER_SERVICE_HOST") or os.environ.get("BINDER_REQUEST")
                or os.environ.get("BINDER_LAUNCH_HOST"))


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_limit() -> float:
    """CPUs this process may really use: cgroup quota and affinity, not the host total."""
    cpus = float(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") \
        else float(os.cpu_count() or 1)
    v2 = _read("/sys/fs/cgroup/cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            cpus = min(cpus, int(quota) / int(period))
    else:
        quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if quota and period and int(quota) > 0:
            cpus = min(cpus, int(quota) / int(period))
    return round(cpus, 2)


def memory_limit_bytes() -> int:
    """Memory this process may really use: the cgroup limit if set, else physical RAM."""
    import psutil

    total = psutil.virtual_memory().total
    raw = _read("/sys/fs/cgroup/memory.max") or _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if raw and raw != "max":
        limit = int(raw)
        if 0 < limit < total:
            return limit
    return total


def find_binary(name: str) -> str | None:
    """Path of an executable, looking beside this Python first (the venv's bin)."""
    beside = Path(sys.executable).parent / name
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name)
         if p.exists() and os.access(p, os.X_OK)),
        None,
    )
