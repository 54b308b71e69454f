"""A mybinder.org launch simulated on this machine, without Docker.

What repo2docker does for this repository (see ``jupyter-repo2docker --no-build --debug .``),
step by step, with the parts it cannot do here replaced:

- conda env with CPython 3.11.x -> a venv from a Python 3.11 the user can run (:func:`python_for`);
- ``pip install -r binder/requirements.txt`` as the user -> the same as root (from the index,
  through root's pip cache), then chowned to the user;
- the repo copied to ``$REPO_DIR``, owned by the user -> the working tree (tracked and
  untracked, not ignored files) copied to a temp dir, owned by the user;
- ``./binder/postBuild`` as ``jovyan`` -> the same, as the unprivileged ``mlops-binder``
  (created as a system user if missing, when we are root) with a temporary ``$HOME``;
- ``binder/start jupyter ...`` -> ``binder/start jupyter lab`` on 127.0.0.1 with a token;
- apt.txt (nginx, redis-server) -> not installed: the machine's own packages are used.

Every process started carries ``MLOPS_BINDER_SIM=<tag>`` in its environment (inherited by
kernels and by the UIs jupyter-server-proxy starts), so :meth:`BinderSim.close` finds and
kills the whole tree, whatever re-parented itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SIM_USER = "mlops-binder"
ENV_CACHE_PREFIX = "mlops-binder-env-"
ENV_READY = ".ready"
TAG_ENV = "MLOPS_BINDER_SIM"
PASS_ENV_PREFIXES = ("PIP_", "http_proxy", "https_proxy", "no_proxy",
                     "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_", "REQUESTS_CA_BUNDLE")


def log(msg: str) -> None:
    print(f"[binder-sim] {msg}", flush=True)


# --------------------------------------------------------------------------- the user

class SimUser:
    """Who runs postBuild and the server: ``mlops-binder`` when we are root, else ourselves."""

    def __init__(self, name: str, uid: int, gid: int):
        self.name, self.uid, self.gid = name, uid, gid

    @property
    def switch(self) -> bool:
        return os.geteuid() == 0 and self.uid != 0

    def popen_kwargs(self) -> dict:
        """``subprocess`` arguments that drop to this user (setgid, setgroups([]), setuid)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []} if self.switch else {}

    def chown_tree(self, path: Path) -> None:
        if self.switch:
            subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)


