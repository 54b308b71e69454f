"""A throwaway copy of the nbgrader course directory, and what grading it produced.

Everything nbgrader writes (gradebook, release/, submitted/, autograded/, feedback/) goes
into a scratch directory under the workspace; the course checkout is only read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
from nbformat.warnings import MissingIDFieldWarning
from nbgrader import utils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps.api import NbGraderAPI
from sqlalchemy.exc import SAWarning
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from ..errors import CourseError
from .execute import (KERNEL_DIED, TIMEOUT, autograde_preprocessors, error_names,
                      is_autograded_test, sanitize_preprocessors)
from .guard import TAMPER, cause

COURSE_ID = "mlops-with-cloud"
CONFIG_FILE = "nbgrader_config.py"


@dataclasses.dataclass
class CellResult:
    """One graded cell of one autograded notebook."""

    grade_id: str
    kind: str  # "auto" (a test cell), "manual" (answer or task graded by hand)
    score: float | None
    max_score: float
    error: str = ""  # "Ename: message" of the first error, or why the cell scored 0
    hidden: bool = False  # nothing visible to run: the tests were stripped from the release


@dataclasses.dataclass
class NotebookResult:
    """The grades of one notebook of one student."""

    student: str
    assignment: str
    notebook: str
    cells: list[CellResult]
    events: list[str] = dataclasses.field(default_factory=list)
    tamper: list[str] = dataclasses.field(default_factory=list)  # what the guard caught

    def auto(self, *, visible_only: bool = False) -> list[CellResult]:
        return [c for c in self.cells if c.kind == "auto" and not (visible_only and c.hidden)]

    @property
    def auto_score(self) -> float:
        return sum(c.score or 0.0 for c in self.auto())

    @property
    def auto_max(self) -> float:
        return sum(c.max_score for c in self.auto())

    @property
    def manual_max(self) -> float:
        return sum(c.max_score for c in self.cells if c.kind == "manual")


def first_line(text: str, width: int = 140) -> str:
    """The first non-empty line of ``text``, shortened to ``width`` characters."""
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook; a CourseError names the file and what is wrong with it."""
    try:
        with warnings.catch_warnings():  # cells nbgrader re-added have no id: harmless
            warnings.simplefilter("ignore", MissingIDFieldWarning)
            return nbformat.read(str(path), as_version=4)
    except Exception as err:  # noqa: BLE001 - JSON, schema, encoding: all the same to the user
        raise CourseError(f"{path} is not a readable notebook ({type(err).__name__}: "
                          f"{first_line(err)})") from None


def cell_kinds(nb: nbformat.NotebookNode) -> dict[str, str]:
    """grade_id -> "auto" | "manual" for every graded cell, in notebook order."""
    kinds: dict[str, str] = {}
    for cell in nb.cells:
        md = cell.get("metadata", {}).get("nbgrader", {})
        if "grade_id" not in md:
            continue
        if is_autograded_test(cell):
            kinds[md["grade_id"]] = "auto"
        elif utils.is_grade(cell) or md.get("task"):
            kinds[md["grade_id"]] = "manual"
    return kinds


def has_code(source: str) -> bool:
    """True if a code cell's source has a line that is not blank or a comment."""
    return any(s.strip() and not s.strip().startswith("#") for s in source.splitlines())


