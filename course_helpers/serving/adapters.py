"""The one place where the server relies on behaviour its dependencies do not document.

gunicorn hands each worker the master's listening sockets as ``worker.sockets``, and
uvicorn-worker's ``UvicornWorker`` serves exactly ``self.sockets``. Neither promises it in
its documentation, and no public option gives each worker a socket of its own. We replace
``worker.sockets`` in gunicorn's documented ``post_fork`` hook, before the worker starts.
``tests/unit/test_serving_adapters.py`` fails loudly if an upgrade changes either side.
"""

from __future__ import annotations

import socket


def reuseport_socket(bind: str, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` with ``SO_REUSEPORT`` (several may share it;
    the kernel spreads new connections across them by a hash of the client address)."""
    host, port = bind.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def give_worker_own_socket(worker, bind: str, backlog: int = 2048) -> socket.socket:
    """Make a freshly forked gunicorn worker listen on its own ``SO_REUSEPORT`` socket."""
    sock = reuseport_socket(bind, backlog)
    worker.sockets = [sock]
    return sock
