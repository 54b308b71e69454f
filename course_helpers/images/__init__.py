"""Container images without a registry: an offline base image, host-built wheelhouses, limits.

Four modules, re-exported here: :mod:`.base` (the base image), :mod:`.wheelhouse` (pinned
wheels downloaded on the host), :mod:`.build` (offline image builds) and :mod:`.run`
(containers with limits, and reading the limits back).

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

from ..containers import client
from .base import (BASE_IMAGE_ENV, OFFLINE_BASE_IMAGE, PUBLIC_BASE_IMAGE, base_image,
                   build_base_image, ensure_base_image, image_exists)
from .build import (LABEL_CONTEXT, LABEL_DEPS, LABEL_IMAGE, build_image, render_deps_dockerfile,
                    render_dockerfile)
from .run import (container_name, ensure_network, host_port, parse_cgroup_limits,
                  read_cgroup_limits, run_container, wait_healthy)
from .wheelhouse import (GLIBC, PYTHON_VERSION, engine_arch, locked_pins, manylinux_platforms,
                         normalise, pin_requirements, wheelhouse)

__all__ = [
    "BASE_IMAGE_ENV", "GLIBC", "LABEL_CONTEXT", "LABEL_DEPS", "LABEL_IMAGE", "OFFLINE_BASE_IMAGE",
    "PUBLIC_BASE_IMAGE", "PYTHON_VERSION", "base_image", "build_base_image", "build_image",
    "client", "container_name", "engine_arch", "ensure_base_image", "ensure_network",
    "host_port", "image_exists", "locked_pins", "manylinux_platforms", "normalise",
    "parse_cgroup_limits", "pin_requirements", "read_cgroup_limits", "render_deps_dockerfile",
    "render_dockerfile", "run_container", "wait_healthy", "wheelhouse",
]