def sim_user() -> SimUser | None:
    """The unprivileged user, created as a system user if we are root and it is missing."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return SimUser(pw.pw_name, pw.pw_uid, pw.pw_gid)
    try:
        pw = pwd.getpwnam(SIM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        if not os.path.exists(useradd):
            return None
        subprocess.run([useradd, "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SIM_USER],
                       check=True)
        pw = pwd.getpwnam(SIM_USER)
    return SimUser(pw.pw_name, pw.pw_uid, pw.pw_gid)


# --------------------------------------------------------------------------- the interpreter

def _runs_as(python: Path, user: SimUser, env: dict | None = None) -> bool:
    try:
        out = subprocess.run([str(python), "-c", "import venv, ensurepip, ssl, sqlite3"],
                             capture_output=True, timeout=60, env=env or {"PATH": "/usr/bin:/bin"},
                             cwd="/", **user.popen_kwargs())
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def relocate_python(base_prefix: Path, dest: Path) -> Path:
    """A world-readable copy of a (shared-library) CPython install: interpreter and stdlib only.

    pyenv's Pythons live under /root (mode 0700), which an unprivileged user cannot enter.
    The copy keeps ``bin/python3.X``, ``lib/libpython3.X.so.1.0`` and the standard library
    (no site-packages, tests, IDLE, tkinter). The interpreter's RUNPATH points back at the
    original ``lib/``; it is rewritten in place to ``$ORIGIN/../lib`` (same string slot,
    NUL-padded, as conda does for prefixes), so the copy loads its own libpython.
    """
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    (dest / "bin").mkdir(parents=True)
    (dest / "lib").mkdir()
    exe = dest / "bin" / f"python{ver}"
    shutil.copy2(base_prefix / "bin" / f"python{ver}", exe)
    for lib in (base_prefix / "lib").glob(f"libpython{ver}*.so*"):
        shutil.copy2(lib, dest / "lib" / lib.name, follow_symlinks=True)
    skip = {"site-packages", "test", "idlelib", "tkinter", "turtledemo"}
    shutil.copytree(
        base_prefix / "lib" / f"python{ver}", dest / "lib" / f"python{ver}", symlinks=True,
        ignore=lambda d, names: [n for n in names if n in skip or n.startswith("config-")],
    )
    (dest / "lib" / f"python{ver}" / "site-packages").mkdir()
    (dest / "bin" / "python3").symlink_to(exe.name)

    old = str(base_prefix / "lib").encode() + b"\0"
    new = b"$ORIGIN/../lib"
    blob = exe.read_bytes()
    if blob.count(old) == 1 and len(new) < len(old):
        i = blob.index(old)
        blob = blob[:i] + new + b"\0" * (len(old) - len(new)) + blob[i + len(old):]
        exe.write_bytes(blob)
    subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)
    return exe


def python_for(user: SimUser, workdir: Path) -> tuple[Path, str]:
    """A Python 3.11 the simulated user can run, and how it was obtained.

    ``$MLOPS_BINDER_PYTHON`` wins. Else the interpreter behind this test run (the project's
    Python 3.11) if the user can run it, else a relocated copy of it (:func:`relocate_python`).
    Debian bookworm's own python3.11 (3.11.2) cannot be used: some pins need >= 3.11.5.
    """
    env = os.environ.get("MLOPS_BINDER_PYTHON")
    if env:
        return Path(env), "$MLOPS_BINDER_PYTHON"
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix) / "bin" / f"python{ver}"
    if _runs_as(base, user):
        return base, f"{base} as is"
    exe = relocate_python(Path(sys.base_prefix), workdir / "python")
    if not _runs_as(exe, user):
        raise RuntimeError(f"the relocated copy {exe} does not run as {user.name}")
    return exe, f"relocated copy of {sys.base_prefix} (RUNPATH -> $ORIGIN/../lib)"


# --------------------------------------------------------------------------- http

def http_get(url: str, token: str | None = None, timeout: float = 30) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout) as err:
        return 0, repr(err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------- the simulation

class BinderSim:
    """Build (venv + postBuild) and launch (start + jupyter lab) the repo as Binder would."""

    def __init__(self, root: Path):
        self.root = root
        self.tag = secrets.token_hex(8)
        self.token = secrets.token_hex(16)
        self.timings: dict[str, float] = {}
        self.notes: dict[str, str] = {}
        self.lab: subprocess.Popen | None = None
        self.lab_log: Path | None = None
        self.port = 0
        self.base = Path(tempfile.mkdtemp(prefix="mlops-binder-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.env_dir = self.base / "env"
        self.repo = self.base / "repo"
        self.home = self.base / "home"
        self.user: SimUser | None = None

    # -- build -------------------------------------------------------------------------

    def build(self, user: SimUser, *, reuse_env: bool = True) -> None:
        """The venv (reused across simulations when ``reuse_env``: see :meth:`_env_cache`),
        the repo copied, then ``binder/postBuild`` run as the user."""
        self.user = user
        cache = self._env_cache(user) if reuse_env else None
        if cache is None:
            self._build_env(user, None)
        else:
            import fcntl

            with open(str(cache) + ".lock", "w") as lock:  # one builder; the others wait
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._build_env(user, cache)
        self._copy_repo()
        self.home.mkdir()
        for path in (self.repo, self.home):
            user.chown_tree(path)
        self._post_build(user)

    def _build_env(self, user: SimUser, cache: Path | None) -> None:
        if cache is not None and (cache / ENV_READY).is_file():
            self.env_dir = cache / "env"
            os.utime(cache)  # in use: kept by the clean-up of stale caches
            self.notes["python"] = (cache / ENV_READY).read_text().strip()
            log(f"reusing the Binder venv {self.env_dir} (same binder/requirements.txt)")
        else:
            work = self.base
            if cache is not None:
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir(parents=True)
                os.chmod(cache, 0o755)
                work, self.env_dir = cache, cache / "env"
            python, how = python_for(user, work)
            self.notes["python"] = how
            log(f"user {user.name} (uid {user.uid}), python {python} ({how})")

            t0 = time.monotonic()
            subprocess.run([str(python), "-m", "venv", str(self.env_dir)], check=True)
            self._pip_install(self.root / "binder" / "requirements.txt")
            self.timings["venv_install_s"] = time.monotonic() - t0
            log(f"venv + pip install -r binder/requirements.txt: "
                f"{self.timings['venv_install_s']:.1f} s")
            user.chown_tree(self.env_dir)
            if cache is not None:
                (cache / ENV_READY).write_text(how + "\n")

    def _post_build(self, user: SimUser) -> None:
        t0 = time.monotonic()
        out = subprocess.run([str(self.repo / "binder" / "postBuild")], cwd=self.repo,
                             env=self.user_env(), capture_output=True, text=True, timeout=600,
                             **user.popen_kwargs())
        self.timings["postbuild_s"] = time.monotonic() - t0
        self.notes["postbuild_output"] = ANSI.sub("", out.stdout + out.stderr)
        if out.returncode:
            raise RuntimeError(f"binder/postBuild exited {out.returncode}:\n"
                               f"{self.notes['postbuild_output']}")
        log(f"postBuild as {user.name}: {self.timings['postbuild_s']:.1f} s")

    def _env_cache(self, user: SimUser) -> Path | None:
        """Where the venv of ``binder/requirements.txt`` is kept between simulations (Binder
        itself caches that layer too): ``/tmp/mlops-binder-env-<hash>``, the hash of the
        requirements, the Python and the user; one process builds it while the others wait.
        Caches of other pins unused for an hour are removed.
        ``MLOPS_BINDER_FRESH=1`` builds a new one every time."""
        if os.environ.get("MLOPS_BINDER_FRESH"):
            return None
        import hashlib

        key = hashlib.sha256()
        key.update((self.root / "binder" / "requirements.txt").read_bytes())
        key.update(f"{sys.base_prefix} {sys.version} {user.uid}".encode())
        cache = Path("/tmp") / f"{ENV_CACHE_PREFIX}{key.hexdigest()[:16]}"
        for old in Path("/tmp").glob(ENV_CACHE_PREFIX + "*"):
            if old.is_dir() and old != cache and time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)  # another pin set, unused for an hour
        return cache

    def _pip_install(self, requirements: Path) -> None:
        """``pip install -r`` as Binder does, from the index (through pip's cache, if it keeps any).

        Measured here: ~80-120 s for the ~260 pins, and about as long from a local wheelhouse
        (``--no-index --find-links``): unpacking and byte-compiling dominate, not the download.
        """
        out = subprocess.run([str(self.env_dir / "bin" / "pip"), "install",
                              "--disable-pip-version-check", "--quiet", "-r", str(requirements)],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"pip install -r {requirements} failed:\n{out.stdout}\n{out.stderr}")

    def _copy_repo(self) -> None:
        """The working tree as git would ship it: tracked and untracked files, not ignored ones."""
        self.repo.mkdir()
        try:
            out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                  "--exclude-standard"], cwd=self.root, capture_output=True,
                                 check=True)
            files = [f for f in out.stdout.decode().split("\0") if f]
        except (OSError, subprocess.CalledProcessError):
            files = [str(p.relative_to(self.root)) for p in self.root.rglob("*")
                     if p.is_file() and not {".git", ".venv", ".mlops"} & set(p.parts)]
        for rel in files:
            src = self.root / rel
            if not src.is_file():  # deleted in the working tree
                continue
            dst = self.repo / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)

    def user_env(self, **extra: str) -> dict[str, str]:
        """What the notebook user's processes see: Binder's variables, none of root's."""
        assert self.user is not None
        env = {k: v for k, v in os.environ.items() if k.startswith(PASS_ENV_PREFIXES)}
        env.pop("PIP_CACHE_DIR", None)
        env.update({
            "HOME": str(self.home), "USER": self.user.name, "LOGNAME": self.user.name,
            "SHELL": "/bin/bash", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "PATH": os.pathsep.join([f"{self.home}/.local/bin", f"{self.env_dir}/bin",
                                     "/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                     "/usr/bin", "/sbin", "/bin"]),
            "NB_USER": self.user.name, "NB_UID": str(self.user.uid),
            "NB_PYTHON_PREFIX": str(self.env_dir), "KERNEL_PYTHON_PREFIX": str(self.env_dir),
            "REPO_DIR": str(self.repo), "PYTHONUNBUFFERED": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            TAG_ENV: self.tag,
        })
        env.update(extra)
        return env

    def run_as_user(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        assert self.user is not None
        return subprocess.run(list(cmd), cwd=self.repo, env=self.user_env(), capture_output=True,
                              text=True, timeout=timeout, **self.user.popen_kwargs())

    # -- launch ------------------------------------------------------------------------

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def get(self, path: str, timeout: float = 30) -> tuple[int, str]:
        return http_get(self.url(path), self.token, timeout)

    def start_lab(self, ready_timeout: float = 120, **env: str) -> None:
        """``binder/start jupyter lab`` as the user; ``env`` adds variables to its environment
        (e.g. ``MLOPS_PROFILE="smoke"``, which binder/start keeps)."""
        assert self.user is not None
        self.port = free_port()
        self.lab_log = self.base / "jupyter-lab.log"
        cmd = [str(self.repo / "binder" / "start"), "jupyter", "lab", "--no-browser",
               "--ip=127.0.0.1", f"--port={self.port}", f"--ServerApp.token={self.token}",
               f"--ServerApp.root_dir={self.repo}"]
        t0 = time.monotonic()
        with open(self.lab_log, "wb") as logf:
            self.lab = subprocess.Popen(cmd, cwd=self.repo, env=self.user_env(**env), stdout=logf,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, **self.user.popen_kwargs())
        while True:
            status, _ = self.get("lab", timeout=10)
            if status == 200:
                break
            if self.lab.poll() is not None:
                raise RuntimeError(f"jupyter lab exited {self.lab.returncode}:\n{self.log_text()}")
            if time.monotonic() - t0 > ready_timeout:
                raise RuntimeError(f"/lab not 200 after {ready_timeout} s (last {status}):\n"
                                   f"{self.log_text()}")
            time.sleep(0.25)
        self.timings["lab_200_s"] = time.monotonic() - t0
        log(f"jupyter lab /lab answered 200 after {self.timings['lab_200_s']:.1f} s")

    def poll(self, path: str, ok, timeout: float) -> tuple[int, str, float]:
        """GET ``path`` until ``ok(status, body)``; return the last answer and seconds taken."""
        t0 = time.monotonic()
        while True:
            status, body = self.get(path, timeout=max(5.0, timeout))
            elapsed = time.monotonic() - t0
            if ok(status, body) or elapsed > timeout:
                return status, body, elapsed
            time.sleep(0.5)

    def log_text(self) -> str:
        return ANSI.sub("", self.lab_log.read_text(errors="replace")) if self.lab_log else ""

    def page_config(self) -> dict:
        status, body = self.get("lab")
        m = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      body, re.S)
        if status != 200 or not m:
            raise AssertionError(f"no page config in /lab ({status})")
        return json.loads(m.group(1))

    # -- teardown ----------------------------------------------------------------------

    def tagged(self) -> list:
        """Every live process started by this simulation (the tag is in its environment)."""
        import psutil

        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(TAG_ENV) == self.tag and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return found

    def stop(self) -> list[str]:
        """SIGTERM the server's process group, then SIGKILL whatever is left; names the killed."""
        import psutil

        killed = []
        if self.lab is not None and self.lab.poll() is None:
            try:
                os.killpg(self.lab.pid, signal.SIGTERM)  # jupyter stops kernels and proxied UIs
            except ProcessLookupError:
                pass
            try:
                self.lab.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        left = self.tagged()
        for proc in left:
            try:
                killed.append(" ".join(proc.cmdline())[:120])
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=10)
        if self.lab is not None:
            try:
                self.lab.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return killed

    def close(self) -> None:
        try:
            killed = self.stop()
            if killed:
                log(f"killed leftovers: {killed}")
        finally:
            if self.timings:
                log("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()))
            if os.environ.get("MLOPS_BINDER_KEEP"):
                log(f"kept {self.base}")
            else:
                shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def launched(root: Path, **lab_env: str) -> Iterator[tuple[BinderSim, SimUser]]:
    """``root`` built and launched as on Binder (as the unprivileged user), closed afterwards;
    needs Python 3.11, bash and a user to run as (``need``: skipped, or failed in CI)."""
    from tests.helpers import need

    need(sys.version_info[:2] == (3, 11), "Python 3.11 running the tests (Binder pins python-3.11)")
    need(shutil.which("bash") is not None, "bash")
    user = sim_user()
    need(user is not None, "useradd, to create the unprivileged user for the simulation")
    sim = BinderSim(root)
    try:
        sim.build(user)
        sim.start_lab(**lab_env)
        yield sim, user
    finally:
        sim.close()
