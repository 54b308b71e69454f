"""The base image: ``$BASE_IMAGE``, or the offline one built from Debian packages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .. import config
from ..containers import client
from ..errors import BinaryNotFoundError, CourseError
from ..supervisor import PROVIDERS, tail

OFFLINE_BASE_IMAGE = "mlops-course/base:bookworm"
PUBLIC_BASE_IMAGE = "python:3.11-slim"
BASE_IMAGE_ENV = "BASE_IMAGE"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "image"


def _repository(tag: str) -> str:
    """``registry/name`` without the ``:tag`` part."""
    return tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag



def base_image() -> str:
    """The base image to build on: ``$BASE_IMAGE``, else the public ``python:3.11-slim``."""
    return config.settings().base_image or PUBLIC_BASE_IMAGE


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
    name = name or config.settings().base_image or OFFLINE_BASE_IMAGE
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
