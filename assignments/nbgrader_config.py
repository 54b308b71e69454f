"""nbgrader configuration of the course directory (this folder).

Run nbgrader from here (``cd assignments && nbgrader generate_assignment a00_warmup``), or let
``mlops-course grade ci|check|batch`` do it: the harness copies this folder into a scratch
directory under the workspace and runs there, so grading never writes into the checkout.

Environment knobs:
  MLOPS_GRADING_TIMEOUT  seconds one cell may run when autograding (default 30)
  MLOPS_EXCHANGE         the exchange directory for release/fetch/submit/collect
                         (default: ./exchange, created on demand; ~/.mlops/exchange when
                         this folder is not writable)
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821 - provided by nbgrader's config loader

HERE = Path(__file__).resolve().parent


def _writable_dir(*candidates: Path) -> str:
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return str(path)
    return str(candidates[-1])


c.CourseDirectory.course_id = "mlops-with-cloud"
c.CourseDirectory.root = str(HERE)  # gradebook.db, release/, submitted/... live here (git-ignored)

# Student code runs with a per-cell time limit; a cell that runs over is interrupted and
# scores 0, and grading goes on.
c.Execute.timeout = int(os.environ.get("MLOPS_GRADING_TIMEOUT", "30"))
c.Execute.interrupt_on_timeout = True

# A deleted test cell is put back (and run) instead of silently losing its points; edited
# read-only and test cells are restored from the source by nbgrader anyway.
c.OverwriteCells.add_missing_cells = True

# Wrong solutions kept beside an assignment for `mlops-course grade mutants`, and the
# instructor's own scripts (``instructor_*``, e.g. what generated an assignment's data and its
# hidden test set), never reach students (release) nor a student's sandbox (autograde).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback",
                            "mutants.yaml", "instructor_*"]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# The assignment-list and course-list extensions need an exchange they can write to.
c.Exchange.root = _writable_dir(
    *([Path(os.environ["MLOPS_EXCHANGE"])] if os.environ.get("MLOPS_EXCHANGE") else []),
    HERE / "exchange",
    Path.home() / ".mlops" / "exchange",
)

# With the course helpers installed, a cell that kills or wedges the kernel costs that cell,
# not the whole notebook (see course_helpers/grading/execute.py).
try:
    from course_helpers.grading.execute import autograde_preprocessors, sanitize_preprocessors
except ImportError:
    pass
else:
    c.Autograde.autograde_preprocessors = autograde_preprocessors()
    c.Autograde.sanitize_preprocessors = sanitize_preprocessors()
