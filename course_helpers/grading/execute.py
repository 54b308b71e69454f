"""nbgrader preprocessors that keep one bad cell from sinking a whole submission.

``RobustExecute`` is nbgrader's ``Execute`` plus two rules:

* a cell that kills the kernel (``os._exit``, a segfault, the OOM killer) gets an error
  output (so a test cell scores 0), the kernel is replaced, the cells before it are run
  again to rebuild the state, and execution goes on;
* a cell that times out and leaves the kernel unresponsive (it ignores the interrupt)
  is treated the same way, instead of making every following cell time out too.

``RobustOverwriteCells`` re-adds a deleted grade cell even when the cell just before it
in the source is a read-only cell (nbgrader 0.9.6 raises ``KeyError`` there).

``nbgrader_config.py`` installs both when ``course_helpers`` is importable; the grading
harness always does. Both are configured like the classes they extend
(``Execute.timeout``, ``OverwriteCells.add_missing_cells``).
"""

from __future__ import annotations

import copy
import queue
import time
from typing import Any

from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbformat.v4.nbbase import random_cell_id
from nbgrader import utils
from nbgrader.preprocessors import Execute, OverwriteCells
from nbgrader.preprocessors.execute import UnresponsiveKernelError
from traitlets import Float, Integer, Unicode

KERNEL_DIED = "KernelDied"
# Assignments whose cells run a real tool that needs more than the default cell timeout.
# Each assignment states its budget in its introduction; the grader, not the notebook (which
# a student can edit), decides it. a03 starts Prefect's temporary API server in its set-up
# cell: 10-21 s on a quiet machine, 37-65 s measured on a loaded two-CPU grader.
CELL_BUDGET_S: dict[str, int] = {"a03_pipelines": 120}


def cell_budget(assignment: str, default: float | None) -> float | None:
    """Seconds a cell of ``assignment`` may run: its stated budget, never below ``default``
    (None: no limit)."""
    if default is None:
        return None
    return max(float(default), float(CELL_BUDGET_S.get(assignment, 0)))
TIMEOUT = "CellTimeoutError"  # the ename nbgrader's Execute gives a cell that timed out


def error_names(cell: NotebookNode) -> list[str]:
    """The ``ename`` of every error output of a cell."""
    return [o.get("ename", "") for o in cell.get("outputs", []) if o.get("output_type") == "error"]


