"""Container images without a registry: an offline base image, host-built wheelhouses, limits.

The course's machines (and classrooms behind one NAT that hit Docker Hub's pull limits) may
have a Docker engine but no image registry. Everything here works offline:

* the base image is ``$BASE_IMAGE`` (default the public ``python:3.11-slim``) or the
  offline ``mlops-course/base:bookworm`` that ``mlops-course image base`` builds from
  Debian packages (``scripts/build-base-image.sh``: debootstrap + ``docker import``);
* Python dependencies come from a wheelhouse the host downloads once (``pip download
  --only-binary=:all:`` for the container's Python and platform, pinned by
  ``requirements.lock``), and are installed with ``pip install --no-index``; builds run
  with ``network_mode="none"``, which proves nothing is fetched at build time;
* containers carry :func:`~course_helpers.supervisor.container_labels`, CPU and memory
  limits and loopback-only ports, so ``mlops-course cleanup`` always finds them.

>>> tag = build_image("mlops-course/demo:dev", ["psutil"], cmd=["python", "-c", "print(1)"])
>>> box = run_container("demo", tag, cpus=0.5, mem="256m", command=["sleep", "60"])
>>> read_cgroup_limits(box)
{'cpus': 0.5, 'memory_bytes': 268435456}
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from . import config
from .containers import client
from .errors import BinaryNotFoundError, CourseError
from .supervisor import LABEL_WORKSPACE, PROVIDERS, Supervisor, container_labels, tail

if TYPE_CHECKING:  # docker is imported lazily at run time
    from docker.models.containers import Container

OFFLINE_BASE_IMAGE = "mlops-course/base:bookworm"
PUBLIC_BASE_IMAGE = "python:3.11-slim"
BASE_IMAGE_ENV = "BASE_IMAGE"

#: The container's Python, and the newest glibc a wheel may require (Debian bookworm's).
PYTHON_VERSION = "3.11"
GLIBC = (2, 36)

LABEL_IMAGE = "org.mlops-course.image"
LABEL_CONTEXT = "org.mlops-course.context-hash"
LABEL_DEPS = "org.mlops-course.deps"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*$")


# base image ----------------------------------------------------------------------------
def base_image() -> str:
    """The base image to build on: ``$BASE_IMAGE``, else the public ``python:3.11-slim``."""
    return os.environ.get(BASE_IMAGE_ENV, "").strip() or PUBLIC_BASE_IMAGE


def image_exists(name: str) -> bool:
    """True when the engine has an image called ``name`` (no pull is attempted)."""
    import docker

    try:
        client().images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def _script() -> Path:
    root = config.repo_root()
    script = root / "scripts" / "build-base-image.sh" if root else None
    if script is None or not script.exists():
        raise CourseError(
            "scripts/build-base-image.sh was not found: building the offline base image needs "
            "a checkout of the course repository (git clone, then pip install -e .)."
        )
    return script


def build_base_image(name: str | None = None, force: bool = False, minimal: bool = False) -> str:
    """Build the offline base image from Debian packages (debootstrap) if it is missing.

    ``name`` defaults to ``$BASE_IMAGE``, else ``mlops-course/base:bookworm``. The script's
    progress goes to stderr and to ``<workspace>/logs/build-base-image.log``; the return
    value is the image name.
    """
    name = name or os.environ.get(BASE_IMAGE_ENV, "").strip() or OFFLINE_BASE_IMAGE
    repo = _repository(name)
    if "/" not in repo or repo.startswith(("docker.io/library/", "library/")):
        raise CourseError(
            f"refusing to give a Debian-built image the name of the public image {name!r}: "
            f"pass --name {OFFLINE_BASE_IMAGE} (or set BASE_IMAGE={OFFLINE_BASE_IMAGE})."
        )
    client()  # DockerUnavailableError first: without an engine nothing else matters
    if not force and image_exists(name):
        return name
    script = _script()
    if not config.find_binary("debootstrap"):
        raise BinaryNotFoundError(
            f"`debootstrap` was not found on PATH: install it from {PROVIDERS['debootstrap']}."
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise CourseError(
            "building the base image runs debootstrap, which needs root: run "
            "`sudo mlops-course image base`, or set BASE_IMAGE to an image you can pull."
        )
    log_path = config.workspace_dir("logs") / "build-base-image.log"
    cmd = ["bash", str(script), *(["--force"] if force else []),
           *(["--minimal"] if minimal else []), name]
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                sys.stderr.write(line.decode(errors="replace"))
            code = proc.wait()
        except BaseException:  # Ctrl-C: the script removes its temporary tree on SIGTERM
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=60)
            raise
    if code != 0 or not image_exists(name):
        raise CourseError(
            f"building the base image {name} failed (exit {code}); last lines of {log_path}:\n"
            f"{tail(log_path, 12)}"
        )
    return name


def ensure_base_image(name: str | None = None) -> str:
    """Make sure the base image ``name`` (default :func:`base_image`) exists; return it.

    The offline image is built when missing; any other image is pulled, and when that
    fails (no registry) the error says how to switch to the offline image.
    """
    import docker

    name = name or base_image()
    if image_exists(name):
        return name
    if name == OFFLINE_BASE_IMAGE:
        return build_base_image(name)
    try:
        client().images.pull(name)
        return name
    except docker.errors.DockerException as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CourseError(
            f"the base image {name} is not here and could not be pulled ({reason}); without "
            f"a registry, build the offline one with `mlops-course image base` and set "
            f"BASE_IMAGE={OFFLINE_BASE_IMAGE}."
        ) from None


# wheelhouse ----------------------------------------------------------------------------
def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_pins(path: str | Path | None = None) -> dict[str, str]:
    """``{normalised name: version}`` from ``requirements.lock`` (empty outside a checkout)."""
    if path is None:
        root = config.repo_root()
        if root is None:
            return {}
        path = root / "requirements.lock"
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    pins = {}
    for line in text.splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[normalise(m.group(1))] = m.group(2)
    return pins


def pin_requirements(requirements: Sequence[str],
                     pins: Mapping[str, str] | None = None) -> list[str]:
    """Pin each bare requirement (``"psutil"``) to the lock's version; keep the others."""
    pins = locked_pins() if pins is None else pins
    out = []
    for req in requirements:
        m = _REQ.match(req)
        if m and not m.group(3) and normalise(m.group(1)) in pins:
            out.append(f"{m.group(1)}{m.group(2) or ''}=={pins[normalise(m.group(1))]}")
        else:
            out.append(req.strip())
    return out