@contextlib.contextmanager
def nbgrader_environment() -> Iterator[None]:
    """PATH with this Python's bin first: a new gradebook runs ``alembic`` as a subprocess."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old])
    try:
        yield
    finally:
        os.environ["PATH"] = old


class ScratchCourse:
    """A copy of the course directory's config and sources, graded with nbgrader's API."""

    def __init__(self, root: Path, source: Path, assignments: list[str], *,
                 timeout: int | None = None, config_file: Path | None = None,
                 sandbox: str = "none", hide: list[Path] | None = None) -> None:
        self.root = root
        self.sandbox = sandbox
        shutil.rmtree(root, ignore_errors=True)
        (root / "source").mkdir(parents=True)
        (root / "exchange").mkdir()
        for name in assignments:
            shutil.copytree(source / name, root / "source" / name,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__",
                                                          "mutants.yaml"))
        cfg = Config()
        if config_file is not None and config_file.exists():
            shutil.copy(config_file, root / CONFIG_FILE)
            cfg.merge(PyFileConfigLoader(CONFIG_FILE, path=str(root)).load_config())
        cfg.merge(self._overrides(timeout))
        cfg.SandboxKernelManager.mode = sandbox
        cfg.SandboxKernelManager.hide = sorted({str(p) for p in [root, *(hide or [])]})
        self.log = logging.getLogger("course_helpers.grading.nbgrader")
        self.log.propagate = False  # nbgrader's chatter goes into each result's captured log
        if not self.log.handlers:
            self.log.addHandler(logging.NullHandler())
        with nbgrader_environment():
            self.api = NbGraderAPI(config=cfg, log=self.log)

    def _overrides(self, timeout: int | None) -> Config:
        cfg = Config()
        cfg.CourseDirectory.root = str(self.root)
        cfg.CourseDirectory.db_url = f"sqlite:///{self.root / 'gradebook.db'}"
        cfg.CourseDirectory.course_id = COURSE_ID
        cfg.Exchange.root = str(self.root / "exchange")
        cfg.OverwriteCells.add_missing_cells = True
        cfg.Execute.interrupt_on_timeout = True
        if timeout is not None:
            cfg.Execute.timeout = int(timeout)
        cfg.RobustExecute.kernel_log = str(self.root / "kernels.log")
        cfg.Autograde.autograde_preprocessors = autograde_preprocessors()
        cfg.Autograde.sanitize_preprocessors = sanitize_preprocessors()
        return cfg

    # -- paths -------------------------------------------------------------------------
    def path(self, step: str, assignment: str, student: str | None = None) -> Path:
        return (self.root / step / student / assignment) if student else (
            self.root / step / assignment)

    def notebooks(self, assignment: str) -> list[str]:
        """Names (without .ipynb) of the assignment's notebooks, from the source."""
        return sorted(p.stem for p in self.path("source", assignment).glob("*.ipynb"))

    # -- nbgrader steps ------------------------------------------------------------------
    def _run(self, what: str, call: Callable[[], dict], **attrs: str) -> tuple[bool, str]:
        with nbgrader_environment(), utils.temp_attrs(self.api.coursedir, **attrs), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", SAWarning)  # nbgrader's own session handling
            result = call()
        text = (result.get("log", "") + "\n" + result.get("error", "")).strip()
        if not result["success"]:
            self.log.debug("%s failed:\n%s", what, text)
        return bool(result["success"]), text

    def generate(self, assignment: str) -> None:
        """``generate_assignment --force`` with the gradebook; CourseError if it fails."""
        ok, text = self._run("generate_assignment",
                             lambda: self.api.generate_assignment(assignment, force=True))
        if not ok:
            errors = [ln for ln in text.splitlines() if ln.startswith("[ERROR]")]
            raise CourseError(f"nbgrader could not generate {assignment}: "
                              f"{first_line(errors[0] if errors else text, 300)}")

    def submit(self, assignment: str, student: str, notebooks: dict[str, Path]) -> None:
        """Put notebooks (name -> file) where nbgrader expects a collected submission."""
        dest = self.path("submitted", assignment, student)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for name, src in notebooks.items():
            shutil.copyfile(src, dest / f"{name}.ipynb")

    def autograde(self, assignment: str, student: str,
                  notebook: str | None = None) -> tuple[bool, str, float]:
        """Autograde one submission (one notebook of it if named): ok, log, seconds."""
        started = time.monotonic()
        ok, text = self._run("autograde",
                             lambda: self.api.autograde(assignment, student, force=True),
                             notebook_id=notebook or "*")
        return ok, text, time.monotonic() - started

    def feedback(self, assignment: str, student: str) -> list[Path]:
        """Generate the HTML feedback of one autograded submission; answers not graded
        by hand yet show as pending (nbgrader's template shows them as 0)."""
        ok, _ = self._run("generate_feedback",
                          lambda: self.api.generate_feedback(assignment, student, force=True))
        files = sorted(self.path("feedback", assignment, student).glob("*.html")) if ok else []
        for html in files:
            res = self.result(assignment, student, html.stem)
            pending = {c.grade_id: c.max_score for c in res.cells
                       if c.kind == "manual" and c.score is None}
            html.write_text(mark_pending(html.read_text(), pending))
        return files

    def max_score(self, assignment: str) -> float:
        """Total points of the assignment (autograded and graded by hand)."""
        with Gradebook(self.api.coursedir.db_url, COURSE_ID) as gb:
            return float(gb.find_assignment(assignment).max_score)

    # -- results -------------------------------------------------------------------------
    def result(self, assignment: str, student: str, notebook: str) -> NotebookResult:
        """Per-cell grades of an autograded notebook, with why each failing cell failed."""
        release = read_notebook(self.path("release", assignment) / f"{notebook}.ipynb")
        meta = {c.metadata["nbgrader"]["grade_id"]: (c.metadata["nbgrader"], c.source)
                for c in release.cells if "grade_id" in c.get("metadata", {}).get("nbgrader", {})}
        graded = self.path("autograded", assignment, student) / f"{notebook}.ipynb"
        ran: dict[str, nbformat.NotebookNode] = {}
        events: list[str] = []
        tamper: list[str] = []
        for i, cell in enumerate(read_notebook(graded).cells if graded.exists() else []):
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", f"cell {i + 1}")
            ran[gid] = cell
            if KERNEL_DIED in error_names(cell):
                events.append(f"{gid} killed the kernel")
            elif TIMEOUT in error_names(cell):
                events.append(f"{gid} timed out (interrupted at the time limit)")
            if TAMPER in error_names(cell):
                tamper.append(cause(next(o.get("evalue", "") for o in cell.outputs
                                         if o.get("ename") == TAMPER)))
        scores: dict[str, float | None] = {}
        with Gradebook(self.api.coursedir.db_url, COURSE_ID) as gb:
            with contextlib.suppress(MissingEntry):
                # nbgrader's Grade.score is 0 when nothing is set: keep "not graded yet"
                scores = {g.name: None if g.auto_score is None and g.manual_score is None
                          else g.score for g in
                          gb.find_submission_notebook(notebook, assignment, student).grades}
        cells = []
        for gid, kind in cell_kinds(release).items():
            md, source = meta[gid]
            score = scores.get(gid) if graded.exists() else None
            cells.append(CellResult(
                gid, kind, (score or 0.0) if kind == "auto" else score, float(md.get("points", 0)),
                error=_why(ran.get(gid)) if kind == "auto" else "",
                hidden=kind == "auto" and not has_code(source)))
        return NotebookResult(student, assignment, notebook, cells, events=events,
                              tamper=list(dict.fromkeys(tamper)))


