"""CI/CD for ML (lesson 05): code, data and model tests as gates, workflow files, promotion.

A change reaches production only through gates, in order, each one a command that exits
non-zero and names what failed:

``code``     the unit tests of the pipeline's steps (pytest, in a subprocess)
``data``     a fresh batch honours the data contract (pandera, :func:`pipeline.steps.validate`)
``train``    train a candidate on it; save it and its held-out rows as CI artifacts
``model``    the candidate's tests: quality floor, no regression against the champion, valid
             and deterministic probabilities, no weak slice, single-row latency, the serving
             contract (it accepts the 30 features as a plain array)
``promote``  register the candidate and move ``@champion`` to it if it beats the champion
             (continuous delivery: the servers follow the alias)

``mlops-course ci run --stages code,data,train,model`` is what a pull request runs;
``--stages ...,promote`` is the delivery job on the main branch. Stages share state through
``<workspace>/ci/`` so a workflow can run them as separate steps, like a real CI system passes
artifacts between jobs. The workflow templates in ``course_helpers/templates/`` (GitHub
Actions, GitLab CI) call exactly these commands; :func:`validate_workflow` checks them offline
against their JSON schemas.

Importing this module is cheap: pandas, scikit-learn and MLflow load inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import config
from .errors import CourseError

STAGES = ("code", "data", "train", "model", "promote")
PR_STAGES = ("code", "data", "train", "model")
TEMPLATES = Path(__file__).resolve().parent / "templates"
WORKFLOW_SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci"}


@dataclasses.dataclass
class Thresholds:
    """What the model gate demands. Latency is in-process, one row at a time (p95)."""

    min_auc: float = 0.70
    max_regression: float = 0.01  # a change may cost at most this much AUC vs the champion
    min_delta: float = 0.001  # ... and must gain this much to be promoted
    min_slice_auc: float = 0.60
    max_latency_ms: float = 50.0


@dataclasses.dataclass
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@dataclasses.dataclass
class GateResult:
    """One stage: passed or not, how long it took, and one line per check."""

    stage: str
    passed: bool
    seconds: float
    checks: list[Check] = dataclasses.field(default_factory=list)
    error: str = ""

    def lines(self) -> list[str]:
        head = f"[{self.stage}] {'passed' if self.passed else 'FAILED'} ({self.seconds:.1f} s)"
        out = [head] + [f"  {c.line()}" for c in self.checks]
        if self.error:
            out.append(f"  {self.error}")
        return out


def state_dir() -> Path:
    """Where stages leave artifacts for the next ones: ``<workspace>/ci``."""
    return config.workspace_dir("ci")


# -- the gates (plain functions; tests call them directly) --------------------------------
def code_gate(paths: Sequence[str | Path] | None = None, marker: str = "unit",
              timeout: float = 600.0) -> GateResult:
    """Run the pipeline steps' unit tests with pytest in a subprocess."""
    t0 = time.perf_counter()
    root = config.repo_root()
    if paths is None:
        default = root / "tests" / "unit" / "test_pipeline_steps.py" if root else None
        if default is None or not default.exists():
            return GateResult("code", False, 0.0, error=(
                "no tests to run: the code gate needs the course checkout (tests/unit/)"))
        paths = [default]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no",
           "-m", marker,
           *[str(p) for p in paths]]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             cwd=str(root) if root else None)
    except subprocess.TimeoutExpired:
        return GateResult("code", False, time.perf_counter() - t0,
                          error=f"the tests ran over {timeout:.0f} s")
    summary = next((ln.strip("= ") for ln in reversed(out.stdout.splitlines()) if ln.strip()),
                   "no output")
    check = Check("unit tests", out.returncode == 0, summary)
    failed = [ln.split(" - ")[0] for ln in out.stdout.splitlines() if ln.startswith("FAILED ")]
    error = ("failing: " + ", ".join(failed[:5])) if failed else ""
    return GateResult("code", check.passed, round(time.perf_counter() - t0, 2), [check], error)