class RobustExecute(Execute):
    """Execute every cell; a dead or stuck kernel costs the cell that broke it, not the notebook."""

    max_restarts = Integer(
        10, help="Kernel replacements allowed per notebook before the notebook fails."
    ).tag(config=True)
    probe_timeout = Float(
        5.0, help="Seconds a kernel gets to answer after an interrupted timeout."
    ).tag(config=True)
    kernel_log = Unicode(
        "", help="Append the kernel processes' own stdout/stderr to this file ('' = inherit)."
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None):
        self._assignment = ((resources or {}).get("nbgrader") or {}).get("assignment", "")
        self._restarts = 0
        self._broken: set[int] = set()
        return super().preprocess(nb, resources, km)

    def start_new_kernel(self, **kwargs: Any) -> None:
        if not self.kernel_log:
            return super().start_new_kernel(**kwargs)
        with open(self.kernel_log, "ab") as log:
            kwargs.setdefault("stdout", log)
            kwargs.setdefault("stderr", log)
            return super().start_new_kernel(**kwargs)

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int):
        # here, not in preprocess: nbconvert re-initialises the client from the config there
        self.timeout = cell_budget(getattr(self, "_assignment", ""), self.timeout)
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self._fail_cell(cell, KERNEL_DIED,
                            "the Python kernel died while running this cell (os._exit, a crash "
                            "or running out of memory); grading went on in a new kernel")
            self._replace_kernel(index)
            return cell, self.resources
        except CellTimeoutError:
            self._fail_cell(cell, TIMEOUT, f"the cell ran longer than {self.timeout} s and "
                                           "ignored the interrupt; grading went on in a new kernel")
            self._replace_kernel(index)
            return cell, self.resources
        if cell.cell_type == "code" and TIMEOUT in error_names(cell) and not self._responsive():
            self.log.warning("Kernel still busy after the timeout of cell %d: replacing it", index)
            self._replace_kernel(index)
        return cell, resources

    @staticmethod
    def _fail_cell(cell: NotebookNode, ename: str, evalue: str) -> None:
        cell.outputs = list(cell.get("outputs", [])) + [
            new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])]

    def _responsive(self) -> bool:
        """Does the kernel answer a kernel_info request within ``probe_timeout``?"""
        async def probe() -> bool:
            assert self.kc is not None
            msg_id = await ensure_async(self.kc.kernel_info())
            deadline = time.monotonic() + self.probe_timeout
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=left))
                except queue.Empty:
                    return False
                if msg.get("parent_header", {}).get("msg_id") == msg_id:
                    return True
            return False

        try:
            return run_sync(probe)()
        except Exception:  # noqa: BLE001 - a kernel we cannot even ask is not responsive
            return False

    def _replace_kernel(self, index: int) -> None:
        """Kill the kernel, start a new one and re-run the healthy cells before ``index``."""
        self._broken.add(index)
        self._restarts += 1
        if self._restarts > self.max_restarts:
            raise UnresponsiveKernelError(
                f"the kernel had to be replaced more than {self.max_restarts} times")
        self.log.warning("Replacing the kernel after cell %d (replacement %d)", index,
                         self._restarts)
        run_sync(self._async_kill_kernel)()
        self.km = self.create_kernel_manager()
        self.start_new_kernel()
        self.start_new_kernel_client()
        for i, earlier in enumerate(self.nb.cells[:index]):
            if earlier.cell_type != "code" or i in self._broken or error_names(earlier):
                continue
            try:  # a copy: the outputs recorded the first time are the ones graded
                self.execute_cell(copy.deepcopy(earlier), i, store_history=True)
            except (DeadKernelError, CellTimeoutError):
                self._broken.add(i)
                self._replace_kernel(index)
                return

    async def _async_kill_kernel(self) -> None:
        try:
            if self.kc is not None:
                await ensure_async(self.kc.stop_channels())
            if self.km is not None:
                await ensure_async(self.km.shutdown_kernel(now=True))
        except Exception as err:  # noqa: BLE001 - it is being thrown away anyway
            self.log.warning("Could not shut the old kernel down cleanly: %s", err)
        finally:
            self.kc = None
            self.km = None


class RobustOverwriteCells(OverwriteCells):
    """``OverwriteCells`` whose re-added grade cells go after the nearest surviving source cell."""

    def add_missing_grade_cells(self, nb: NotebookNode, resources: Any):
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        order = [c.name for c in source_cells]
        solutions = {c.name for c in source_nb.solution_cells}

        def present() -> dict[str, int]:
            return {c.metadata["nbgrader"]["grade_id"]: i for i, c in enumerate(nb.cells)
                    if "grade_id" in c.metadata.get("nbgrader", {})}

        for grade_cell in source_nb.grade_cells:
            if grade_cell.name in present():
                continue
            self.log.warning("Missing grade cell %s encountered, adding to notebook",
                             grade_cell.name)
            pos = order.index(grade_cell.name)
            new = self.missing_cell_transform(source_cells[pos], grade_cell.max_score,
                                              is_solution=grade_cell.name in solutions)
            new.setdefault("id", random_cell_id())  # nbformat >= 4.5 wants one
            where = present()
            before = [where[name] for name in order[:pos] if name in where]
            nb.cells.insert(max(before) + 1 if before else 0, new)
        return nb, resources


def autograde_preprocessors() -> list[type]:
    """nbgrader's default autograde steps with ``Execute`` swapped for ``GuardedExecute``
    (``RobustExecute`` plus integrity checks and a sandboxed kernel, see guard.py)."""
    from nbgrader.converters import Autograde

    from .guard import GuardedExecute

    return [GuardedExecute if pp is Execute else pp
            for pp in Autograde.class_traits()["autograde_preprocessors"].default()]


def sanitize_preprocessors() -> list[type]:
    """nbgrader's default sanitizing steps with ``OverwriteCells`` made robust."""
    from nbgrader.converters import Autograde

    return [RobustOverwriteCells if pp is OverwriteCells else pp
            for pp in Autograde.class_traits()["sanitize_preprocessors"].default()]


def is_autograded_test(cell: NotebookNode) -> bool:
    """A cell nbgrader scores automatically: a grade cell that is not also a solution."""
    return utils.is_grade(cell) and not utils.is_solution(cell)
