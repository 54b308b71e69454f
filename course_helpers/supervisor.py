"""Start, watch and stop everything the helpers launch: processes and containers.

Every process is started in its own session (process group) with its output in
``<workspace>/logs/<name>.log`` and a record in ``<workspace>/run/<name>.json``.
Because the records live on disk, :func:`cleanup` can stop whatever the helpers
ever started, even after the Python process that started it was SIGKILLed.
Containers carry the labels from :func:`container_labels` for the same reason.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import config, readiness
from .errors import BinaryNotFoundError, CourseError, PortInUseError, ReadinessTimeoutError
from .readiness import tail  # noqa: F401  (images/ import it from here)

ENV_TAG = "MLOPS_SUPERVISED"
LABEL_MANAGED = "org.mlops-course.managed"
LABEL_WORKSPACE = "org.mlops-course.workspace"
LABEL_NAME = "org.mlops-course.name"

# Where each binary comes from, for the "binary missing" error.
PROVIDERS: dict[str, str] = {
    "nginx": "the Debian package `nginx` (sudo apt-get install nginx)",
    "redis-server": "the Debian package `redis-server` (sudo apt-get install redis-server)",
    "postgres": "the Debian package `postgresql`",
    "debootstrap": "the Debian package `debootstrap`",
    "prometheus": "the Debian package `prometheus`",
    "docker": "Docker Engine (https://docs.docker.com/engine/install/)",
    "mlflow": "the pip package `mlflow` (pip install -e . from the course repo)",
    "gunicorn": "the pip package `gunicorn` (pip install -e . from the course repo)",
    "locust": "the pip package `locust` (pip install -e . from the course repo)",
    "jupyter": "the pip package `jupyterlab` (pip install -e . from the course repo)",
    "nbgrader": "the pip package `nbgrader` (pip install -e . from the course repo)",
}


@dataclasses.dataclass
class Managed:
    """A record of one supervised process or container."""

    name: str
    kind: str  # "process" or "container"
    pid: int | None = None
    create_time: float | None = None
    container_id: str | None = None
    cmd: list[str] = dataclasses.field(default_factory=list)
    port: int | None = None
    url: str | None = None
    log: str | None = None
    started_at: float = dataclasses.field(default_factory=time.time)
    owner_pid: int = dataclasses.field(default_factory=os.getpid)

    def is_alive(self) -> bool:
        if self.kind == "container":
            return _container_running(self.container_id)
        return _process(self.pid, self.create_time) is not None

    def log_tail(self, lines: int = 15) -> str:
        return tail(self.log, lines) if self.log else ""


def container_labels(name: str) -> dict[str, str]:
    """Labels every container and network the helpers create must carry."""
    return {LABEL_MANAGED: "true", LABEL_WORKSPACE: str(config.workspace()), LABEL_NAME: name}


def _process(pid: int | None, create_time: float | None):
    """The psutil process if ``pid`` still runs the process we started, else None."""
    import psutil

    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return None  # the pid was reused by someone else
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _container_running(container_id: str | None) -> bool:
    if not container_id:
        return False
    try:
        from .containers import client

        return client().containers.get(container_id).status in ("created", "running", "restarting")
    except Exception:
        return False


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on the port (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


_HANDED_OUT: dict[int, float] = {}  # port -> when free_port gave it (this process)
_HANDED_OUT_LOCK = threading.Lock()
_HANDED_OUT_S = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, and not one this process handed out in the
    last two minutes (replicas started side by side each ask before any of them binds, and
    the kernel may offer a just-released port twice)."""
    with _HANDED_OUT_LOCK:
        now = time.monotonic()
        for p, when in list(_HANDED_OUT.items()):
            if now - when > _HANDED_OUT_S:
                del _HANDED_OUT[p]
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if port not in _HANDED_OUT:
                break
        _HANDED_OUT[port] = now
        return port


def _who_listens(port: int) -> str:
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    proc = psutil.Process(conn.pid)
                    return f" by pid {conn.pid} ({' '.join(proc.cmdline()[:3])})"
    except Exception:
        pass
    return ""


def _target(port: int | None, url: str | None, host: str = "127.0.0.1") -> str | None:
    return url or (f"tcp://{host}:{port}" if port else None)


def probe(port: int | None = None, url: str | None = None, host: str = "127.0.0.1") -> bool:
    """True when the port accepts a connection or the URL answers below 500
    (:func:`.readiness.probe`)."""
    target = _target(port, url, host)
    return True if target is None else bool(readiness.probe(target))


