"""The student's screen in a real browser: Playwright drives Debian's Chromium (no browser
download) against JupyterLab set up exactly as Binder's postBuild sets it up, on the
students' repository (``mlops-course course student-copy``), in the simulated Binder of
tests/binder/binder_sim.py.

One JupyterLab, one browser, one page for the module. Before the browser opens, the
workspace gets what a student would have after lesson 06 and lesson 01: a registered model
and a sweep in the MLflow store, and a model server running (``mlops-course serve``).
Screenshots land in ``$MLOPS_HOME/reports/browser/`` (CI keeps them as artefacts).

Run: ``pytest -m browser -s``. Needs ``chromium`` (Debian) and ``playwright`` (PyPI).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.binder.binder_sim import launched, log
from tests.helpers import need

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

CHROMIUM = "/usr/bin/chromium"
COURSE = "mlops-with-cloud"
WAIT_MS = 120_000  # cold starts through the proxy on a loaded 2-core machine
SEED = """
from course_helpers import model, tracking
m, X, y = model.train("logreg", profile="smoke")
model.register(m, X.iloc[:5], params={"C": 1.0}, metrics={"auc": 0.9})
tracking.log_run("lesson06-sweep", params={"C": 0.1}, metrics={"auc": 0.8})
"""


def shots_dir() -> Path:
    from course_helpers import config

    path = config.workspace() / "reports" / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


class _Attached:
    """A simulation already running (``MLOPS_BROWSER_ATTACH=<json with url, token, repo, env,
    home, server>``): to iterate on these tests without rebuilding; nothing is torn down."""

    def __init__(self, path: str):
        d = json.loads(Path(path).read_text())
        self.token, self._url = d["token"], d["url"]
        self.repo, self.env_dir, self.home = Path(d["repo"]), Path(d["env"]), Path(d["home"])
        self.notes = {"server": d.get("server", "")}

    def url(self, path: str = "") -> str:
        return self._url.rstrip("/") + "/" + path.lstrip("/")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The students' repository, built and launched as on Binder, with a model server running
    and the MLflow store seeded (classroom state after lessons 01 and 06)."""
    if os.environ.get("MLOPS_BROWSER_ATTACH"):
        yield _Attached(os.environ["MLOPS_BROWSER_ATTACH"])
        return
    need(Path(CHROMIUM).exists(), "Debian's chromium (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        need(False, "playwright (the dev extra)")
    from course_helpers.grading.student import student_copy

    copy = tmp_path_factory.mktemp("browser") / "course-student"
    student_copy(copy)
    with launched(copy, MLOPS_PROFILE="smoke") as (sim, user):
        # what a student has after lessons 06 and 01, prepared side by side
        env = sim.user_env(MLOPS_PROFILE="smoke")
        kw = dict(cwd=sim.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  text=True, **user.popen_kwargs())
        seed = subprocess.Popen([str(sim.env_dir / "bin" / "python"), "-c", SEED], **kw)
        serve = subprocess.Popen([str(sim.env_dir / "bin" / "mlops-course"), "serve",
                                  "--profile", "smoke", "--detach", "--db", "none"], **kw)
        out_seed, _ = seed.communicate(timeout=300)
        # MLflow's UI starts on its first request: start it now, once the store exists (two
        # processes creating a new SQLite store at once collide in its migrations)
        threading.Thread(target=sim.poll, args=("mlflow/", lambda s, b: s == 200, 180),
                         daemon=True).start()
        out_serve, _ = serve.communicate(timeout=300)
        assert seed.returncode == 0, out_seed
        assert serve.returncode == 0, out_serve
        sim.notes["server"] = next(w for w in out_serve.split() if w.startswith("http://"))
        log(f"model server at {sim.notes['server']}")
        yield sim


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = chromium.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()
            chromium.close()


@pytest.fixture(scope="module")
def page(lab, browser):
    page = browser.new_page()
    page.goto(lab.url(f"lab?reset&token={lab.token}"))  # a fresh workspace: the launcher
    page.wait_for_selector(".jp-Launcher")
    return page


def shot(page, name: str) -> Path:
    path = shots_dir() / f"{name}.png"
    page.screenshot(path=str(path))
    log(f"screenshot {path}")
    return path


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=top).click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def open_path(page, lab, path: str) -> None:
    """Open a file in JupyterLab through its URL (as a Binder ``urlpath=lab/tree/...`` does)."""
    page.goto(lab.url(f"lab/tree/{path}?token={lab.token}"))
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Cell")
    # JupyterLab writes the kernel's language_info into the notebook once the kernel is up
    page.wait_for_selector(".jp-NotebookPanel:visible "
                           ".jp-Notebook-ExecutionIndicator[data-status='idle']")
    page.wait_for_timeout(1500)


def dirty_tabs(page) -> list[str]:
    return page.locator(".lm-TabBar-tab.jp-mod-dirty").all_inner_texts()


# --------------------------------------------------------------------------- the checks

def test_no_news_prompt(page):
    page.wait_for_timeout(4000)  # the prompt shows a few seconds after launch when enabled
    shot(page, "01_launcher")
    assert page.get_by_text("official Jupyter news").count() == 0
    assert page.locator(".jp-Notification-Toast").count() == 0, \
        page.locator(".jp-Notification-Toast").all_inner_texts()


