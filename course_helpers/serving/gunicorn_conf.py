"""gunicorn hooks for the model server (gunicorn's documented server hooks).

- ``on_starting``: a clean Prometheus multiprocess directory;
- ``post_fork``: the worker dies with the master (see ``lifecycle``) and, when
  ``MLOPS_REUSEPORT_BIND`` is set, listens on its own ``SO_REUSEPORT`` socket (see
  ``adapters``): with one shared socket, a burst of keep-alive connections all lands on
  one worker (measured: two workers gave 0.95x of one);
- ``child_exit``: the dead worker's metrics files are marked dead.
"""

import os
import shutil


def on_starting(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)


def post_fork(server, worker):
    from course_helpers.serving.adapters import give_worker_own_socket
    from course_helpers.serving.lifecycle import die_with_parent

    die_with_parent(os.getppid())  # the master, which just forked us
    from course_helpers.config import settings

    bind = settings().reuseport_bind
    if bind:
        give_worker_own_socket(worker, bind, backlog=server.cfg.backlog)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