def data_gate(df) -> GateResult:
    """The batch against the data contract; every violation is listed."""
    from .pipeline import steps

    t0 = time.perf_counter()
    try:
        steps.validate(df)
    except steps.DataValidationError as err:
        checks = [Check("data contract", False, p) for p in err.problems]
        return GateResult("data", False, round(time.perf_counter() - t0, 2), checks)
    pos = float(df[steps.LABEL].mean())
    return GateResult("data", True, round(time.perf_counter() - t0, 2), [
        Check("data contract", True, f"{len(df)} rows, {df.shape[1] - 1} features, "
                                     f"positive rate {pos:.1%}")])


def latency_p95_ms(model, X, n: int = 200) -> float:
    """p95 of predicting one row at a time, in-process, from plain arrays (as the server does)."""
    import numpy as np

    rows = X.to_numpy()[:n]
    model.predict_proba(rows[:1])  # warm up
    times = []
    for i in range(len(rows)):
        t = time.perf_counter()
        model.predict_proba(rows[i:i + 1])
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 95))


def model_gate(model, X_test, y_test, champion=None,
               thresholds: Thresholds | None = None) -> GateResult:
    """The candidate's tests. ``champion``: the production model (re-scored on the same rows)."""
    th = thresholds or Thresholds()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # the serving path sends plain arrays on purpose: no feature-name warnings
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        checks = _model_checks(model, X_test, y_test, champion, th)
    return GateResult("model", all(c.passed for c in checks), round(time.perf_counter() - t0, 2),
                      checks)


def _model_checks(model, X_test, y_test, champion, th: Thresholds) -> list[Check]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from .pipeline import steps

    checks = []
    m = steps.evaluate(model, X_test, y_test)
    checks.append(Check("quality floor", m["auc"] >= th.min_auc,
                        f"auc {m['auc']:.4f} (floor {th.min_auc:.2f})"))
    if champion is not None:
        c = steps.evaluate(champion, X_test, y_test)
        checks.append(Check("no regression", m["auc"] >= c["auc"] - th.max_regression,
                            f"auc {m['auc']:.4f} vs champion {c['auc']:.4f} "
                            f"(may lose at most {th.max_regression:g})"))
    else:
        checks.append(Check("no regression", True, "no champion yet"))
    arr = X_test.to_numpy()
    try:
        p1 = model.predict_proba(arr)
        contract = Check("serving contract", p1.shape == (len(arr), 2),
                         f"accepts a plain {arr.shape[1]}-column array")
    except Exception as err:  # noqa: BLE001 - any failure here is the finding
        p1 = None
        contract = Check("serving contract", False, f"{type(err).__name__}: {err}")
    checks.append(contract)
    if p1 is None:
        checks.append(Check("valid, deterministic probabilities", False,
                            "not checked: the model refuses plain arrays"))
    if p1 is not None:
        valid = bool(np.all((p1 >= 0) & (p1 <= 1)) and np.allclose(p1.sum(axis=1), 1))
        same = bool(np.array_equal(p1, model.predict_proba(arr)))
        checks.append(Check("valid, deterministic probabilities", valid and same,
                            "in [0, 1], rows sum to 1, same input same output" if valid and same
                            else f"valid={valid}, deterministic={same}"))
    # slices: quartiles of the strongest feature; a model can be good on average and bad
    # for one group of users
    quart = np.quantile(X_test["f00"], [0.25, 0.5, 0.75])
    slice_id = np.searchsorted(quart, X_test["f00"])
    proba = model.predict_proba(X_test)[:, 1]
    aucs = []
    for s in range(4):
        mask = slice_id == s
        if len(set(y_test[mask])) == 2:
            aucs.append(roc_auc_score(y_test[mask], proba[mask]))
    worst = min(aucs) if aucs else float("nan")
    checks.append(Check("weakest slice", bool(aucs) and worst >= th.min_slice_auc,
                        f"auc {worst:.4f} on the worst f00 quartile (floor {th.min_slice_auc:.2f})"))
    if p1 is None:
        checks.append(Check("latency", False, "not measured: the model refuses plain arrays"))
    else:
        p95 = latency_p95_ms(model, X_test)
        checks.append(Check("latency", p95 <= th.max_latency_ms,
                            f"p95 {p95:.2f} ms a row (budget {th.max_latency_ms:g} ms)"))
    return checks