@pytest.mark.parametrize("title", ["MLflow UI", "Locust UI"])
def test_launcher_cards_have_icons(page, title):
    card = page.locator(f'.jp-LauncherCard[title^="{title}"]')
    assert card.count() == 1, page.locator(".jp-LauncherCard").evaluate_all(
        "cards => cards.map(c => c.title)")
    icon = card.locator(".jp-LauncherCard-icon img")
    assert icon.count() == 1, card.inner_html()
    assert icon.evaluate("img => img.complete && img.naturalWidth > 0"), "the icon did not load"
    box = icon.bounding_box()
    assert box and box["width"] > 10 and box["height"] > 10


def _open_card(page, browser, title: str):
    if not page.locator(".jp-Launcher").first.is_visible():
        menu(page, "File", "New Launcher")
    with browser.expect_page(timeout=WAIT_MS) as info:
        page.locator(f'.jp-LauncherCard[title^="{title}"]').click()
    ui = info.value
    ui.wait_for_load_state("domcontentloaded")
    return ui


def test_mlflow_ui_through_the_proxy_shows_the_course_experiments(page, browser, lab):
    ui = _open_card(page, browser, "MLflow UI")
    try:
        assert ui.url.startswith(lab.url("mlflow/")), ui.url
        ui.get_by_text("lesson06-sweep").first.wait_for()
        ui.get_by_text("simple-system").first.wait_for()
        shot(ui, "02_mlflow_experiments")
    finally:
        ui.close()


def test_locust_ui_through_the_proxy_has_the_server_host(page, browser, lab):
    ui = _open_card(page, browser, "Locust UI")
    try:
        assert ui.url.startswith(lab.url("locust/")), ui.url
        host = ui.locator("input[name=host]")
        host.wait_for()
        shot(ui, "03_locust_host")
        assert host.input_value() == lab.notes["server"]
    finally:
        ui.close()


def test_assignment_list_lists_the_assignments(page, lab):
    menu(page, "Nbgrader", "Assignment List")
    released = page.locator("#released_assignments_list")
    released.get_by_text("a07_features").wait_for()
    names = sorted(lab.repo.joinpath("assignments", "release").iterdir())
    text = released.inner_text()
    assert all(n.name in text for n in names), text
    released.locator(".list_item", has_text="a00_warmup").get_by_role("button",
                                                                      name="Fetch").click()
    page.locator("#fetched_assignments_list").get_by_text("a00_warmup").first.wait_for()
    shot(page, "04_assignment_list")
    assert (lab.repo / "a00_warmup" / "a00_warmup.ipynb").is_file()


def test_assignment_opens_unmodified_and_validate_reports_failures(page, lab):
    need((lab.repo / "a00_warmup" / "a00_warmup.ipynb").is_file(), "a00_warmup fetched first")
    open_path(page, lab, "a00_warmup/a00_warmup.ipynb")
    assert dirty_tabs(page) == [], "the assignment opened as modified"
    page.locator(".validate-button").first.click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_text("The following cell failed").first.wait_for()
    shot(page, "05_validate")
    dialog.get_by_role("button").last.click()


def test_terminal_finds_the_course_command(page, lab):
    marker = lab.home / "which-mlops-course.txt"
    menu(page, "File", "New")
    page.locator(".lm-Menu-itemLabel", has_text="Terminal").first.click()
    term = page.locator(".jp-Terminal").last
    term.locator(".xterm-helper-textarea").wait_for(state="attached")
    page.wait_for_timeout(2000)  # the login shell reads its profile
    term.click()
    page.keyboard.type(f"command -v mlops-course > {marker}; mlops-course --help | head -3\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (marker.exists() and marker.read_text().strip()):
        time.sleep(0.5)
    page.wait_for_timeout(1000)
    shot(page, "06_terminal")
    assert marker.exists(), "the terminal did not run the command"
    assert Path(marker.read_text().strip()) == lab.env_dir / "bin" / "mlops-course", \
        marker.read_text()


def test_lesson_opens_unmodified_and_run_all_completes(page, lab):
    """Notebook 00, Run All. Last: its cleanup cell stops every server of the workspace."""
    open_path(page, lab, "notebooks/00_welcome_and_setup.ipynb")
    assert dirty_tabs(page) == [], "the lesson opened as modified"
    panel = page.locator(".jp-NotebookPanel:visible")
    status = panel.locator(".jp-Notebook-ExecutionIndicator")
    menu(page, "Run", "Run All Cells")
    # JupyterLab renders only the cells near the viewport: wait until the kernel has been idle
    # with no cell queued ("[*]") for a few seconds, then read the saved notebook itself.
    deadline, quiet = time.monotonic() + 300, 0
    page.wait_for_timeout(2000)
    while time.monotonic() < deadline and quiet < 4:
        busy = status.get_attribute("data-status") != "idle" or panel.locator(
            ".jp-InputPrompt", has_text="[*]").count()
        quiet = 0 if busy else quiet + 1
        time.sleep(1)
    shot(page, "07_lesson00_run_all")
    menu(page, "File", "Save Notebook")
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-current"
                           ".jp-mod-dirty')")
    import nbformat

    nb = nbformat.read(str(lab.repo / "notebooks" / "00_welcome_and_setup.ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [f"{o.ename}: {o.evalue}" for c in code for o in c.outputs
              if o.output_type == "error"]
    assert errors == [], errors
    not_run = [i for i, c in enumerate(code) if c.execution_count is None]
    assert not_run == [], f"code cells not run (0-based among code cells): {not_run}"


def test_screenshots_saved():
    names = sorted(p.name for p in shots_dir().glob("*.png"))
    log(f"screenshots in {shots_dir()}: {', '.join(names)}")
    assert len(names) >= 7, names
