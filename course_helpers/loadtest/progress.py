"""Progress for long waits that fits both a terminal and a log file.

On a terminal or in Jupyter: a tqdm bar that redraws at most once a second. Anywhere else
(``make demo > file``, CI): one line when the phase starts and one when it ends, so a log
gets two lines per phase instead of hundreds of redraws.
"""

from __future__ import annotations

import sys
import time


def interactive(stream=None) -> bool:
    """True in a Jupyter kernel, or when ``stream`` (default stderr, tqdm's) is a terminal."""
    if "ipykernel" in sys.modules:
        return True
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Phase:
    """Progress of one phase of ``total`` units (seconds by default): ``update_to(n)``
    as it goes, ``close(summary)`` at the end. ``mininterval_s``: fastest redraw."""

    def __init__(self, desc: str, total: float, unit: str = "s", *,
                 mininterval_s: float = 1.0, force_lines: bool | None = None) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.started = time.monotonic()
        self.lines = (not interactive()) if force_lines is None else force_lines
        self._bar = None
        if self.lines:
            print(f"{desc}: started ({total:g} {unit})", flush=True)
        else:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False,
                             mininterval=mininterval_s, maxinterval=max(mininterval_s, 10.0))

    def update_to(self, n: float) -> None:
        """Progress is now ``n`` of ``total`` (redrawn at most once per ``mininterval_s``)."""
        if self._bar is not None:
            n = min(self.total, n)
            if n > self._bar.n:
                self._bar.update(n - self._bar.n)

    def close(self, summary: str = "") -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.lines:
            took = time.monotonic() - self.started
            print(f"{self.desc}: done in {took:.0f} s" + (f", {summary}" if summary else ""),
                  flush=True)
            self.lines = False  # once

    def __enter__(self) -> "Phase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
