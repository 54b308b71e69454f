"""The Docker engine, when there is one: a client with one readable error when there is not."""

from __future__ import annotations

import functools

from .errors import DockerUnavailableError

NO_ENGINE = (
    "No Docker engine answered ({reason}); start Docker, or use the local backend "
    "(--backend local), which runs the same servers as plain processes."
)


@functools.lru_cache(maxsize=1)
def client():
    """A ``docker.DockerClient`` that has answered a ping, or DockerUnavailableError."""
    try:
        import docker
        import requests
    except ImportError as err:  # pragma: no cover - docker is a core dependency
        raise DockerUnavailableError(NO_ENGINE.format(reason=f"missing {err.name}")) from None
    try:
        # Removing or committing a large image on a busy engine can take over 30 s.
        c = docker.from_env(version="auto", timeout=120)
        c.ping()
        return c
    except (docker.errors.DockerException, requests.exceptions.ConnectionError, OSError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise DockerUnavailableError(NO_ENGINE.format(reason=reason)) from None


def available() -> bool:
    """True when a Docker engine answers."""
    try:
        client()
        return True
    except DockerUnavailableError:
        return False


def engine_version() -> str | None:
    try:
        return client().version().get("Version")
    except Exception:
        return None
