"""Running containers with limits, labels and loopback-only ports; reading the limits back."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import config
from ..containers import client
from ..errors import CourseError
from ..supervisor import LABEL_WORKSPACE, Supervisor, container_labels
from .base import OFFLINE_BASE_IMAGE, _safe, image_exists

if TYPE_CHECKING:  # docker is imported lazily at run time
    from docker.models.containers import Container


def _workspace_suffix() -> str:
    return hashlib.sha256(str(config.workspace()).encode()).hexdigest()[:8]


def container_name(name: str) -> str:
    """The engine-wide container name for ``name`` (unique per workspace)."""
    return f"mlops-{_safe(name)}-{_workspace_suffix()}"


def ensure_network(name: str) -> str:
    """A labelled user-defined bridge network for this workspace; returns its engine name."""
    net_name = container_name(name)
    docker_client = client()
    if not docker_client.networks.list(names=[net_name]):
        docker_client.networks.create(net_name, driver="bridge", labels=container_labels(name))
    return net_name


def _healthcheck(check: Mapping[str, Any] | Sequence[str] | str | None) -> dict | None:
    if check is None or isinstance(check, Mapping):
        return dict(check) if check else None
    test = ["CMD-SHELL", check] if isinstance(check, str) else ["CMD", *check]
    second = 1_000_000_000  # the engine counts in nanoseconds
    return {"test": test, "interval": second, "timeout": 3 * second, "retries": 30,
            "start_period": second}


def run_container(name: str, image: str, *, cpus: float, mem: str | int,
                  ports: Mapping[int | str, int | None] | Sequence[int] | None = None,
                  command: Sequence[str] | str | None = None, network: str | None = None,
                  healthcheck: Mapping[str, Any] | Sequence[str] | str | None = None,
                  environment: Mapping[str, str] | None = None,
                  **kwargs: Any) -> Container:
    """Start a detached, labelled, resource-limited container and record it; return it.

    ``cpus`` becomes ``nano_cpus``, ``mem`` (``"256m"`` or bytes) ``mem_limit``. ``ports``
    maps container ports to host ports (None: any free one), always bound to 127.0.0.1.
    ``network`` is a course network name (created, labelled, per workspace); the container
    answers to ``name`` on it. ``healthcheck`` is a docker healthcheck dict (times in ns) or
    a command (string: shell; list: exec) checked every second. Other keyword arguments go
    to ``containers.run``. ``mlops-course cleanup`` removes the container.
    """
    import docker
    from docker.types import EndpointConfig

    docker_client = client()
    if not image_exists(image):  # containers.run would try a pull, which cannot work here
        raise CourseError(
            f"image {image} is not here: build it with course_helpers.images.build_image "
            f"(or `mlops-course image base` for {OFFLINE_BASE_IMAGE}); there is no registry."
        )
    engine_name = container_name(name)
    try:  # a leftover from a killed session of this workspace: replace it
        stale = docker_client.containers.get(engine_name)
        if stale.labels.get(LABEL_WORKSPACE) == str(config.workspace()):
            stale.remove(force=True)
    except docker.errors.NotFound:
        pass

    if isinstance(ports, Mapping):
        port_map = {str(k) if "/" in str(k) else f"{k}/tcp": ("127.0.0.1", v)
                    for k, v in ports.items()}
    else:
        port_map = {f"{p}/tcp": ("127.0.0.1", None) for p in ports or ()}
    options: dict[str, Any] = dict(
        name=engine_name, detach=True, labels=container_labels(name),
        nano_cpus=int(round(cpus * 1e9)), mem_limit=mem, ports=port_map or None,
        environment=dict(environment or {}), hostname=_safe(name),
    )
    if command is not None:
        options["command"] = command
    if healthcheck is not None:
        options["healthcheck"] = _healthcheck(healthcheck)
    if network:
        net = ensure_network(network)
        options["network"] = net
        options["networking_config"] = {
            net: EndpointConfig(docker_client.api._version, aliases=[name])}
    options["labels"] = {**kwargs.pop("labels", {}), **options["labels"]}
    options.update(kwargs)
    try:
        box = docker_client.containers.run(image, **options)
    except docker.errors.APIError as err:
        raise CourseError(f"could not start container {name}: {err.explanation or err}") from None
    box.reload()
    host_port = None
    for bindings in (box.ports or {}).values():
        if bindings:
            host_port = int(bindings[0]["HostPort"])
            break
    Supervisor().record_container(name, box.id, port=host_port)
    return box


def host_port(box: Container, port: int | str) -> int:
    """The 127.0.0.1 port the engine bound for the container's ``port``."""
    box.reload()
    key = str(port) if "/" in str(port) else f"{port}/tcp"
    bindings = (box.ports or {}).get(key)
    if not bindings:
        raise CourseError(f"container {box.name} publishes no port {key}")
    return int(bindings[0]["HostPort"])


def wait_healthy(box: Container, timeout: float = 60.0) -> float:
    """Wait until the container's healthcheck passes; return the seconds it took."""
    start = time.monotonic()
    while True:
        box.reload()
        state = box.attrs.get("State", {})
        health = (state.get("Health") or {}).get("Status")
        if health == "healthy":
            return time.monotonic() - start
        if state.get("Status") in ("exited", "dead") or health == "unhealthy" \
                or time.monotonic() - start > timeout:
            logs = box.logs(tail=15).decode(errors="replace")
            raise CourseError(
                f"container {box.name} is {health or state.get('Status')} after "
                f"{time.monotonic() - start:.0f} s. Last log lines:\n{logs}"
            )
        time.sleep(0.3)


_CGROUP_FILES = (
    "/sys/fs/cgroup/cpu.max",
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
)


def parse_cgroup_limits(files: Mapping[str, str]) -> dict[str, float | int | None]:
    """``{"cpus", "memory_bytes"}`` from cgroup v2 or v1 file contents (None: unlimited)."""
    cpus: float | None = None
    memory: int | None = None
    if "/sys/fs/cgroup/cpu.max" in files:
        quota, _, period = files["/sys/fs/cgroup/cpu.max"].partition(" ")
        if quota != "max":
            cpus = int(quota) / int(period)
    elif files.get("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1") not in ("-1", ""):
        cpus = (int(files["/sys/fs/cgroup/cpu/cpu.cfs_quota_us"])
                / int(files["/sys/fs/cgroup/cpu/cpu.cfs_period_us"]))
    raw = files.get("/sys/fs/cgroup/memory.max",
                    files.get("/sys/fs/cgroup/memory/memory.limit_in_bytes", "max"))
    if raw not in ("max", "") and int(raw) < 2**62:  # v1 reports "unlimited" as ~2**63
        memory = int(raw)
    return {"cpus": round(cpus, 4) if cpus is not None else None, "memory_bytes": memory}


def read_cgroup_limits(box: Container) -> dict[str, float | int | None]:
    """The CPU and memory limits as the running container sees them (its cgroup files)."""
    script = "; ".join(f'[ -r {f} ] && echo "{f}=$(cat {f})"' for f in _CGROUP_FILES) + "; true"
    result = box.exec_run(["sh", "-c", script], user="root")
    if result.exit_code != 0:
        raise CourseError(f"could not read cgroup files in {box.name}: {result.output!r}")
    files = {}
    for line in result.output.decode().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            files[key.strip()] = value.strip()
    return parse_cgroup_limits(files)
