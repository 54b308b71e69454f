"""Where a student's kernel runs while it is graded: a jailed process or a container.

The grader (nbgrader, the gradebook, the notebook with its hidden tests) stays in the
grading process. Only the Jupyter kernel, which runs the student's code, is started in a
sandbox, and the two talk over ZeroMQ ``ipc`` sockets in the sandbox's folder (so the
kernel needs no network at all). A hidden test reaches the kernel only when its cell is
executed; nothing of the course directory is visible from inside.

``process``: ``unshare`` gives the kernel new mount, network (loopback only, down) and PID
namespaces; ``_jail.py`` hides the course, the workspace and the submissions behind empty
read-only mounts, gives it its own empty /tmp and /dev/shm, sets resource limits, drops to an
unprivileged user (a system user when the grader is root, else the grader's user inside
a user namespace with every capability dropped). When the kernel (PID 1 of its
namespace) dies, the Linux kernel kills every process it started.

``docker``: one container per kernel from the grading image, ``--network none``,
read-only root, a non-root user, a tmpfs work folder, CPU/memory/PID limits, removed
when the kernel stops.

Both are used through :class:`SandboxKernelManager`, the kernel manager nbgrader's
execute step is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets import Float, Integer, List, Unicode

from ..errors import CourseError

MODES = ("auto", "process", "docker", "none")
SANDBOX_USER = "mlops-sandbox"
NOBODY = 65534
LABEL = "org.mlops-course.grading-sandbox"
GRADER_IMAGE = "mlops-course/grader:latest"
GRADER_IMAGE_ENV = "MLOPS_GRADER_IMAGE"
# what the assignment kernels import (pinned through requirements.lock at build time):
# the course's runtime packages, without the servers that only the grader or JupyterLab use
GRADER_REQUIREMENTS = ["ipykernel", "numpy", "pandas", "pyyaml", "scikit-learn", "psutil",
                       "matplotlib", "check-jsonschema", "kubernetes-validate", "mlflow",
                       "prefect", "pandera", "requests", "fastapi", "uvicorn", "tqdm",
                       "scipy", "statsmodels",  # a09: students may use either
                       # redis needs it below Python 3.11.3 (the offline base has 3.11.2);
                       # the host's pip, on a newer 3.11, does not download it by itself
                       "async-timeout>=4.0.3"]
PRIVATE = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]


def grader_image() -> str:
    """The image docker-sandboxed kernels run in (``$MLOPS_GRADER_IMAGE`` or the default)."""
    from ..config import settings

    return settings().grader_image or GRADER_IMAGE


def build_grader_image(tag: str | None = None) -> str:
    """Build the grading image offline (course base image + kernel packages + the
    ``course_helpers`` package) with :func:`course_helpers.images.build_image`."""
    from .. import config, images

    root = config.repo_root()
    if root is None:
        raise CourseError("building the grading image needs a checkout of the course repository")
    package = root / "course_helpers"
    return images.build_image(tag or grader_image(), GRADER_REQUIREMENTS,
                              files={"/opt/course/course_helpers": package}, user="app")


@functools.lru_cache(maxsize=1)
def _userns_works() -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--net",
                            "--pid", "--fork", "true"], capture_output=True)
    return probe.returncode == 0


def process_sandbox_available() -> tuple[bool, str]:
    """Can this machine run the process sandbox? (yes/no, why not)."""
    if not sys.platform.startswith("linux"):
        return False, "the process sandbox needs Linux namespaces"
    missing = [b for b in ("unshare", "setpriv", "mount") if shutil.which(b) is None]
    if missing:
        return False, f"{', '.join(missing)} not found (Debian package util-linux / mount)"
    if os.geteuid() != 0 and not _userns_works():
        return False, "not root and unprivileged user namespaces are disabled"
    return True, ""


def docker_sandbox_available(image: str | None = None) -> tuple[bool, str]:
    """Is there a Docker engine with the grading image? (yes/no, why not)."""
    from .. import images

    image = image or grader_image()
    try:
        if images.image_exists(image):
            return True, ""
    except Exception as err:  # noqa: BLE001 - no engine, no socket, no SDK: all "no"
        return False, f"no Docker engine ({type(err).__name__})"
    return False, (f"the grading image {image} is not built: run "
                   "`mlops-course grade image` (offline, a few minutes)")


def resolve(mode: str) -> str:
    """``auto`` -> ``docker`` when the engine and image are there, else ``process``;
    an explicit mode is checked and a CourseError says what is missing."""
    if mode not in MODES:
        raise CourseError(f"unknown sandbox {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "auto":
        if docker_sandbox_available()[0]:
            return "docker"
        ok, why = process_sandbox_available()
        if not ok:
            raise CourseError(f"no sandbox to grade in: Docker is not usable and {why}")
        return "process"
    if mode == "docker":
        ok, why = docker_sandbox_available()
        if not ok:
            raise CourseError(f"--sandbox docker: {why}")
    if mode == "process":
        ok, why = process_sandbox_available()
        if not ok:
            raise CourseError(f"--sandbox process: {why}")
    return mode


@functools.lru_cache(maxsize=1)
def sandbox_ids() -> tuple[int, int] | None:
    """(uid, gid) the jailed kernel runs as: a system user created on first use when
    the grader is root; None when not root (a user namespace keeps the grader's ids)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                               "--shell", "/usr/sbin/nologin", SANDBOX_USER],
                              capture_output=True, text=True)
        if made.returncode != 0:
            return NOBODY, NOBODY  # no useradd: nobody/nogroup still owns nothing here
        entry = pwd.getpwnam(SANDBOX_USER)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, ids: tuple[int, int]) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, *ids, follow_symlinks=False)


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels run sandboxed (``mode``: process, docker or none)."""

    mode = Unicode("none", help="process, docker or none").tag(config=True)
    image = Unicode("", help="docker mode: the image (default: grader_image())").tag(config=True)
    hide = List(Unicode(), help="process mode: folders the kernel must not see").tag(config=True)
    memory_mb = Integer(1536, help="memory limit of the kernel (MB)").tag(config=True)
    cpus = Float(1.0, help="docker mode: CPUs").tag(config=True)
    max_processes = Integer(256, help="processes and threads of the sandbox").tag(config=True)
    cpu_seconds = Integer(600, help="process mode: CPU time of one process (s)").tag(config=True)
    file_mb = Integer(256, help="largest file the kernel may write (MB)").tag(config=True)
    python = Unicode("", help="process mode: the kernel's Python (default: this one)"
                     ).tag(config=True)

    _box: Path | None = None
    _container: str | None = None

    # -- start ---------------------------------------------------------------------------
    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        if self.mode == "none":
            return await super().start_kernel(**kw)
        seed = Path(kw.pop("cwd", None) or os.getcwd())
        self._box = Path(tempfile.mkdtemp(prefix="mlops-sandbox-"))
        os.chmod(self._box, 0o755)
        (self._box / "kernel").mkdir()
        work = self._box / "work"
        work.mkdir()
        for item in seed.iterdir():  # the files the notebook reads, never a notebook
            if item.suffix == ".ipynb" or item.name.startswith("."):
                continue
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, work / item.name)
        self.transport = "ipc"
        self.connection_file = str(self._box / "kernel" / "kernel.json")
        self.ip = str(self._box / "kernel" / "ipc")
        kw["env"] = self._kernel_env(work)
        kw["cwd"] = str(self._box)
        await super().start_kernel(**kw)

    def _kernel_env(self, work: Path) -> dict[str, str]:
        env = {"HOME": str(work), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYDEVD_DISABLE_FILE_VALIDATION": "1", "MLOPS_PROFILE": "smoke",
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "TMPDIR": str(work)}
        if self.mode == "docker":
            env.update(HOME="/work", TMPDIR="/work", PYTHONPATH="/opt/course",
                       PATH="/opt/venv/bin:/usr/bin:/bin")
        else:
            python = self.python or sys.executable
            env["PATH"] = os.pathsep.join([str(Path(python).parent), "/usr/bin", "/bin"])
            package_root = Path(__file__).resolve().parents[2]
            env["PYTHONPATH"] = str(package_root)
        return env

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.mode == "none" or self._box is None:
            return cmd
        ids = sandbox_ids() if self.mode == "process" else None
        if self.mode == "docker":
            ids = (NOBODY, NOBODY) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        if ids is not None:
            _chown_tree(self._box, ids)
            os.chmod(self._box / "kernel", 0o700)
        if self.mode == "process":
            return self._process_cmd(cmd, ids)
        return self._docker_cmd(cmd, ids)

    def _process_cmd(self, cmd: list[str], ids: tuple[int, int] | None) -> list[str]:
        assert self._box is not None
        python = self.python or sys.executable
        if cmd and Path(cmd[0]).name.startswith("python"):
            cmd[0] = python
        spec = {"workdir": str(self._box), "private": PRIVATE, "private_mb": 64,
                "expose": [str(Path(sys.base_prefix).resolve())],
                "hide": [h for h in self.hide if not str(self._box).startswith(h.rstrip("/") + "/")],
                "uid": ids[0] if ids else None, "gid": ids[1] if ids else None,
                "env": self._kernel_env(self._box / "work"),
                "rlimits": {"as": self.memory_mb * 2**20 * 2, "nproc": self.max_processes,
                            "cpu": self.cpu_seconds, "fsize": self.file_mb * 2**20,
                            "nofile": 512, "core": 0}}
        spec_file = self._box / "jail.json"
        spec_file.write_text(json.dumps(spec))
        os.chmod(spec_file, 0o600)
        if ids is not None:
            os.chown(spec_file, 0, 0)
        unshare = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
                   "--mount-proc"]
        if os.geteuid() != 0:
            unshare[1:1] = ["--user", "--map-root-user"]
        jail = Path(__file__).with_name("_jail.py")
        return [*unshare, "--", sys.executable, "-I", str(jail), str(spec_file), "--", *cmd]

    def _docker_cmd(self, cmd: list[str], ids: tuple[int, int]) -> list[str]:
        assert self._box is not None
        self._container = f"mlops-grade-{uuid.uuid4().hex[:12]}"
        conn = str(self._box / "kernel")
        kernel = ["python", *cmd[1:]] if Path(cmd[0]).name.startswith("python") else cmd
        env = self._kernel_env(Path("/work"))
        return ["docker", "run", "--rm", "-i", "--name", self._container, "--label", LABEL,
                "--network", "none", "--read-only", "--user", f"{ids[0]}:{ids[1]}",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--pids-limit", str(self.max_processes), "--cpus", str(self.cpus),
                "--memory", f"{self.memory_mb}m", "--memory-swap", f"{self.memory_mb}m",
                "--ulimit", f"fsize={self.file_mb * 2**20}", "--ulimit", "core=0",
                "--tmpfs", f"/work:rw,exec,size=256m,uid={ids[0]},gid={ids[1]},mode=0700",
                "--tmpfs", "/tmp:rw,size=16m,mode=1777",
                "-v", f"{conn}:{conn}", "-v", f"{self._box / 'work'}:/seed:ro",
                *[a for k, v in env.items() for a in ("-e", f"{k}={v}")],
                "-w", "/work", "--entrypoint", "/bin/sh", self.image or grader_image(),
                "-c", 'cp -R /seed/. /work/ && exec "$@"', "kernel", *kernel]

    # -- stop ----------------------------------------------------------------------------
    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:  # type: ignore[override]
        try:
            await super().shutdown_kernel(now=now, restart=restart)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._remove_box)

    def _remove_box(self) -> None:
        if self._container:
            subprocess.run(["docker", "rm", "-f", self._container], capture_output=True)
            self._container = None
        if self._box is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._box)
            self._box = None


def leftover_containers() -> list[str]:
    """Names of grading containers still present (there should be none after a batch)."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={LABEL}", "--format",
                          "{{.Names}}"], capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else []
