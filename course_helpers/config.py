"""Workspace, profiles and environment detection (Binder, Docker, real CPU and memory)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
#: The profile names, smallest first (``--profile`` choices everywhere).
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)


# Settings: every environment variable the course reads, documented once -----------------------
def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true")


def _var(env: str, default: Any, meaning: str, parse: Callable[[str], Any] = str) -> Any:
    """A :class:`Settings` field read from ``env`` (``parse`` turns its text into the value)."""
    return dataclasses.field(default=default,
                             metadata={"env": env, "meaning": meaning, "parse": parse})


@dataclasses.dataclass(frozen=True)
class Settings:
    """The course's environment variables, parsed: one field per variable.

    :func:`settings` reads them (call it again after changing ``os.environ``; nothing is
    cached). An empty variable counts as unset. :func:`variables` lists name, default and
    meaning. Writers keep using the names (``Settings.env_name("cache")``) when they pass
    settings to a process they start.
    """

    # -- everyone ------------------------------------------------------------------------
    profile: str = _var("MLOPS_PROFILE", DEFAULT_PROFILE,
                        f"sizes of everything long-running: {', '.join(PROFILES)}")
    home: str | None = _var("MLOPS_HOME", None,
                            "the one directory the helpers write to (default <repo>/.mlops, "
                            "else ~/.mlops)")
    backend: str = _var("MLOPS_BACKEND", "auto",
                        "deployment backend of the lessons: local, docker or auto "
                        "(docker when an engine answers)")
    base_image: str | None = _var("BASE_IMAGE", None,
                                  "base image of the course's images (default: public "
                                  "python:3.11-slim; tests use an offline-built one)")
    # -- the model server (serving.app.Settings; set by serve() and the backends) ----------
    model_uri: str | None = _var("MLOPS_MODEL_URI", None,
                                 "the model the server loads (path, runs:/ or models:/ URI)")
    cache: str = _var("MLOPS_CACHE", "lru", "prediction cache: none, lru or redis")
    cache_size: int = _var("MLOPS_CACHE_SIZE", 10_000, "entries of the in-process LRU cache",
                           int)
    cache_ttl_s: float = _var("MLOPS_CACHE_TTL_S", 300.0, "seconds a cached prediction lives",
                              float)
    redis_url: str | None = _var("MLOPS_REDIS_URL", None, "Redis URL for cache=redis")
    db: str | None = _var("MLOPS_DB", None,
                          "prediction log: SQLite path or URL, postgresql:// URL, or none")
    max_batch: int = _var("MLOPS_MAX_BATCH", 256, "rows one /predict request may carry", int)
    max_body_bytes: int = _var("MLOPS_MAX_BODY_BYTES", 1_000_000,
                               "largest request body (bytes); larger gets 413", int)
    variant: str = _var("MLOPS_VARIANT", "default",
                        "variant name the server reports (A/B and canaries)")
    max_requests_per_connection: int = _var(
        "MLOPS_MAX_REQUESTS_PER_CONNECTION", 0,
        "close a keep-alive connection after this many requests (0: never)", int)
    follow_alias_s: float = _var("MLOPS_FOLLOW_ALIAS_S", 0.0,
                                 "poll the registry alias this often (s) and swap the model; "
                                 "0: resolve once", float)
    predict_on_loop: bool = _var("MLOPS_PREDICT_ON_LOOP", False,
                                 "lesson 01's teaching switch: predict on the event loop "
                                 "(1/true); never in production", _flag)
    predict_threads: int = _var("MLOPS_PREDICT_THREADS", 2,
                                "predictions running at once per worker (threads)", int)
    reuseport_bind: str | None = _var("MLOPS_REUSEPORT_BIND", None,
                                      "host:port each gunicorn worker binds with SO_REUSEPORT "
                                      "(set by the course)")
    replica: str | None = _var("MLOPS_REPLICA", None,
                               "replica name of a deployed server (set by the backends)")
    # -- tools and launchers -----------------------------------------------------------------
    locustfile: str | None = _var("MLOPS_LOCUSTFILE", None,
                                  "locustfile of the Locust UI launcher (default: the course's)")
    locust_host: str | None = _var("MLOPS_LOCUST_HOST", None,
                                   "target URL preset in the Locust UI launcher")
    dask_scheduler_port: int = _var("MLOPS_DASK_SCHEDULER_PORT", 8786,
                                    "port of the Dask dashboard launcher's scheduler", int)
    grader_image: str | None = _var("MLOPS_GRADER_IMAGE", None,
                                    "image of docker-sandboxed grading kernels")
    grading_timeout: int = _var("MLOPS_GRADING_TIMEOUT", 30,
                                "seconds one cell may run when autograding (read by "
                                "assignments/nbgrader_config.py)", int)
    exchange: str | None = _var("MLOPS_EXCHANGE", None,
                                "nbgrader exchange directory (read by "
                                "assignments/nbgrader_config.py)")
    supervised: str | None = _var("MLOPS_SUPERVISED", None,
                                  "workspace tag on every process the supervisor starts "
                                  "(set by the course; cleanup finds orphans by it)")
    # -- the course's locustfile (set by loadtest.run_locust) ---------------------------------
    load_rows: str | None = _var("MLOPS_LOAD_ROWS", None, "JSON file with the rows to POST")
    load_mix: str = _var("MLOPS_LOAD_MIX", "uniform", "row choice: uniform or zipf")
    load_zipf_a: float = _var("MLOPS_LOAD_ZIPF_A", 1.2, "Zipf exponent for mix=zipf", float)
    load_batch: int = _var("MLOPS_LOAD_BATCH", 1, "rows per request", int)
    load_api: str = _var("MLOPS_LOAD_API", "course",
                         "course (POST /predict) or mlflow (POST /invocations)")
    load_rate: float = _var("MLOPS_LOAD_RATE", 0.0,
                            "requests per second per user, at most (0: no wait)", float)
    load_seed: int = _var("MLOPS_LOAD_SEED", 7, "seed of the row order", int)
    load_timeline: str | None = _var("MLOPS_LOAD_TIMELINE", None,
                                     "file for per-second successes and failures")
    load_started: str | None = _var("MLOPS_LOAD_STARTED", None,
                                    "file touched at the first request")
    load_shape: str = _var("MLOPS_LOAD_SHAPE", "constant", "load shape: constant or step")
    load_users: int = _var("MLOPS_LOAD_USERS", 10, "users at the top of the shape", int)
    load_duration: float = _var("MLOPS_LOAD_DURATION", 20.0, "seconds of load", float)
    load_steps: int = _var("MLOPS_LOAD_STEPS", 4, "steps of the steps shape", int)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read every variable from ``env`` (default ``os.environ``); a value that does not
        parse raises ``ValueError`` naming the variable."""
        env = os.environ if env is None else env
        values = {}
        for f in dataclasses.fields(cls):
            raw = (env.get(f.metadata["env"]) or "").strip()
            if not raw:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError:
                kind = {int: "a whole number", float: "a number"}.get(f.metadata["parse"],
                                                                      "valid")
                raise ValueError(f"{f.metadata['env']}={raw!r} is not {kind}: fix or unset "
                                 f"it ({f.metadata['meaning']}).") from None
        return cls(**values)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The variable behind a field: ``Settings.env_name("cache") == "MLOPS_CACHE"``."""
        return {f.name: f.metadata["env"] for f in dataclasses.fields(cls)}[field]


def settings(env: Mapping[str, str] | None = None) -> Settings:
    """The environment's :class:`Settings`, read now (not cached: tests change variables)."""
    return Settings.from_env(env)


def variables() -> list[dict[str, str]]:
    """Every variable the course reads: ``name``, ``default`` and ``meaning`` (one row each)."""
    return [{"name": f.metadata["env"], "default": "" if f.default is None else str(f.default),
             "meaning": f.metadata["meaning"]} for f in dataclasses.fields(Settings)]


def get_profile(name: str | None = None) -> Profile:
    """The profile named, else ``$MLOPS_PROFILE``, else ``classroom``."""
    name = (name or settings().profile).strip().lower()
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
    env = settings().home
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
