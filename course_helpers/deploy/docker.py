"""The Docker backend: one container per replica, nginx on the host in front.

Each replica is a container of the course's serving image (built offline, once: see
:func:`serving_image`) with the spec's CPU and memory limits (``nano_cpus``, ``mem_limit``),
a health check on ``/ready``, the restart policy ``on-failure`` (a crashed replica comes
back by itself, like the local backend's watchdog), labels that ``mlops-course cleanup``
finds, and its port published on 127.0.0.1 only. The model directory is mounted read-only
at ``/model``. All replicas of a deployment share a labelled user-defined network.

    backend = DockerBackend()
    dep = backend.up(DeploymentSpec.many_small(model_dir, replicas=2))
    backend.scale(dep, 1)          # nginx reloads first, then the replica drains and stops
    backend.kill_replica(dep, 0)   # SIGKILL: Docker restarts it, nginx routes around it
    backend.down(dep)

The recipe of the container (image requirements, command, environment, probes) lives in
:mod:`course_helpers.deploy.recipe`, shared with the local backend and with
:mod:`course_helpers.deploy.manifests`; its names are re-exported here.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .. import config
from ..errors import CourseError
from ..monitoring.discovery import register_deployment, unregister_deployment
from ..readiness import probe, wait_until_ready
from .base import Deployment, Replica
from .recipe import (CONTAINER_PORT, HEALTHCHECK_INTERVAL_S, HEALTHCHECK_RETRIES,  # noqa: F401
                     HEALTHCHECK_START_S, HEALTHCHECK_TIMEOUT_S, IMAGE_REPOSITORY, MODEL_MOUNT,
                     READY_PROBE, SERVER_MODULES, SERVING_REQUIREMENTS, _course_imports,
                     container_env, gunicorn_command, healthcheck, image_key, is_registry_uri,
                     package_files)
from .spec import DeploymentSpec, SpecError

if TYPE_CHECKING:  # docker is imported lazily
    from docker.models.containers import Container

LABEL_DEPLOYMENT = "org.mlops-course.deployment"

#: Kills the gunicorn master from inside its container: the child of the init process
#: (``init=True``); for engines whose host cannot signal the container's processes.
KILL_MASTER = (
    "import os, signal\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        stat = open(f'/proc/{pid}/stat').read()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if stat.rsplit(')', 1)[1].split()[1] == '1':\n"
    "        os.kill(int(pid), signal.SIGKILL)\n"
)


# the image -------------------------------------------------------------------------------
def serving_image(base: str | None = None, verbose: bool = False) -> str:
    """Build the serving image offline if needed; return its tag.

    The tag is a hash of the base image, the pinned requirements and the package sources:
    an unchanged recipe returns at once, without a wheelhouse or a build. Missing base
    image: the error says what to run (``mlops-course image base``).
    """
    from .. import images

    client = images.client()  # DockerUnavailableError, one sentence, when no engine answers
    base = base or images.base_image()
    try:
        base = images.ensure_base_image(base)
    except CourseError as err:
        if base != images.OFFLINE_BASE_IMAGE:
            raise
        raise CourseError(
            f"the offline base image {base} is missing and could not be built ({err}); "
            f"run `sudo mlops-course image base` once, then try again.") from None
    base_id = client.images.get(base).id
    reqs = images.pin_requirements(list(SERVING_REQUIREMENTS))
    files = package_files()
    tag = f"{IMAGE_REPOSITORY}:{image_key(base, base_id, reqs, files)}"
    if images.image_exists(tag):
        return tag
    started = time.monotonic()
    if verbose:
        print(f"building {tag} on {base} (offline; the first build takes a few minutes, "
              "later ones reuse the dependency layers)...")
    # One fixed build tag keeps Docker's layer cache: a changed source file only redoes
    # the last COPY. The content-hash tag is added afterwards and is what containers run.
    latest = f"{IMAGE_REPOSITORY}:latest"
    images.build_image(latest, reqs, files=files, base=base, cmd=gunicorn_command(1))
    client.images.get(latest).tag(IMAGE_REPOSITORY, tag.rsplit(":", 1)[1])
    _remove_old_tags(keep=tag)
    if verbose:
        print(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def _remove_old_tags(keep: str) -> None:
    """Drop earlier hash tags of the serving image that no container uses."""
    import docker

    from ..containers import client

    c = client()
    for image in c.images.list(name=IMAGE_REPOSITORY):
        for tag in image.tags:
            version = tag.rsplit(":", 1)[-1]
            if tag != keep and version != "latest" and not version.startswith("deps-"):
                try:
                    c.images.remove(tag)
                except docker.errors.APIError:
                    pass  # in use by a container


# the backend -----------------------------------------------------------------------------
def _probe(url: str, timeout: float = 1.0) -> bool:
    return bool(probe(url, expect=200, timeout=timeout))


def _running(box: Container) -> bool:
    """False once a container exited, died, or restarted more than twice while starting."""
    box.reload()
    return box.attrs["State"].get("Status") not in ("exited", "dead") \
        and box.attrs.get("RestartCount", 0) <= 2


class DockerBackend:
    """Replicas as containers with CPU/memory limits; nginx on the host balances them."""

    name = "docker"

    def __init__(self, base_image: str | None = None, ready_timeout_s: float = 120.0,
                 verbose: bool = True) -> None:
        self.base_image = base_image
        self.ready_timeout_s = ready_timeout_s
        self.verbose = verbose
        self._image: str | None = None

    # helpers ---------------------------------------------------------------------------
    def image(self) -> str:
        """The serving image (built once, then cached by content hash)."""
        if self._image is None:
            self._image = serving_image(self.base_image, verbose=self.verbose)
        return self._image

    @staticmethod
    def _client():
        from ..containers import client

        return client()

    @staticmethod
    def _lb(spec: DeploymentSpec, url: str | None = None):
        from .nginx import LoadBalancer

        port = urlparse(url).port if url else None
        return LoadBalancer(f"{spec.name}-lb", port=port)

    @staticmethod
    def _upstreams(spec: DeploymentSpec, replicas: list[Replica]):
        from .nginx import Server, Upstream

        return [Upstream(_upstream_name(spec.name),
                         [Server(r.url.removeprefix("http://"), spec.weight) for r in replicas])]

    def _labelled(self, spec: DeploymentSpec) -> list[Container]:
        from ..supervisor import LABEL_WORKSPACE

        flt = {"label": [f"{LABEL_DEPLOYMENT}={spec.name}",
                         f"{LABEL_WORKSPACE}={config.workspace()}"]}
        return self._client().containers.list(all=True, filters=flt)

    def _model_dir(self, spec: DeploymentSpec) -> str | None:
        """The host directory to mount, or None when the replicas load from a registry."""
        path = Path(spec.model_uri).expanduser()
        if path.is_dir():
            if not (path / "MLmodel").exists():
                raise SpecError(f"{path} is not an MLflow model directory (no MLmodel file).")
            return str(path.resolve())
        if spec.model_uri.startswith(("models:/", "runs:/")):
            return self._download(spec.model_uri)
        if is_registry_uri(spec.model_uri):
            return None  # a remote URL the containers can reach themselves
        raise SpecError(f"model {spec.model_uri!r} is neither a local MLflow model directory "
                        "nor a models:/ or runs:/ URI.")

    @staticmethod
    def _download(uri: str) -> str:
        """Copy a registry model to the workspace: the containers cannot see the host's store."""
        from ..tracking import copy_model

        key = hashlib.sha256(uri.encode()).hexdigest()[:10]
        dest = config.workspace_dir("deploy", "models", key)
        shutil.rmtree(dest)  # an alias may point to a new version since the last time
        return str(copy_model(uri, dest))

    def _check(self, spec: DeploymentSpec) -> None:
        if spec.cache == "redis":
            raise SpecError("the docker backend runs each replica's cache in process: use "
                            "cache='lru' or 'none' (a shared Redis is a lesson-01 local setup).")
        if spec.db:
            raise SpecError("the docker backend does not log predictions to a host database: "
                            "set db=None (containers cannot write the host's SQLite file).")
        ncpu = float(self._client().info().get("NCPU") or config.cpu_limit())
        spec.validate(machine_cpus=min(ncpu, config.cpu_limit()))

    def _start(self, spec: DeploymentSpec, index: int, image: str,
               model_dir: str | None) -> tuple[Replica, Container]:
        from .. import images
        from ..supervisor import free_port

        name = f"{spec.name}-r{index}"  # the local backend's names
        port = free_port()  # fixed: a restarted container keeps its host port
        box = images.run_container(
            name, image, cpus=spec.cpus_per_replica, mem=f"{spec.memory_mb_per_replica}m",
            ports={CONTAINER_PORT: port}, command=gunicorn_command(spec.workers_per_replica),
            network=f"{spec.name}-net", healthcheck=healthcheck(),
            environment={**container_env(spec, model_uri=MODEL_MOUNT if model_dir else None),
                         "MLOPS_REPLICA": name},
            init=True,
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 10},
            volumes=({model_dir: {"bind": MODEL_MOUNT, "mode": "ro"}} if model_dir else None),
            labels={LABEL_DEPLOYMENT: spec.name}, stop_signal="SIGTERM",
        )
        replica = Replica(name=name, url=f"http://127.0.0.1:{port}",
                          pid=box.attrs["State"].get("Pid") or None, container_id=box.id)
        return replica, box

    def _wait_ready(self, pairs: list[tuple[Replica, Container]]) -> None:
        """Wait until every replica answers /ready (HTTP 200) from the host; a clear error
        naming the replica, its URL and its last log lines otherwise. They start side by
        side, so waiting for one after another takes as long as the slowest."""
        deadline = time.monotonic() + self.ready_timeout_s
        for replica, box in pairs:
            wait_until_ready(replica.url + "/ready", max(0.0, deadline - time.monotonic()),
                             expect=200, proc=lambda box=box: _running(box),
                             log=lambda box=box: _logs(box), name=f"replica {replica.name}")
        for replica, box in pairs:  # the host pid of a container is known once it runs
            box.reload()
            replica.pid = box.attrs["State"].get("Pid") or replica.pid

    def _start_many(self, spec: DeploymentSpec, indices: list[int]) -> list[Replica]:
        image = self.image()
        model_dir = self._model_dir(spec)
        pairs: list[tuple[Replica, Container]] = []
        try:
            for i in indices:
                pairs.append(self._start(spec, i, image, model_dir))
            self._wait_ready(pairs)
        except BaseException:
            for replica, _ in pairs:
                self._remove(replica, graceful=False)
            raise
        return [r for r, _ in pairs]

    def _remove(self, replica: Replica, graceful: bool = True, timeout: int = 10) -> None:
        import docker

        from ..supervisor import Supervisor

        try:
            box = self._client().containers.get(replica.container_id or replica.name)
            if graceful:
                box.stop(timeout=timeout)  # SIGTERM: gunicorn finishes in-flight requests
            box.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            pass
        Supervisor().stop(replica.name)  # drops the record (and the container if still there)

    # the protocol ----------------------------------------------------------------------
    def up(self, spec: DeploymentSpec) -> Deployment:
        """Start ``spec.replicas`` containers, wait until each answers ``/ready``, then
        start nginx in front of their 127.0.0.1 ports. A leftover deployment with the same
        name in this workspace (from a killed kernel) is removed first."""
        self._check(spec)
        self._remove_leftovers(spec)
        replicas = self._start_many(spec, list(range(spec.replicas)))
        lb = self._lb(spec)
        try:
            lb.start(self._upstreams(spec, replicas))
        except BaseException:
            for r in replicas:
                self._remove(r, graceful=False)
            raise
        dep = Deployment(spec=spec, backend=self.name, replicas=replicas, url=lb.url)
        register_deployment(dep)  # Prometheus scrapes every replica's host port (file_sd)
        return dep

    def status(self, dep: Deployment) -> list[dict]:
        """One row per replica: container state and health, restarts, limits, ready."""
        import docker

        rows = []
        for r in dep.replicas:
            row: dict[str, Any] = {"replica": r.name, "url": r.url}
            try:
                box = self._client().containers.get(r.container_id or r.name)
                attrs = box.attrs
                host = attrs["HostConfig"]
                row.update(
                    container=box.short_id, state=attrs["State"]["Status"],
                    health=(attrs["State"].get("Health") or {}).get("Status"),
                    restarts=attrs.get("RestartCount", 0), pid=attrs["State"].get("Pid") or None,
                    alive=attrs["State"]["Status"] == "running",
                    cpu_limit=host.get("NanoCpus", 0) / 1e9 or None,
                    memory_limit_mb=(host.get("Memory") or 0) // 2**20 or None)
            except docker.errors.NotFound:
                row.update(container=None, state="missing", health=None, restarts=None,
                           alive=False)
            row["ready"] = _probe(r.url + "/ready")
            rows.append(row)
        return rows

    def scale(self, dep: Deployment, replicas: int) -> Deployment:
        """Change the number of replicas; nginx reloads (SIGHUP), nothing restarts.

        Scaling out starts the new containers and adds them once they are ready; scaling
        in takes replicas out of nginx first, then stops them gracefully (SIGTERM, drain).
        """
        spec = DeploymentSpec(**{**vars(dep.spec), "replicas": replicas})
        spec.validate(machine_cpus=min(float(self._client().info().get("NCPU") or 1),
                                       config.cpu_limit()))
        lb = self._lb(dep.spec, dep.url)
        current = list(dep.replicas)
        if replicas > len(current):
            used = {int(r.name.rsplit("-r", 1)[-1]) for r in current}
            free = [i for i in range(replicas + len(current)) if i not in used]
            added = self._start_many(spec, free[:replicas - len(current)])
            current += added
            lb.update(self._upstreams(spec, current))
        elif replicas < len(current):
            keep, gone = current[:replicas], current[replicas:]
            lb.update(self._upstreams(spec, keep))  # new requests stop going there
            for r in gone:
                self._remove(r, graceful=True)
            current = keep
        dep.spec, dep.replicas = spec, current
        register_deployment(dep)
        return dep

    def kill_replica(self, dep: Deployment, index: int = 0) -> Replica:
        """Crash one replica: SIGKILL its container's main process from the host.

        The engine did not ask for it, so the restart policy (``on-failure``) restarts the
        container; meanwhile nginx sends requests to the other replicas. Where the host
        cannot signal the process (Docker Desktop's VM, or not root), the gunicorn master
        is killed from inside the container instead, with the same effect.
        """
        replica = dep.replicas[index]
        box = self._client().containers.get(replica.container_id or replica.name)
        box.reload()
        pid = box.attrs["State"].get("Pid")
        try:
            if not pid:
                raise ProcessLookupError
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            out = box.exec_run(["python", "-c", KILL_MASTER], user="root")
            if out.exit_code not in (0, None, 137):
                raise CourseError(f"could not kill {replica.name}: "
                                  f"{out.output.decode(errors='replace').strip()}") from None
        return replica

    def wait_ready(self, dep: Deployment, timeout: float = 60.0) -> float:
        """Wait until every replica answers ``/ready`` again; return the seconds it took."""
        start = time.monotonic()
        for r in dep.replicas:
            wait_until_ready(r.url + "/ready", max(0.0, timeout - (time.monotonic() - start)),
                             expect=200, name=f"{dep.spec.name} replica {r.name}")
        return time.monotonic() - start

    def down(self, dep: Deployment) -> None:
        """Stop nginx, then every container of the deployment, then its network."""
        unregister_deployment(dep)
        self._lb(dep.spec, dep.url).stop()
        known = {r.container_id for r in dep.replicas}
        replicas = list(dep.replicas) + [
            Replica(name=box.labels.get("org.mlops-course.name", box.name), url="",
                    container_id=box.id)
            for box in self._labelled(dep.spec) if box.id not in known]
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda r: self._remove(r, graceful=True, timeout=5), replicas))
        self._remove_network(dep.spec)
        dep.replicas = []

    # leftovers -------------------------------------------------------------------------
    def _remove_leftovers(self, spec: DeploymentSpec) -> None:
        from ..supervisor import Supervisor

        rec = Supervisor().get(f"{spec.name}-lb")
        if rec is not None:
            self._lb(spec, rec.url).stop()
        for box in self._labelled(spec):
            self._remove(Replica(name=box.labels.get("org.mlops-course.name", box.name),
                                 url="", container_id=box.id), graceful=False)

    def _remove_network(self, spec: DeploymentSpec) -> None:
        import docker

        from ..images import container_name

        for net in self._client().networks.list(names=[container_name(f"{spec.name}-net")]):
            try:
                net.remove()
            except docker.errors.APIError:
                pass


def _upstream_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "model"


def _logs(box: Container, lines: int = 15) -> str:
    try:
        return box.logs(tail=lines).decode(errors="replace").rstrip()
    except Exception:
        return "(no logs)"
