"""Run lesson notebooks headless, the way CI and instructors do, and measure each one.

For every notebook: wall time, peak resident memory of the kernel's whole process
tree (kernel plus every server it started), and whatever it left running.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

from . import config


@dataclasses.dataclass
class NotebookResult:
    """Outcome of one headless run; ``peak_rss_mb`` covers the kernel's process tree."""

    name: str
    ok: bool
    seconds: float
    peak_rss_mb: float
    error: str = ""
    left_running: list[str] = dataclasses.field(default_factory=list)
    output: str = ""


class TreeMemorySampler:
    """Samples the summed RSS of a process and all its descendants in a thread."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, pid: int) -> "TreeMemorySampler":
        self._pid = pid
        self._thread.start()
        return self

    def sample(self) -> int:
        import psutil

        try:
            root = psutil.Process(self._pid)
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.sample())
            self._stop.wait(self.interval_s)

    def stop(self) -> int:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return self.peak_bytes


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """``notebooks/*.ipynb`` in order, or the named ones (paths or stems)."""
    root = config.repo_root() or Path.cwd()
    if not names:
        return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    out = []
    for name in names:
        path = Path(name)
        if not path.exists():
            path = root / "notebooks" / (name if name.endswith(".ipynb") else f"{name}.ipynb")
        if not path.exists():
            raise FileNotFoundError(f"no notebook {name!r} (looked in {root / 'notebooks'})")
        out.append(path)
    return out


def has_outputs(path: str | Path) -> list[int]:
    """Indices of code cells that carry outputs or an execution count (should be stripped)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]


def run_notebook(path: str | Path, profile: str = "smoke", timeout_s: int | None = None,
                 save_to: Path | None = None) -> NotebookResult:
    """Execute one notebook top to bottom in ``profile``; never raises for notebook errors."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from .supervisor import Supervisor

    path = Path(path).resolve()
    prof = config.get_profile(profile)
    nb = nbformat.read(str(path), as_version=4)
    sampler = TreeMemorySampler()
    client = NotebookClient(
        nb, timeout=timeout_s or prof.cell_timeout_s, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.on_notebook_start = lambda **_: sampler.start(client.km.provisioner.pid)
    before = {r.name for r in Supervisor().records()}
    old_env = {k: os.environ.get(k) for k in ("MLOPS_PROFILE", "MPLBACKEND")}
    os.environ["MLOPS_PROFILE"] = prof.name
    os.environ["MPLBACKEND"] = "Agg"
    error = ""
    start = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        error = str(err).strip().splitlines()[-1][:500] if str(err).strip() else type(err).__name__
        error = f"{type(err).__name__}: {error}"
    except Exception as err:  # kernel failed to start, bad JSON...
        error = f"{type(err).__name__}: {err}"
    finally:
        seconds = time.perf_counter() - start
        peak = sampler.stop()
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    sup = Supervisor()
    left = [r.name for r in sup.records() if r.name not in before and r.is_alive()]
    for name in left:
        sup.stop(name)
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(save_to / path.name))
    ok = not error and not left
    if left and not error:
        error = f"left running after the last cell: {', '.join(left)}"
    return NotebookResult(path.stem, ok, round(seconds, 2), round(peak / 2**20, 1), error, left,
                          str(save_to / path.name) if save_to else "")


def run_all(names: list[str] | None = None, profile: str = "smoke") -> list[NotebookResult]:
    """Run notebooks in order, print a table, and write ``reports/notebooks-<profile>.json``."""
    out_dir = config.workspace_dir("reports", "notebooks", profile)
    results = []
    for path in notebook_paths(names):
        print(f"running {path.name} ({profile}) ...", flush=True)
        res = run_notebook(path, profile=profile, save_to=out_dir)
        results.append(res)
        status = "ok" if res.ok else f"FAILED: {res.error}"
        print(f"  {res.seconds:7.1f} s  peak {res.peak_rss_mb:7.1f} MB  {status}", flush=True)
    report = out_dir / "results.json"
    report.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    print(f"executed notebooks and results.json in {out_dir}")
    return results
