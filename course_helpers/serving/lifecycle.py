"""Workers that die with their master.

If the gunicorn master is SIGKILLed, its workers are re-parented to init and would go on
serving (measured: minutes) while the supervisor sees the master dead. Each worker asks
Linux to send it SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and, on every
system, watches its parent pid from a thread: a changed parent means SIGTERM (uvicorn stops
accepting and finishes what is in flight), and a hard exit ``grace_s`` later.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Linux only: ask the kernel to send ``sig`` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int, poll_s: float = 0.2, grace_s: float = 1.5,
                    use_prctl: bool = True) -> str:
    """Stop this process within ``poll_s + grace_s`` seconds after ``parent_pid`` exits.

    Returns the mechanisms in use, e.g. ``"prctl+watcher"`` (``use_prctl=False`` leaves the
    watcher alone, as on systems without prctl).
    """
    used = ["prctl"] if use_prctl and set_parent_death_signal() else []

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(poll_s):
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                if not stop.wait(grace_s):
                    os._exit(1)

    threading.Thread(target=watch, name="parent-watcher", daemon=True).start()
    used.append("watcher")
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return "+".join(used)
