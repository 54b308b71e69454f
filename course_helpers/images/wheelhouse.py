"""Python dependencies for images, offline: pins from ``requirements.lock`` and a wheelhouse
downloaded once on the host for the container's Python and platform."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from .. import config
from ..containers import client
from ..errors import CourseError

#: The container's Python, and the newest glibc a wheel may require (Debian bookworm's).
PYTHON_VERSION = "3.11"
GLIBC = (2, 36)



def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` become ``-``."""
    return canonicalize_name(name)


def parse_requirement(text: str) -> Requirement | None:
    """``text`` as a PEP 508 requirement (``packaging``), or None for anything else (a
    comment, an option line such as ``-r file``, an empty line). A requirements file's
    comments (``#`` after a space) are dropped first."""
    line = text.strip()
    if line.startswith("#"):
        return None
    line = line.partition(" #")[0].strip()
    try:
        return Requirement(line) if line else None
    except InvalidRequirement:
        return None


def exact_pin(req: Requirement) -> str | None:
    """The version of a requirement pinned with exactly one ``==`` (else None)."""
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
        return specs[0].version
    return None


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
        req = parse_requirement(line)
        if req is not None and exact_pin(req):
            pins[normalise(req.name)] = exact_pin(req)
    return pins


def pin_requirements(requirements: Sequence[str],
                     pins: Mapping[str, str] | None = None) -> list[str]:
    """Pin each bare requirement (``"psutil"``) to the lock's version; keep the others."""
    pins = locked_pins() if pins is None else pins
    out = []
    for text in requirements:
        req = parse_requirement(text)
        if req is not None and _bare(req) and normalise(req.name) in pins:
            req.specifier = SpecifierSet(f"=={pins[normalise(req.name)]}")
            out.append(str(req))
        else:
            out.append(text.strip())
    return out


def _bare(req: Requirement) -> bool:
    """A name (and extras) alone: no version, URL or environment marker."""
    return not req.specifier and req.url is None and req.marker is None


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
    explicit = {normalise(req.name) for r in requirements
                if (req := parse_requirement(r)) is not None and not _bare(req)}
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
