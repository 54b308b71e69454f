"""The gates as plain functions (tests call them directly): code, data and model.

Each returns a :class:`GateResult`: passed or not, how long it took, one line per check.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .. import config


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
    from ..pipeline import steps

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
    """p95 of predicting one row at a time, in-process, as the server calls the model: a
    one-row DataFrame with the model's input columns, selected by name (ms)."""
    import numpy as np

    X = X[_input_names(model, X)].head(n)
    model.predict_proba(X.iloc[:1])  # warm up
    times = []
    for i in range(len(X)):
        row = X.iloc[i:i + 1]
        t = time.perf_counter()
        model.predict_proba(row)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 95))


def _input_names(model, X) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else list(X.columns)


def serving_contract(model, X) -> Check:
    """Can the server call ``model``? Requests carry one JSON object per row keyed by feature
    name (the columns of ``X``, the data contract's features); the server builds a DataFrame
    with the columns the model was fitted on, selected by name. So the model must know its
    input names (fitted on a DataFrame), every one must be a feature requests carry, and the
    order in which a client lists the keys must not change a prediction."""
    import numpy as np

    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return Check("serving contract", False,
                     "fitted on a plain array: it has no input names, so a server could only "
                     "pass columns by position; fit it on a DataFrame")
    names = [str(n) for n in names]
    missing = [n for n in names if n not in X.columns]
    if missing:
        return Check("serving contract", False,
                     f"needs {', '.join(missing[:3])}, which requests do not carry: compute "
                     "derived features inside the model (a Pipeline step), not before it")
    shuffled = X[list(X.columns)[::-1]]  # a client that lists the keys in another order
    same = bool(np.array_equal(model.predict_proba(X[names]),
                               model.predict_proba(shuffled[names])))
    return Check("serving contract", same,
                 f"selects its {len(names)} inputs by name; key order does not matter"
                 if same else "predictions change with the order of the request's keys")


def model_gate(model, X_test, y_test, champion=None,
               thresholds: Thresholds | None = None) -> GateResult:
    """The candidate's tests. ``champion``: the production model (re-scored on the same rows).

    The serving contract is checked first: a model the server cannot call is not scored.
    """
    th = thresholds or Thresholds()
    t0 = time.perf_counter()
    checks = _model_checks(model, X_test, y_test, champion, th)
    return GateResult("model", all(c.passed for c in checks), round(time.perf_counter() - t0, 2),
                      checks)


def _model_checks(model, X_test, y_test, champion, th: Thresholds) -> list[Check]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from ..pipeline import steps

    contract = serving_contract(model, X_test)
    if not contract.passed:
        skipped = "not checked: the server could not call this model"
        return [Check("quality floor", False, skipped), Check("no regression", False, skipped),
                contract, Check("valid, deterministic probabilities", False, skipped),
                Check("weakest slice", False, skipped), Check("latency", False, skipped)]
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
    checks.append(contract)
    X = X_test[_input_names(model, X_test)]
    p1 = model.predict_proba(X)
    valid = bool(np.all((p1 >= 0) & (p1 <= 1)) and np.allclose(p1.sum(axis=1), 1))
    same = bool(np.array_equal(p1, model.predict_proba(X)))
    checks.append(Check("valid, deterministic probabilities", valid and same,
                        "in [0, 1], rows sum to 1, same input same output" if valid and same
                        else f"valid={valid}, deterministic={same}"))
    # slices: quartiles of the strongest feature; a model can be good on average and bad
    # for one group of users
    quart = np.quantile(X_test["f00"], [0.25, 0.5, 0.75])
    slice_id = np.searchsorted(quart, X_test["f00"])
    proba = p1[:, 1]
    aucs = []
    for s in range(4):
        mask = slice_id == s
        if len(set(y_test[mask])) == 2:
            aucs.append(roc_auc_score(y_test[mask], proba[mask]))
    worst = min(aucs) if aucs else float("nan")
    checks.append(Check("weakest slice", bool(aucs) and worst >= th.min_slice_auc,
                        f"auc {worst:.4f} on the worst f00 quartile (floor {th.min_slice_auc:.2f})"))
    p95 = latency_p95_ms(model, X_test)
    checks.append(Check("latency", p95 <= th.max_latency_ms,
                        f"p95 {p95:.2f} ms a row (budget {th.max_latency_ms:g} ms)"))
    return checks