def _why(cell: nbformat.NotebookNode | None) -> str:
    """Why nbgrader gives a test cell 0: its first error, or stderr output."""
    if cell is None:
        return "not run"
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return first_line(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".rstrip(": "))
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            return first_line("wrote to stderr (counts as a failure): " + out.get("text", ""))
    return ""


def mark_pending(html: str, pending: dict[str, float]) -> str:
    """nbgrader feedback HTML with "pending" instead of "0.0" for answers not graded yet
    (grade_id -> points), and the pending points next to the notebook's score."""
    for gid, points in pending.items():
        anchor = re.escape(gid)
        html = re.sub(rf'(<a href="#{anchor}">[^<]*</a> \(Score: )0\.0( / )', r"\1pending\2", html)
        html = re.sub(rf'(<a name="{anchor}"></a>.*?Score: )0\.0( / )', r"\1pending\2", html,
                      count=1, flags=re.S)
    if pending:
        total = sum(pending.values())
        html = re.sub(r"(\(Score: [\d.]+ / [\d.]+)\)</h4>",
                      rf"\1; {total:g} pending, graded by hand)</h4>", html, count=1)
    return html


HIDDEN_BLOCK = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?",
                          re.S | re.M)


def without_hidden_tests(source: str) -> str:
    """A cell's source with its ``### BEGIN/END HIDDEN TESTS`` blocks removed."""
    return HIDDEN_BLOCK.sub("", source)


def strip_hidden_tests(path: Path) -> None:
    """Rewrite a source notebook without its ``### BEGIN HIDDEN TESTS`` blocks."""
    from nbgrader.preprocessors import ClearHiddenTests

    nb = read_notebook(path)
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    nbformat.write(nb, str(path))


def tampering(release: nbformat.NotebookNode, submitted: nbformat.NotebookNode) -> list[str]:
    """What a student changed that grading puts back: deleted grade cells, edited locked cells."""
    theirs = {c.metadata["nbgrader"]["grade_id"]: c for c in submitted.cells
              if "grade_id" in c.get("metadata", {}).get("nbgrader", {})}
    notes = []
    for cell in release.cells:
        md = cell.get("metadata", {}).get("nbgrader", {})
        gid = md.get("grade_id")
        if gid is None:
            continue
        if gid not in theirs:
            if md.get("grade") or md.get("task"):
                notes.append(f"{gid} was deleted (put back for grading)")
        elif md.get("locked") and (without_hidden_tests(theirs[gid].source).strip()
                                   != without_hidden_tests(cell.source).strip()):
            # a copy of the source notebook holds the hidden tests: not an edit
            notes.append(f"{gid} was edited (restored from the source)")
    return notes