def engine_arch() -> str:
    """The engine's CPU architecture (``x86_64``, ``aarch64``), else this machine's."""
    try:
        arch = client().info().get("Architecture") or ""
    except CourseError:
        arch = ""
    arch = arch or platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch.lower(), arch.lower())


def manylinux_platforms(arch: str = "x86_64", glibc: tuple[int, int] = GLIBC) -> list[str]:
    """Wheel platform tags a Debian container with ``glibc`` can run, newest first."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc[1], 16, -1)]
    return tags + [f"manylinux2014_{arch}"]  # pip expands it to manylinux2010 and manylinux1


def wheelhouse(requirements: Sequence[str], dest: str | Path | None = None, *,
               python_version: str = PYTHON_VERSION, arch: str | None = None) -> Path:
    """Download wheels for the container's Python into a cached directory; return it.

    Bare requirements are pinned from ``requirements.lock``, and the lock constrains their
    dependencies, so images get the course's versions. The directory (default
    ``<workspace>/wheelhouse/<hash>``) holds the wheels and ``requirements.txt``; it is
    reused as long as the requirements, Python version, platform and lock are unchanged.
    """
    arch = arch or engine_arch()
    pins = locked_pins()
    reqs = pin_requirements(requirements, pins)
    explicit = {normalise(m.group(1)) for r in requirements
                if (m := _REQ.match(r)) and m.group(3)}
    constraints = "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()) if n not in explicit)
    platforms = manylinux_platforms(arch)
    key = hashlib.sha256(json.dumps(
        [reqs, python_version, platforms, constraints], sort_keys=True).encode()).hexdigest()[:16]
    dest = Path(dest) if dest else config.workspace_dir("wheelhouse") / key
    marker = dest / ".complete"
    if marker.exists() and marker.read_text().strip() == key:
        return dest
    if dest.is_dir() and not marker.exists() and any(dest.iterdir()):
        raise CourseError(f"{dest} is not empty and is not a wheelhouse: pick a new directory.")

    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "requirements.txt").write_text("".join(f"{r}\n" for r in reqs))
        (tmp / "constraints.txt").write_text(constraints)
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
               "--no-input", "--progress-bar", "off", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp",
               *[a for p in platforms for a in ("--platform", p)],
               "-c", str(tmp / "constraints.txt"), "-d", str(tmp), *reqs]
        env = dict(os.environ)
        env.pop("PIP_REQUIRE_VIRTUALENV", None)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise CourseError(
                f"pip could not download wheels for {', '.join(reqs)} (Python {python_version}, "
                f"manylinux {arch}). A package with no Linux wheel for this Python cannot be "
                f"installed offline: pin a version that has one. pip said:\n"
                + "\n".join(lines[-8:])
            )
        (tmp / "constraints.txt").unlink()
        (tmp / ".complete").write_text(key + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# images --------------------------------------------------------------------------------
def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "image"


def _repository(tag: str) -> str:
    """``registry/name`` without the ``:tag`` part."""
    return tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag


def _context_path(path: str) -> PurePosixPath:
    """Where a ``files`` key lands in the image: relative keys go under /app."""
    p = PurePosixPath(path)
    if ".." in p.parts or not p.parts or str(p) in ("/", "."):
        raise CourseError(f"files key {path!r} must be a file path without '..'")
    return p.relative_to("/") if p.is_absolute() else PurePosixPath("app") / p


def _label_line(labels: Mapping[str, str]) -> str:
    return "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())


def render_deps_dockerfile(base: str, requirements: Sequence[str], key: str) -> str:
    """The dependencies image: a venv in /opt/venv filled from ``wheels/``, no network."""
    install = (" \\\n && PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 /opt/venv/bin/pip "
               "install --no-index --find-links /wheels -r /wheels/requirements.txt"
               ) if requirements else ""
    return "\n".join([
        "# Generated by course_helpers.images.build_image: the app image copies /opt/venv",
        f"FROM {base}",
        _label_line({LABEL_DEPS: key}),
        "COPY wheels/ /wheels/",
        f"RUN python3 -m venv /opt/venv{install}",
    ]) + "\n"


def render_dockerfile(base: str, deps: str, *, has_files: bool = False,
                      cmd: Sequence[str] | None = None, user: str = "app",
                      labels: Mapping[str, str] | None = None,
                      last_labels: Mapping[str, str] | None = None) -> str:
    """The app image: base + the venv of the ``deps`` image + files, run as ``user``.

    ``labels`` come first (every intermediate image carries them, so a failed build can be
    cleaned up); ``last_labels`` come last, so changing them keeps the layer cache.
    """
    lines = [
        "# Generated by course_helpers.images.build_image",
        f"FROM {base}",
        *([_label_line(labels)] if labels else []),
        "ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 "
        "PYTHONDONTWRITEBYTECODE=1",
        f"RUN useradd --create-home --uid 10001 --user-group --shell /bin/sh {user}",
        f"COPY --from={deps} /opt/venv /opt/venv",
        *(["COPY files/ /"] if has_files else []),
        "WORKDIR /app",
        f"USER {user}",
        *([f"CMD {json.dumps(list(cmd))}"] if cmd else []),
        *([_label_line(last_labels)] if last_labels else []),
    ]
    return "\n".join(lines) + "\n"


def _write_files(root: Path, files: Mapping[str, bytes | str | Path]) -> None:
    for key, value in files.items():
        target = root / _context_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, Path):
            if value.is_dir():
                shutil.copytree(value, target, dirs_exist_ok=True)
            else:
                shutil.copy2(value, target)
        elif isinstance(value, bytes):
            target.write_bytes(value)
        else:
            target.write_text(value)


def _hash_tree(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0" + oct(path.stat().st_mode & 0o777).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _remove_dangling(label: str, value: str) -> None:
    """Remove untagged images carrying ``label=value`` (what a failed or replaced build left)."""
    docker_client = client()
    for image in docker_client.images.list(filters={"dangling": True, "label": f"{label}={value}"}):
        try:
            docker_client.images.remove(image.id)
        except Exception:
            pass  # a container or a concurrent build still uses it


def _build(context: Path, tag: str, label: str, value: str, what: str) -> None:
    """``docker build`` of ``context`` with no network; CourseError with the log tail."""
    import docker

    log_path = config.workspace_dir("logs") / f"build-{_safe(tag)}.log"
    error = None
    try:
        _, logs = client().images.build(path=str(context), tag=tag, network_mode="none",
                                        pull=False, rm=True, forcerm=True)
        log_text = "".join(chunk.get("stream", "") for chunk in logs)
    except docker.errors.BuildError as err:
        log_text = "".join(c.get("stream", "") or c.get("error", "") for c in err.build_log)
        error = err.msg
    except docker.errors.APIError as err:
        log_text, error = str(err), str(err.explanation or err)
    log_path.write_text(log_text)
    if error is not None:
        _remove_dangling(label, value)  # the steps that did succeed
        raise CourseError(
            f"building {what} failed: {str(error).strip()}. Last lines of {log_path}:\n"
            f"{tail(log_path, 15)}"
        )


def build_image(tag: str, requirements: Sequence[str],
                files: Mapping[str, bytes | str | Path] | None = None,
                cmd: Sequence[str] | None = None, base: str | None = None,
                *, user: str = "app") -> str:
    """Build ``tag`` offline: base image + venv from a host wheelhouse + ``files``; return tag.

    Two builds, both with no network: ``<repo>:deps-<hash>`` (a venv in /opt/venv,
    ``pip install --no-index`` from the wheelhouse; rebuilt only when the requirements or
    the base change) and ``tag`` (base + that venv + ``files``; the wheels never reach it).
    ``files`` maps a path in the image (relative paths land under ``/app``, the working
    directory) to bytes, text or a host Path (file or directory). The app runs as the
    non-root ``user``; ``python`` is the venv's. An unchanged build returns at once.
    """
    import docker

    base = ensure_base_image(base or base_image())
    docker_client = client()
    base_id = docker_client.images.get(base).id
    reqs = pin_requirements(requirements)
    repo = _repository(tag)

    wheels = wheelhouse(reqs) if reqs else None
    wheels_key = (wheels / ".complete").read_text().strip() if wheels else "none"
    deps_key = hashlib.sha256(json.dumps(
        [reqs, wheels_key, base_id, render_deps_dockerfile(base, reqs, "")]).encode()
    ).hexdigest()[:12]
    deps = f"{repo}:deps-{deps_key}"
    if not image_exists(deps):
        context = config.workspace_dir("build", _safe(deps))
        shutil.rmtree(context)
        (context / "wheels").mkdir(parents=True)
        for item in wheels.iterdir() if wheels else ():
            if not item.name.startswith("."):
                try:
                    os.link(item, context / "wheels" / item.name)
                except OSError:
                    shutil.copy2(item, context / "wheels" / item.name)
        (context / "Dockerfile").write_text(render_deps_dockerfile(base, reqs, deps_key))
        _build(context, deps, LABEL_DEPS, deps_key, f"the dependencies of {tag}")
        shutil.rmtree(context, ignore_errors=True)  # wheels are cached in the wheelhouse

    context = config.workspace_dir("build", _safe(tag))
    shutil.rmtree(context)
    context.mkdir(parents=True)
    if files:
        _write_files(context / "files", files)
    options = dict(has_files=bool(files), cmd=cmd, user=user)
    context_hash = hashlib.sha256(
        (render_dockerfile(base, deps, **options) + _hash_tree(context) + base_id).encode()
    ).hexdigest()[:16]
    (context / "Dockerfile").write_text(render_dockerfile(
        base, deps, labels={LABEL_IMAGE: tag}, last_labels={LABEL_CONTEXT: context_hash},
        **options))
    old = None
    try:
        old = docker_client.images.get(tag)
        if old.labels.get(LABEL_CONTEXT) == context_hash:
            return tag
    except docker.errors.ImageNotFound:
        pass

    _build(context, tag, LABEL_IMAGE, tag, tag)
    _remove_dangling(LABEL_IMAGE, tag)  # the image this build replaced, if unused
    for image in docker_client.images.list(name=repo):  # deps of older requirements
        for other in image.tags:
            if other.startswith(f"{repo}:deps-") and other != deps:
                try:
                    docker_client.images.remove(other)
                except docker.errors.APIError:
                    pass
    return tag


# containers ----------------------------------------------------------------------------
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