# -- the stages, sharing state through <workspace>/ci --------------------------------------
@dataclasses.dataclass
class CIReport:
    stages: list[GateResult]

    @property
    def ok(self) -> bool:
        return all(s.passed for s in self.stages)

    @property
    def failed(self) -> GateResult | None:
        return next((s for s in self.stages if not s.passed), None)

    def text(self) -> str:
        return "\n".join(ln for s in self.stages for ln in s.lines())

    def markdown(self) -> str:
        rows = ["| stage | result | checks |", "|---|---|---|"]
        for s in self.stages:
            checks = "<br>".join(c.line() for c in s.checks) or s.error
            rows.append(f"| {s.stage} | {'✅' if s.passed else '❌'} | {checks} |")
        return "\n".join(rows)


def _load_candidate(d: Path):
    import pandas as pd

    if not (d / "candidate" / "MLmodel").exists():
        raise CourseError(f"no candidate model in {d}: run the `train` stage first "
                          "(mlops-course ci run --stages data,train,...)")
    from .tracking import quiet

    quiet()
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(str(d / "candidate"))
    test = pd.read_parquet(d / "test.parquet")
    return model, test.drop(columns=["label"]), test["label"]


def _champion(model_name: str, uri: str):
    from . import tracking

    version = tracking.resolve(model_name, tracking.CHAMPION, uri)
    if version is None:
        return None, None
    import mlflow.sklearn

    with tracking.using(uri):
        return version, mlflow.sklearn.load_model(f"models:/{model_name}/{version}")


def run_stages(stages: Sequence[str] = PR_STAGES, *, profile: str | None = None,
               preset: str = "baseline", seed: int = 1, corrupt: str | None = None,
               path: str | Path | None = None, model_name: str | None = None,
               tracking_uri: str | None = None, thresholds: Thresholds | None = None,
               test_paths: Sequence[str | Path] | None = None,
               echo: Callable[[str], Any] | None = None) -> CIReport:
    """Run ``stages`` in order, stopping at the first that fails; returns the report."""
    from . import tracking
    from .model import MODEL_NAME
    from .pipeline import steps

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise CourseError(f"unknown stage(s) {', '.join(unknown)}: choose from {', '.join(STAGES)}")
    stages = [s for s in STAGES if s in stages]  # always in pipeline order
    th = thresholds or Thresholds()
    model_name = model_name or MODEL_NAME
    prof = config.get_profile(profile)
    d = state_dir()
    report = CIReport([])
    for stage in stages:
        t0 = time.perf_counter()
        try:
            if stage == "code":
                res = code_gate(test_paths)
            elif stage == "data":
                _clear(d, "batch.parquet", "candidate", "candidate.json", "test.parquet")
                df = steps.ingest(n_rows=prof.n_rows, seed=seed, corrupt=corrupt, path=path)
                res = data_gate(df)
                if res.passed:
                    df.to_parquet(d / "batch.parquet", index=False)
            elif stage == "train":
                res = _train_stage(d, preset, prof)
            elif stage == "model":
                uri = tracking.check(tracking_uri or tracking.current_uri())
                model, X_test, y_test = _load_candidate(d)
                _, champ = _champion(model_name, uri)
                res = model_gate(model, X_test, y_test, champ, th)
            else:
                res = _promote_stage(d, model_name, tracking_uri, th)
        except CourseError as err:
            res = GateResult(stage, False, 0.0, error=str(err))
        res.seconds = round(time.perf_counter() - t0, 2)
        report.stages.append(res)
        if echo:
            for ln in res.lines():
                echo(ln)
        if not res.passed:
            break
    (d / "report.json").write_text(json.dumps([dataclasses.asdict(s) for s in report.stages],
                                              indent=1))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")  # GitHub Actions renders this markdown
    if summary:
        with open(summary, "a") as fh:
            fh.write(report.markdown() + "\n")
    return report


