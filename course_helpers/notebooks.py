"""Run lesson notebooks headless, the way CI and instructors do, and measure each one.

For every notebook: wall time, peak resident memory of the kernel's whole process
tree (kernel plus every server it started), the slowest cells, and whatever it left
running; :func:`run_all` prints them as a table and writes ``results.json`` and
``results.csv``, with the ``classroom`` budget (90 s, 1.6 GB; the capstone 300 s; the series
900 s) beside each figure. Run it pinned to one CPU, as on Binder, with
``taskset -c 0 mlops-course notebooks`` (or ``cpus=[0]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from pathlib import Path

from . import config

#: The classroom budget of one lesson, whole process tree (see the design notes).
BUDGET_S = 90.0
BUDGET_MB = 1600.0
#: Lessons allowed longer than ``BUDGET_S`` (the capstone plays a week in production).
LONGER_S = {"10_architecture_best_practices": 300.0}
#: The whole series, 00 to 10, in the classroom profile.
SERIES_BUDGET_S = 900.0


def budget_s(name: str) -> float:
    """The classroom wall-time budget of notebook ``name`` (its file stem), in seconds."""
    return LONGER_S.get(name, BUDGET_S)


def process_memory(proc) -> tuple[int, int]:
    """``(rss, pss)`` of one ``psutil.Process`` in bytes: PSS counts a page shared by several
    processes once in total (RSS where PSS is unreadable; ``(0, 0)`` once it has exited)."""
    import psutil

    try:
        rss = proc.memory_info().rss
    except psutil.Error:
        return 0, 0
    try:
        return rss, getattr(proc.memory_full_info(), "pss", rss)
    except psutil.Error:
        return rss, rss


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
    cpus: int = 0  # CPUs the kernel could use
    slowest_cells: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    peak_pss_mb: float = 0.0  # shared pages counted once (see TreeMemorySampler)
    cpu_s: float = 0.0  # CPU time of the whole tree: what the notebook costs a quiet CPU

    @property
    def within_budget(self) -> bool:
        """Fits the classroom budget: 90 s wall time (see :func:`budget_s`) and 1.6 GB peak for
        the process tree, memory counted as a container limit counts it (PSS; RSS where PSS is
        unknown)."""
        return self.seconds <= budget_s(self.name) and (self.peak_pss_mb or self.peak_rss_mb) <= BUDGET_MB


class TreeMemorySampler:
    """Samples the memory of a process and all its descendants in a thread.

    ``peak_bytes``: the largest sum of resident set sizes (RSS). RSS counts a page shared
    by several processes (a gunicorn master and the workers it forked with the model)
    once per process, so the sum overstates what the tree really holds. ``peak_pss_bytes``:
    the largest sum of proportional set sizes (PSS: a shared page split among its sharers),
    which counts each page once, as a container's memory limit (Binder's) does.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, start) -> CPU seconds seen
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, pid: int) -> "TreeMemorySampler":
        self._pid = pid
        self._thread.start()
        return self

    def sample(self) -> tuple[int, int]:
        """``(rss, pss)`` summed over the tree, in bytes (pss = rss where unreadable)."""
        import psutil

        try:
            root = psutil.Process(self._pid)
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0, 0
        rss = pss = 0
        for p in procs:
            r, q = process_memory(p)
            rss, pss = rss + r, pss + q
            try:
                t = p.cpu_times()
                self._cpu[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass
        return rss, pss

    @property
    def cpu_seconds(self) -> float:
        """CPU time the tree used (user + system, every process seen; a process's last
        interval before it exited is missed): on one dedicated CPU, the least wall time."""
        return sum(self._cpu.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = self.sample()
            self.peak_bytes = max(self.peak_bytes, rss)
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
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


@contextlib.contextmanager
def pinned(cpus: list[int] | None):
    """Run the body with this process (and so every child it starts) on ``cpus`` only."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_notebook(path: str | Path, profile: str = "smoke", timeout_s: int | None = None,
                 save_to: Path | None = None, cpus: list[int] | None = None,
                 env: dict[str, str] | None = None) -> NotebookResult:
    """Execute one notebook top to bottom in ``profile``; never raises for notebook errors.

    ``cpus`` pins the kernel and all it starts to those CPUs (``[0]``: a Binder-like single
    CPU); ``env`` adds variables for the kernel (e.g. ``MLOPS_BACKEND``).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from .supervisor import Supervisor

    path = Path(path).resolve()
    prof = config.get_profile(profile)
    nb = nbformat.read(str(path), as_version=4)
    sampler = TreeMemorySampler()
    client = NotebookClient(
        # a lesson with a longer budget (the capstone's week is one cell) gets it per cell too
        nb, timeout=timeout_s or max(prof.cell_timeout_s, int(budget_s(path.stem))),
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.on_notebook_start = lambda **_: sampler.start(client.km.provisioner.pid)
    cell_started: dict[int, float] = {}
    cell_seconds: dict[int, float] = {}
    client.on_cell_execute = lambda cell, cell_index, **_: cell_started.__setitem__(
        cell_index, time.perf_counter())
    client.on_cell_executed = lambda cell, cell_index, **_: cell_seconds.__setitem__(
        cell_index, time.perf_counter() - cell_started.get(cell_index, time.perf_counter()))
    before = {r.name for r in Supervisor().records()}
    extra = {"MLOPS_PROFILE": prof.name, "MPLBACKEND": "Agg", **(env or {})}
    old_env = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    error = ""
    start = time.perf_counter()
    try:
        with pinned(cpus):
            n_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
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
    slowest = sorted(((i, round(t, 1)) for i, t in cell_seconds.items()),
                     key=lambda x: -x[1])[:3]
    return NotebookResult(path.stem, ok, round(seconds, 2), round(peak / 2**20, 1), error, left,
                          str(save_to / path.name) if save_to else "", n_cpus, slowest,
                          round(sampler.peak_pss_bytes / 2**20, 1), round(sampler.cpu_seconds, 1))


def outputs_text(path: str | Path) -> str:
    """All text outputs of an executed notebook (streams and plain-text results), joined."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def render_table(results: list[NotebookResult], profile: str) -> str:
    """One line per notebook: seconds and peak MB against the classroom budget."""
    lines = [f"{'notebook':<40} {'CPUs':>4} {'seconds':>8} {'CPU s':>6} {'PSS MB':>7} "
             f"{'RSS MB':>7}  {'budget':<7} {'slowest cells (index: s)':<26} status"]
    for r in results:
        budget = "ok" if r.within_budget else "OVER"
        cells = ", ".join(f"{i}: {t:g}" for i, t in r.slowest_cells)
        status = "ok" if r.ok else f"FAILED: {r.error[:80]}"
        lines.append(f"{r.name:<40} {r.cpus:>4} {r.seconds:8.1f} {r.cpu_s:6.1f} {r.peak_pss_mb:7.1f} "
                     f"{r.peak_rss_mb:7.1f}  {budget:<7} {cells:<26} {status}")
    total = sum(r.seconds for r in results)
    series = "ok" if total <= SERIES_BUDGET_S else "OVER"
    longer = ", ".join(f"{n} {s:g} s" for n, s in LONGER_S.items())
    lines.append(f"{'total':<40} {'':>4} {total:8.1f} {sum(r.cpu_s for r in results):6.1f} "
                 f"{'':>7} {'':>7}  {series:<7} series budget {SERIES_BUDGET_S:g} s")
    lines.append(f"budget (applies to the classroom profile; this run: {profile}): {BUDGET_S:g} s "
                 f"({longer}) and {BUDGET_MB:g} MB per notebook, whole process tree, peak PSS "
                 "(the RSS sum counts pages shared by forked workers once per process); CPU s is "
                 f"the tree's CPU time, load average now {os.getloadavg()[0]:.1f}")
    return "\n".join(lines)


def run_all(names: list[str] | None = None, profile: str = "smoke",
            cpus: list[int] | None = None) -> list[NotebookResult]:
    """Run notebooks in order, print a table, and write ``results.json`` and
    ``results.csv`` under ``<workspace>/reports/notebooks/<profile>/``."""
    out_dir = config.workspace_dir("reports", "notebooks", profile)
    results = []
    for path in notebook_paths(names):
        print(f"running {path.name} ({profile}) ...", flush=True)
        res = run_notebook(path, profile=profile, save_to=out_dir, cpus=cpus)
        results.append(res)
        status = "ok" if res.ok else f"FAILED: {res.error}"
        print(f"  {res.seconds:7.1f} s  peak {res.peak_pss_mb or res.peak_rss_mb:7.1f} MB (PSS)  "
              f"{'within' if res.within_budget else 'OVER'} budget  {status}", flush=True)
    rows = [dataclasses.asdict(r) | {"within_budget": r.within_budget} for r in results]
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    with open(out_dir / "results.csv", "w") as fh:
        fh.write("notebook,cpus,seconds,cpu_s,peak_pss_mb,peak_rss_mb,within_budget,ok\n")
        for r in results:
            fh.write(f"{r.name},{r.cpus},{r.seconds},{r.cpu_s},{r.peak_pss_mb},{r.peak_rss_mb},"
                     f"{r.within_budget},{r.ok}\n")
    print(render_table(results, profile))
    print(f"executed notebooks, results.json and results.csv in {out_dir}")
    return results
