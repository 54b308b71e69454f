"""What this machine gives the course: Python, Docker, nginx, Redis, real CPUs and memory."""

from __future__ import annotations

import platform
import subprocess
import sys

from . import config


def _version_of(binary: str, args: list[str]) -> str | None:
    path = config.find_binary(binary)
    if not path:
        return None
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else path


def report(profile: str | None = None) -> dict:
    """A JSON-ready dict describing the environment (keys are stable: scripts read them)."""
    from . import containers

    docker_ok = containers.available()
    mem = config.memory_limit_bytes()
    nginx = _version_of("nginx", ["-v"])
    redis = _version_of("redis-server", ["--version"])
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "docker": docker_ok,
        "docker_version": containers.engine_version() if docker_ok else None,
        "nginx": nginx is not None,
        "nginx_version": nginx,
        "redis": redis is not None,
        "redis_version": redis,
        "cpus": config.cpu_limit(),
        "memory_gb": round(mem / 2**30, 2),
        "binder": config.is_binder(),
        "profile": config.get_profile(profile).name,
        "workspace": str(config.workspace()),
        "backend": "docker" if docker_ok else "local",
    }


def render(rep: dict) -> str:
    """The report as a short human-readable table with advice."""
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    rows = [
        ("Python", rep["python"]),
        ("Docker engine", f"yes ({rep['docker_version']})" if rep["docker"] else "no"),
        ("nginx", rep["nginx_version"] or "no"),
        ("redis-server", rep["redis_version"] or "no"),
        ("CPUs (cgroup/affinity)", rep["cpus"]),
        ("Memory (cgroup)", f"{rep['memory_gb']} GB"),
        ("Binder", yes(rep["binder"])),
        ("Profile", rep["profile"]),
        ("Workspace", rep["workspace"]),
        ("Deployments will use", f"the {rep['backend']} backend"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    advice = []
    if not rep["docker"]:
        advice.append("No Docker engine: lessons run their servers as local processes "
                      "(the local backend); everything still works.")
    if not rep["nginx"]:
        advice.append("nginx missing: install the Debian package `nginx` for the load balancer.")
    if not rep["redis"]:
        advice.append("redis-server missing: the cache falls back to in-process; "
                      "install the Debian package `redis-server` for Redis.")
    if rep["memory_gb"] < 2.5:
        advice.append("Little memory: keep MLOPS_PROFILE=classroom or smoke.")
    return "\n".join(lines + ([""] + [f"- {a}" for a in advice] if advice else []))
