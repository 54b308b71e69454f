"""The stages in order, sharing state through ``<workspace>/ci`` as CI jobs share artifacts.

``data`` and ``train`` leave the validated batch, the candidate and its held-out rows there;
``model`` tests that candidate; ``promote`` registers *that* candidate (never a retrained
one) and moves ``@champion`` if it beats the champion.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import config
from ..errors import CourseError
from .gates import Check, GateResult, Thresholds, code_gate, data_gate, model_gate

STAGES = ("code", "data", "train", "model", "promote")
PR_STAGES = ("code", "data", "train", "model")


def state_dir() -> Path:
    """Where stages leave artifacts for the next ones: ``<workspace>/ci``."""
    return config.workspace_dir("ci")


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
    from ..tracking import quiet

    quiet()
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(str(d / "candidate"))
    test = pd.read_parquet(d / "test.parquet")
    return model, test.drop(columns=["label"]), test["label"]


def _champion(model_name: str, uri: str):
    from .. import tracking

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
               echo: Callable[[str], Any] | None = None,
               require_server: bool = False) -> CIReport:
    """Run ``stages`` in order, stopping at the first that fails; returns the report.

    ``require_server``: the promote stage refuses a local store (:func:`require_tracking_server`).
    """
    from .. import tracking
    from ..model import MODEL_NAME
    from ..pipeline import steps

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
                res = _promote_stage(d, model_name, tracking_uri, th, require_server)
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

    from .. import model as model_mod
    from ..pipeline import steps

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
            "rows": len(df), "commit": os.environ.get("GITHUB_SHA")
            or os.environ.get("CI_COMMIT_SHA") or "local"}
    (d / "candidate.json").write_text(json.dumps(meta, indent=1))
    auc = steps.evaluate(model, X_te, y_te)["auc"]
    return GateResult("train", True, 0.0, [
        Check("candidate", True, f"{preset} on {len(X_tr)} rows, held-out auc {auc:.4f}")])


def require_tracking_server(uri: str) -> str:
    """``uri`` if it names a tracking server; otherwise a clear error (delivery into a store
    inside a CI runner would vanish with the runner)."""
    from .. import tracking

    if not tracking.is_remote(uri):
        raise CourseError(
            f"no tracking server configured (the tracking URI is {uri}): a promotion there "
            "would be lost with this runner. Set MLFLOW_TRACKING_URI to your team's MLflow "
            "server (in GitHub: a repository secret of that name) and run again.")
    return tracking.check(uri)


def _promote_stage(d: Path, model_name: str, tracking_uri: str | None,
                   th: Thresholds, require_server: bool = False) -> GateResult:
    import pandas as pd

    from .. import tracking
    from ..pipeline import steps

    uri = tracking_uri or tracking.current_uri()
    uri = require_tracking_server(uri) if require_server else tracking.check(uri)
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
              else "keep champion", "ci.commit": meta.get("commit", "local")},
        model=model, X_example=X_test, dataset=df, register_as=model_name,
        run_name=f"ci-{meta['preset']}", uri=uri)
    checks = [Check("promotion rule", r.startswith("PASS"), r[5:]) for r in decision.reasons]
    if decision.promote:
        tracking.promote(model_name, logged.version, reason="ci: " + decision.reasons[-1], uri=uri)
        checks.append(Check("alias", True, f"{model_name}@champion: v{version_before or '-'} -> "
                                           f"v{logged.version}" + (f", @previous: v{version_before}"
                                                                   if version_before else "")))
    else:
        tracking.promote(model_name, logged.version, alias=tracking.CHALLENGER, uri=uri)
        checks.append(Check("alias", True, f"registered v{logged.version} as @challenger; "
                                           f"@champion stays v{version_before}"))
    # not promoting is a correct outcome, not a failed pipeline
    return GateResult("promote", True, 0.0, checks)
