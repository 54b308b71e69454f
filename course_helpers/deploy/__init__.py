"""Deployments of the lesson-01 model server: one spec, a local and a Docker backend, nginx.

    from course_helpers.deploy import DeploymentSpec, get_backend
    backend = get_backend("auto")          # docker when an engine answers, local otherwise
    dep = backend.up(DeploymentSpec.many_small(model_uri, replicas=2))
    ...
    backend.down(dep)
"""

from __future__ import annotations

from .base import Backend, Deployment, Replica, crash_and_recover
from .spec import DeploymentSpec, SpecError

BACKENDS = ("auto", "local", "docker")


def get_backend(name: str = "auto", *, verbose: bool = True) -> Backend:
    """``local``, ``docker``, or ``auto`` (docker when an engine answers; says which)."""
    if name not in BACKENDS:
        raise SpecError(f"unknown backend {name!r}: choose {', '.join(BACKENDS)}")
    if name == "auto":
        from ..containers import available

        name = "docker" if available() else "local"
        if verbose:
            print(f"backend: {name} ({'a Docker engine answered' if name == 'docker' else 'no Docker engine: local processes'})")
    if name == "docker":
        from .docker import DockerBackend

        return DockerBackend()
    from .local import LocalBackend

    return LocalBackend(verbose=verbose)


__all__ = ["Backend", "Deployment", "DeploymentSpec", "Replica", "SpecError", "crash_and_recover",
           "get_backend"]