def wait_ready(
    name: str,
    *,
    port: int | None = None,
    url: str | None = None,
    timeout: float = 30.0,
    alive: Callable[[], bool] = lambda: True,
    log_tail: Callable[[], str] = lambda: "",
    exit_code: Callable[[], int | None] = lambda: None,
) -> float:
    """Poll until ready; returns the seconds it took (:func:`.readiness.wait_until_ready`)."""
    target = _target(port, url)
    if target is None:
        return 0.0
    if not alive():  # dead before the first probe: report its exit code
        raise ReadinessTimeoutError(f"{name} exited (code {exit_code()}) before {target} was "
                                    f"ready. Last log lines:\n{log_tail()}")
    return readiness.wait_until_ready(target, timeout, proc=alive, log=log_tail, name=name)


class Supervisor:
    """Starts processes, waits for them, records them on disk, stops them.

    >>> sup = Supervisor()
    >>> srv = sup.start("web", ["python", "-m", "http.server", "8765"], port=8765)
    >>> sup.stop("web")
    """

    def __init__(self, workspace: Path | None = None) -> None:
        self.workspace = Path(workspace) if workspace else config.workspace()
        self.run_dir = self.workspace / "run"
        self.log_dir = self.workspace / "logs"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen] = {}

    # records -----------------------------------------------------------------
    def _record_path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.run_dir / f"{safe}.json"

    def _save(self, rec: Managed) -> None:
        path = self._record_path(rec.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(rec), indent=1))
        tmp.replace(path)

    def records(self) -> list[Managed]:
        out = []
        for path in sorted(self.run_dir.glob("*.json")):
            try:
                out.append(Managed(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
        return out

    def get(self, name: str) -> Managed | None:
        path = self._record_path(name)
        if not path.exists():
            return None
        try:
            return Managed(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            return None

    def status(self) -> list[dict]:
        """One dict per record: name, kind, pid or container, port, alive."""
        return [
            {"name": r.name, "kind": r.kind, "pid": r.pid, "container": r.container_id,
             "port": r.port, "alive": r.is_alive(), "log": r.log}
            for r in self.records()
        ]

    # processes ---------------------------------------------------------------
    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        port: int | None = None,
        url: str | None = None,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stop_on_exit: bool = True,
    ) -> Managed:
        """Start ``cmd`` as ``name`` and wait until ``port`` accepts or ``url`` answers.

        Raises PortInUseError, BinaryNotFoundError or ReadinessTimeoutError
        (the process is stopped before the error is raised).
        """
        cmd = [str(c) for c in cmd]
        existing = self.get(name)
        if existing and existing.is_alive():
            raise CourseError(
                f"{name} is already running (pid {existing.pid}); stop it with "
                f"`mlops-course cleanup` or choose another name."
            )
        if port is not None and port_in_use(port):
            raise PortInUseError(
                f"port {port} on 127.0.0.1 is already in use{_who_listens(port)}: "
                f"stop that process (`mlops-course cleanup` stops the course's own) "
                f"or pick another port."
            )
        exe = cmd[0] if os.sep in cmd[0] else config.find_binary(cmd[0])
        if not exe or not os.path.exists(exe):
            base = os.path.basename(cmd[0])
            hint = PROVIDERS.get(base, "your package manager")
            raise BinaryNotFoundError(f"`{base}` was not found on PATH: install it from {hint}.")
        cmd[0] = exe

        log_path = self.log_dir / f"{self._record_path(name).stem}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env[ENV_TAG] = f"{self.workspace}::{name}"
        # Child processes find the venv's tools (nbgrader runs alembic, etc.).
        bindir = str(Path(os.sys.executable).parent)
        if bindir not in full_env.get("PATH", "").split(os.pathsep):
            full_env["PATH"] = bindir + os.pathsep + full_env.get("PATH", "")
        with open(log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=full_env, cwd=cwd, start_new_session=True,
            )
        import psutil

        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = None
        rec = Managed(name=name, kind="process", pid=proc.pid, create_time=create_time, cmd=cmd,
                      port=port, url=url, log=str(log_path))
        self._save(rec)
        self._children[name] = proc
        if stop_on_exit:
            _exit_hooks.append((self, name, proc.pid))
        try:
            target = _target(port, url)
            if target is not None:
                readiness.wait_until_ready(target, timeout, proc=proc, log=log_path, name=name)
        except BaseException:
            self.stop(name)
            raise
        return rec

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """Stop ``name`` (SIGTERM to its process group, SIGKILL after ``timeout``).

        Returns True if something was running.
        """
        rec = self.get(name)
        was_running = False
        if rec is not None:
            if rec.kind == "container":
                was_running = _remove_container(rec.container_id)
            else:
                was_running = _stop_process(rec.pid, rec.create_time, timeout)
            self._record_path(name).unlink(missing_ok=True)
        child = self._children.pop(name, None)
        if child is not None:
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return was_running

    # containers --------------------------------------------------------------
    def record_container(self, name: str, container_id: str, port: int | None = None) -> Managed:
        """Record a container the helpers started (it must carry container_labels(name))."""
        rec = Managed(name=name, kind="container", container_id=container_id, port=port)
        self._save(rec)
        return rec

    # everything --------------------------------------------------------------
    def cleanup(self, containers: bool = True) -> list[str]:
        """Stop every recorded process and container, plus strays tagged with this workspace.

        Returns a list of what was stopped, one short description each.
        """
        stopped = []
        for rec in self.records():
            if self.stop(rec.name):
                stopped.append(f"{rec.kind} {rec.name}")
        stopped += _kill_tagged(str(self.workspace))
        from .limits import remove_empty

        remove_empty()
        if containers:
            stopped += _remove_labelled_containers(str(self.workspace))
        return stopped


def _stop_process(pid: int | None, create_time: float | None, timeout: float) -> bool:
    """SIGTERM the leader (servers like gunicorn stop their workers gracefully), then
    SIGTERM what is left of its tree, then SIGKILL after ``timeout``."""
    import psutil

    proc = _process(pid, create_time)
    if proc is None:
        return False
    try:
        family = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        family = [proc]
    try:
        proc.terminate()
        proc.wait(timeout=timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        pass
    rest = []
    for p in family:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                rest.append(p)
        except psutil.NoSuchProcess:
            pass
    _terminate(rest, grace=3)
    return True


def _terminate(procs: list, grace: float) -> None:
    """SIGTERM ``procs``, SIGKILL those still alive after ``grace`` seconds, reap them."""
    import psutil

    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=3)


def tagged_processes(workspace: str | Path, name_prefix: str = "") -> list:
    """Processes (``psutil.Process``) whose environment carries this workspace's tag, started
    under a name beginning with ``name_prefix``: what the supervisor started, and their
    children (Locust, orphans, daemons), record or not. This process is never listed."""
    import psutil

    prefix = f"{workspace}::{name_prefix}"
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            tag = proc.environ().get(ENV_TAG, "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if tag.startswith(prefix):
            found.append(proc)
    return found


def _kill_tagged(workspace: str) -> list[str]:
    """Kill processes whose environment carries this workspace's tag (orphans, daemons)."""
    victims = tagged_processes(workspace)
    _terminate(victims, grace=5)
    return [f"stray process {p.pid}" for p in victims]


def _remove_container(container_id: str | None) -> bool:
    if not container_id:
        return False
    try:
        from .containers import client

        c = client().containers.get(container_id)
    except Exception:
        return False
    running = c.status in ("running", "restarting", "created")
    try:
        c.remove(force=True)
    except Exception:
        pass
    return running


def _remove_labelled_containers(workspace: str) -> list[str]:
    try:
        from .containers import client

        docker = client()
    except CourseError:
        return []
    out = []
    flt = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_WORKSPACE}={workspace}"]}
    for c in docker.containers.list(all=True, filters=flt):
        try:
            c.remove(force=True)
            out.append(f"container {c.name}")
        except Exception:
            pass
    for net in docker.networks.list(filters=flt):
        try:
            net.remove()
            out.append(f"network {net.name}")
        except Exception:
            pass
    return out


_exit_hooks: list[tuple[Supervisor, str, int]] = []


@atexit.register
def _stop_owned() -> None:
    """On interpreter exit, stop what this process started and did not stop itself."""
    for sup, name, pid in reversed(_exit_hooks):
        rec = sup.get(name)
        if rec is not None and rec.pid == pid:
            try:
                sup.stop(name, timeout=5)
            except Exception:
                pass


def cleanup() -> list[str]:
    """Stop every process and container the helpers ever started in this workspace."""
    return Supervisor().cleanup()
