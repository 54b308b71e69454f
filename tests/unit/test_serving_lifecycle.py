"""Workers die with their parent: prctl on Linux, the parent-pid watcher everywhere."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, gone

pytestmark = pytest.mark.unit

FAMILY = """
import os, signal, sys, time
from course_helpers.serving.lifecycle import die_with_parent
pid = os.fork()
if pid == 0:
    if {ignore_term}:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(die_with_parent(os.getppid(), use_prctl={use_prctl}), os.getpid(), flush=True)
    while True:
        time.sleep(0.05)
else:
    time.sleep(60)
"""


@pytest.mark.parametrize("use_prctl,ignore_term,expected", [
    (True, False, "prctl+watcher"),
    (False, False, "watcher"),
    (False, True, "watcher"),  # SIGTERM ignored: the watcher's hard exit still ends it
])
def test_child_stops_within_two_seconds_of_parent_sigkill(use_prctl, ignore_term, expected):
    if use_prctl and not sys.platform.startswith("linux"):
        pytest.skip("needs Linux (prctl)")
    code = FAMILY.format(use_prctl=use_prctl, ignore_term=ignore_term)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        mechanisms, child = parent.stdout.readline().split()
        assert mechanisms == expected
        child = int(child)
        time.sleep(0.3)
        assert not gone(child, within=0.1), "the child should live while its parent does"
        t0 = time.monotonic()
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert gone(child, within=2.0), "the child outlived its parent by more than 2 s"
        print(f"\nchild gone {time.monotonic() - t0:.2f} s after its parent ({expected})")
    finally:
        parent.kill()
        try:
            os.kill(int(child), signal.SIGKILL)
        except (ProcessLookupError, ValueError, NameError, UnboundLocalError):
            pass
