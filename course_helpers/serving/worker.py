"""A uvicorn worker for gunicorn whose connections spread evenly over the workers.

With one shared listening socket, a burst of new connections all goes to whichever worker
the kernel wakes first, and keep-alive pins them there: measured here, two workers serving
a CPU-bound model split the work 100/0 and gave no more throughput than one. When
``MLOPS_REUSEPORT_BIND`` is set (``host:port``), each worker listens on its own
``SO_REUSEPORT`` socket at that address instead, and the kernel spreads new connections
across the workers' sockets by a hash of the client address.
"""

from __future__ import annotations

import os
import socket
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker


class ReusePortWorker(UvicornWorker):
    async def _serve(self) -> None:
        bind = os.environ.get("MLOPS_REUSEPORT_BIND")
        if not bind:
            return await super()._serve()
        host, port = bind.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
        sock.listen(self.cfg.backlog)
        sock.setblocking(False)
        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=[sock])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
