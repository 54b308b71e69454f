"""Fails loudly if gunicorn or uvicorn-worker stop behaving as ``serving/adapters.py`` assumes.

The per-worker SO_REUSEPORT socket works because (1) gunicorn stores a worker's listening
sockets in ``worker.sockets`` before ``post_fork`` runs and (2) ``UvicornWorker`` serves
exactly ``self.sockets``. Neither is documented; these tests check both on the installed
versions. The end-to-end check (each worker listens on its own socket) is in
tests/integration/test_serving.py::test_each_worker_listens_on_its_own_socket.
"""

import inspect
import socket

import pytest

pytestmark = pytest.mark.unit


def test_gunicorn_worker_keeps_its_sockets_in_an_attribute():
    from gunicorn.workers.base import Worker

    assert "sockets" in inspect.signature(Worker.__init__).parameters
    assert "self.sockets = sockets" in inspect.getsource(Worker.__init__)


def test_gunicorn_calls_post_fork_before_the_worker_starts():
    from gunicorn.arbiter import Arbiter

    src = inspect.getsource(Arbiter.spawn_worker)
    assert src.index("post_fork(") < src.index("init_process()")


def test_uvicorn_worker_serves_its_sockets_attribute():
    from uvicorn_worker import UvicornWorker

    assert "sockets=self.sockets" in inspect.getsource(UvicornWorker)


def test_reuseport_sockets_share_a_port():
    from course_helpers.serving.adapters import reuseport_socket

    a = reuseport_socket("127.0.0.1:0")
    port = a.getsockname()[1]
    b = reuseport_socket(f"127.0.0.1:{port}")
    try:
        assert b.getsockname()[1] == port
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        a.close()
        b.close()