def _clear(d: Path, *names: str) -> None:
    """Remove stale artifacts, so a failed stage never leaves old ones for the next stage."""
    import shutil

    for name in names:
        path = d / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _train_stage(d: Path, preset: str, prof) -> GateResult:
    import shutil

    import pandas as pd

    from . import model as model_mod
    from .pipeline import steps

    if not (d / "batch.parquet").exists():
        raise CourseError(f"no validated batch in {d}: run the `data` stage first")
    df = pd.read_parquet(d / "batch.parquet")
    cfg = steps.config(preset, n_estimators=prof.n_estimators if preset == "forest" else None)
    X_tr, X_te, y_tr, y_te = steps.split(df, cfg.test_size, cfg.seed)
    model = steps.train(X_tr, y_tr, cfg)
    _clear(d, "candidate", "candidate.json", "test.parquet")
    model_mod.save(model, d / "candidate", X_tr)
    X_te.assign(label=y_te).to_parquet(d / "test.parquet", index=False)
    meta = {"preset": preset, "config": cfg.to_dict(), "fingerprint": steps.fingerprint(df),
            "rows": len(df)}
    (d / "candidate.json").write_text(json.dumps(meta, indent=1))
    auc = steps.evaluate(model, X_te, y_te)["auc"]
    return GateResult("train", True, 0.0, [
        Check("candidate", True, f"{preset} on {len(X_tr)} rows, held-out auc {auc:.4f}")])


def _promote_stage(d: Path, model_name: str, tracking_uri: str | None,
                   th: Thresholds) -> GateResult:
    import pandas as pd

    from . import tracking
    from .pipeline import steps

    uri = tracking.check(tracking_uri or tracking.current_uri())
    model, X_test, y_test = _load_candidate(d)
    meta = json.loads((d / "candidate.json").read_text())
    version_before, champ = _champion(model_name, uri)
    cand = steps.evaluate(model, X_test, y_test)
    champ_m = steps.evaluate(champ, X_test, y_test) if champ is not None else None
    decision = steps.gate(cand, champ_m, th.min_auc, th.min_delta)
    df = pd.read_parquet(d / "batch.parquet")
    logged = tracking.log_run(
        "ci-cd", params={"preset": meta["preset"], "rows": meta["rows"]}, metrics=cand,
        tags={"data.fingerprint": meta["fingerprint"], "gate": "promote" if decision.promote
              else "keep champion", "ci.commit": os.environ.get("GITHUB_SHA", "local")},
        model=model, X_example=X_test, dataset=df, register_as=model_name,
        run_name=f"ci-{meta['preset']}", uri=uri)
    checks = [Check("promotion rule", r.startswith("PASS"), r[5:]) for r in decision.reasons]
    if decision.promote:
        tracking.promote(model_name, logged.version, reason="ci: " + decision.reasons[-1], uri=uri)
        checks.append(Check("alias", True, f"{model_name}@champion: v{version_before or '-'} -> "
                                           f"v{logged.version}"))
    else:
        tracking.promote(model_name, logged.version, alias=tracking.CHALLENGER, uri=uri)
        checks.append(Check("alias", True, f"registered v{logged.version} as @challenger; "
                                           f"@champion stays v{version_before}"))
    # not promoting is a correct outcome, not a failed pipeline
    return GateResult("promote", True, 0.0, checks)


# -- workflow files ----------------------------------------------------------------------
def templates() -> dict[str, Path]:
    """Workflow templates shipped with the course: name -> path."""
    return {p.name: p for p in sorted(TEMPLATES.rglob("*.yml"))}


def write_workflows(dest: str | Path, python: str = "3.11", profile: str = "smoke") -> list[Path]:
    """Copy the templates into a project: ``.github/workflows/*.yml`` and ``.gitlab-ci.yml``."""
    from string import Template

    dest = Path(dest)
    out = []
    for name, src in templates().items():
        text = Template(src.read_text()).safe_substitute(PYTHON=python, PROFILE=profile)
        target = (dest / ".gitlab-ci.yml") if src.parent.name == "gitlab" else \
            dest / ".github" / "workflows" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        out.append(target)
    return out


def workflow_kind(path: str | Path) -> str:
    path = Path(path)
    return "gitlab" if "gitlab" in path.name or path.parent.name == "gitlab" else "github"


