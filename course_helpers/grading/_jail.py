"""Inside fresh mount, network and PID namespaces: hide, lock, limit, drop privileges, exec.

Run by the process sandbox as ``unshare ... python -I _jail.py SPEC.json -- CMD...`` (see
``sandbox.py``). It is a standalone script (standard library only, run with ``-I``) so that
nothing from the course package runs inside the namespaces before the limits are set.

The network namespace has only its own loopback, brought up here (no route out, and the
host's 127.0.0.1 is another interface).

SPEC keys: ``workdir`` (the folder the kernel works in), ``hide`` (folders replaced by an
empty read-only tmpfs), ``private`` (/tmp, /dev/shm...: replaced by a small empty tmpfs of
the sandbox's own, gone when it ends), ``rlimits``
({name: value}), ``uid``/``gid`` (run as them; None: keep the current ids), ``env``.
"""

import json
import os
import resource
import subprocess
import sys


def _mount(*args: str) -> None:
    out = subprocess.run(["mount", *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"sandbox: mount {' '.join(args)} failed: {out.stderr.strip()}")


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ["/a", "/a/b", "/a/b/c"]."""
    parts = os.path.abspath(path).strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _bind_fd(fd: int, target: str) -> None:
    """Bind the folder open as ``fd`` (hidden since by another mount) onto ``target``."""
    out = subprocess.run(["mount", "--no-canonicalize", "--bind", f"/proc/self/fd/{fd}", target],
                         pass_fds=(fd,), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"sandbox: cannot mount {target}: {out.stderr.strip()}")
    os.close(fd)


def _loopback_up() -> None:
    """Bring up ``lo`` of the sandbox's own network namespace: servers a task starts (a
    Prefect API, a local HTTP server under Locust) listen there; nothing leaves the box."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            got = fcntl.ioctl(sock, siocgifflags, struct.pack("16sH14x", b"lo", 0))
            flags = struct.unpack("16sH14x", got)[1]
            fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))
    except OSError as err:  # the kernel still runs; only tasks that need a local server fail
        print(f"sandbox: loopback stays down ({err})", file=sys.stderr)


def main() -> None:
    spec_path, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        sys.exit("usage: _jail.py SPEC.json -- CMD...")
    with open(spec_path) as fh:
        spec = json.load(fh)
    work = spec["workdir"]
    _mount("--make-rprivate", "/")
    _loopback_up()
    keep = os.open(work, os.O_RDONLY | os.O_DIRECTORY)  # still reachable once /tmp is new
    # folders the kernel must run from (Python's install) that sit in a home others cannot
    # enter: that home becomes an empty tmpfs and only the folder is mounted back into it
    exposed = []
    for path in spec.get("expose", []):
        closed = [a for a in reversed(_ancestors(path)) if not os.stat(a).st_mode & 0o001]
        if closed:
            exposed.append((os.open(path, os.O_RDONLY | os.O_DIRECTORY), path, closed[0]))
    for path in spec["private"]:
        if os.path.isdir(path):
            _mount("-t", "tmpfs", "-o", f"size={spec['private_mb']}m,mode=1777,nosuid,nodev",
                   "mlops-private", path)
    for path in spec["hide"]:
        if os.path.isdir(path):
            _mount("-t", "tmpfs", "-o", "ro,size=16k,mode=0755,nosuid,nodev,noexec",
                   "mlops-hidden", path)
    for fd, path, closed in exposed:
        _mount("-t", "tmpfs", "-o", "size=16k,mode=0755,nosuid,nodev", "mlops-exposed", closed)
        os.makedirs(path, exist_ok=True)
        _bind_fd(fd, path)
        _mount("-o", "remount,bind,ro,nosuid,nodev", path)
    os.makedirs(work, exist_ok=True)
    _bind_fd(keep, work)
    for name, value in spec["rlimits"].items():
        limit = getattr(resource, f"RLIMIT_{name.upper()}")
        resource.setrlimit(limit, (int(value), int(value)))
    os.chdir(os.path.join(work, "work"))
    drop = ["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    if spec.get("uid") is not None:
        drop += ["--reuid", str(spec["uid"]), "--regid", str(spec["gid"]), "--clear-groups"]
    os.execvpe("setpriv", [*drop, "--", *cmd], spec["env"])


if __name__ == "__main__":
    main()
