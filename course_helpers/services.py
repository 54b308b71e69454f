"""Real backing services for the lessons, started through the supervisor on 127.0.0.1."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from . import config
from .errors import BinaryNotFoundError
from .supervisor import Supervisor, free_port


def start_redis(name: str = "redis", port: int | None = None, maxmemory_mb: int = 64) -> str:
    """Start ``redis-server`` (no persistence, LRU eviction); returns its ``redis://`` URL."""
    port = port or free_port()
    data = config.workspace_dir("redis", name)
    Supervisor().start(name, [
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "no", "--dir", str(data), "--maxmemory", f"{maxmemory_mb}mb",
        "--maxmemory-policy", "allkeys-lru", "--protected-mode", "yes",
    ], port=port, timeout=15)
    return f"redis://127.0.0.1:{port}/0"


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    path = found[-1] if found else shutil.which(tool)
    if not path:
        raise BinaryNotFoundError(
            f"`{tool}` was not found: install it from the Debian package `postgresql`.")
    return path


def start_postgres(name: str = "postgres", port: int | None = None) -> str:
    """Start a throwaway PostgreSQL server (trust auth, loopback only); returns its URL.

    PostgreSQL refuses to run as root; as root it runs as the ``postgres`` system user,
    with its data directory outside the workspace where that user can reach it.
    """
    port = port or free_port()
    as_root = os.geteuid() == 0
    if as_root:
        key = hashlib.sha1(str(config.workspace()).encode()).hexdigest()[:12]
        data = Path("/var/tmp/mlops-course-pg") / f"{name}-{key}"
        data.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(data.parent, 0o755)
        prefix = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    else:
        data = config.workspace() / "postgres" / name
        prefix = []
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        if as_root:
            shutil.chown(data, "postgres", "postgres")
        out = subprocess.run(prefix + [_pg_bin("initdb"), "-D", str(data), "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8", "--no-sync"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stderr.strip().splitlines()[-1:]}")
    Supervisor().start(name, prefix + [
        _pg_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
        "-k", str(data), "-c", "fsync=off", "-c", "full_page_writes=off",
    ], port=port, timeout=30)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"
