"""Inside fresh mount, network and PID namespaces: hide, lock, limit, drop privileges, exec.

Run by the process sandbox as ``unshare ... python -I _jail.py SPEC.json -- CMD...`` (see
``sandbox.py``). It is a standalone script (standard library only, run with ``-I``) so that
nothing from the course package runs inside the namespaces before the limits are set.

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


def main() -> None:
    spec_path, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        sys.exit("usage: _jail.py SPEC.json -- CMD...")
    with open(spec_path) as fh:
        spec = json.load(fh)
    work = spec["workdir"]
    _mount("--make-rprivate", "/")
    keep = os.open(work, os.O_RDONLY | os.O_DIRECTORY)  # still reachable once /tmp is new
    for path in spec["private"]:
        if os.path.isdir(path):
            _mount("-t", "tmpfs", "-o", f"size={spec['private_mb']}m,mode=1777,nosuid,nodev",
                   "mlops-private", path)
    for path in spec["hide"]:
        if os.path.isdir(path):
            _mount("-t", "tmpfs", "-o", "ro,size=16k,mode=0755,nosuid,nodev,noexec",
                   "mlops-hidden", path)
    os.makedirs(work, exist_ok=True)
    out = subprocess.run(["mount", "--no-canonicalize", "--bind", f"/proc/self/fd/{keep}", work], pass_fds=(keep,),
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"sandbox: cannot mount the work folder: {out.stderr.strip()}")
    os.close(keep)
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
