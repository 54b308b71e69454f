"""The worker class the server's gunicorn commands name.

It is uvicorn-worker's ``UvicornWorker`` unchanged: the per-worker ``SO_REUSEPORT``
socket and the parent-death check are set in ``gunicorn_conf.post_fork`` (see
``adapters`` and ``lifecycle``). The name stays so that existing commands and images
keep working.
"""

from __future__ import annotations

from uvicorn_worker import UvicornWorker


class ReusePortWorker(UvicornWorker):
    """``UvicornWorker``; with ``MLOPS_REUSEPORT_BIND`` set, ``post_fork`` gives it its own socket."""