def validate_workflow(path: str | Path, kind: str | None = None) -> tuple[bool, str]:
    """Validate a workflow file offline against its JSON schema (``check-jsonschema``)."""
    from .config import find_binary

    exe = find_binary("check-jsonschema")
    if not exe:
        raise CourseError("`check-jsonschema` was not found: pip install -e . from the course repo")
    schema = WORKFLOW_SCHEMAS[kind or workflow_kind(path)]
    out = subprocess.run([exe, "--builtin-schema", schema, str(path)], capture_output=True,
                         text=True, timeout=120)
    return out.returncode == 0, _concise((out.stdout + out.stderr).strip())


def _concise(text: str) -> str:
    """check-jsonschema's "Best Match" line (what to fix), else its whole output."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Best Match:" and i + 1 < len(lines):
            return lines[i + 1].strip()
    return text


def workflow_commands(path: str | Path, prefix: str = "mlops-course ") -> list[tuple[str, str]]:
    """``(job, command)`` for every shell line starting with ``prefix``, in file order."""
    import yaml

    doc = yaml.safe_load(Path(path).read_text())
    found = []
    if workflow_kind(path) == "github":
        for job, spec in (doc.get("jobs") or {}).items():
            for step in spec.get("steps", []):
                found += [(job, ln) for ln in str(step.get("run", "")).splitlines()]
    else:
        for job, spec in doc.items():
            if isinstance(spec, dict) and "script" in spec:
                found += [(job, ln) for ln in spec["script"]]
    return [(job, ln.strip()) for job, ln in found if ln.strip().startswith(prefix)]


# -- command line ------------------------------------------------------------------------
def _cli_run(args) -> int:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    th = Thresholds(min_auc=args.min_auc, max_latency_ms=args.max_latency_ms)
    report = run_stages(stages, profile=args.profile, preset=args.preset, seed=args.seed,
                        corrupt=args.corrupt, path=args.path, model_name=args.model_name,
                        tracking_uri=args.tracking_uri, thresholds=th,
                        echo=None if args.json else print)
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in report.stages], indent=2))
    if not report.ok:
        failed = report.failed
        why = failed.error or next((c.line() for c in failed.checks if not c.passed), "")
        print(f"CI failed at the {failed.stage} gate: {why}", file=sys.stderr)
        return 1
    return 0


def _cli_workflows(args) -> int:
    if args.workflows_cmd == "write":
        for path in write_workflows(args.dest, python=args.python, profile=args.profile):
            print(f"wrote {path}")
        return 0
    paths = args.files or [str(p) for p in templates().values()]
    bad = 0
    for path in paths:
        ok, text = validate_workflow(path)
        print(f"{'ok  ' if ok else 'FAIL'} {path}" + ("" if ok else f"\n{text}"))
        bad += not ok
    return 1 if bad else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("ci", help="CI/CD for ML: gates and workflow files (lesson 05)")
    sub = p.add_subparsers(dest="ci_cmd", required=True, metavar="ACTION")
    r = sub.add_parser("run", help="run gates in order: code, data, train, model, promote")
    r.add_argument("--stages", default=",".join(PR_STAGES),
                   help=f"comma-separated, from {','.join(STAGES)} (default: the pull-request set)")
    r.add_argument("--profile", choices=["smoke", "classroom", "full"])
    r.add_argument("--preset", default="baseline", help="the training config (pipeline presets)")
    r.add_argument("--seed", type=int, default=1, help="which batch")
    r.add_argument("--corrupt", help="inject a data defect (to see the data gate fail)")
    r.add_argument("--path", help="validate and train on this CSV/Parquet batch")
    r.add_argument("--model-name", help="registered model (default simple-system)")
    r.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the workspace store")
    r.add_argument("--min-auc", type=float, default=Thresholds.min_auc)
    r.add_argument("--max-latency-ms", type=float, default=Thresholds.max_latency_ms)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cli_run)
    w = sub.add_parser("workflows", help="write or validate the workflow templates")
    wsub = w.add_subparsers(dest="workflows_cmd", required=True, metavar="ACTION")
    a = wsub.add_parser("write", help="copy them into a project")
    a.add_argument("dest", help="the project's root folder")
    a.add_argument("--python", default="3.11")
    a.add_argument("--profile", default="smoke")
    a = wsub.add_parser("validate", help="check workflow files against their schemas, offline")
    a.add_argument("files", nargs="*", help="default: the shipped templates")
    w.set_defaults(func=_cli_workflows)
