"""CI/CD for ML (lesson 05): code, data and model tests as gates, workflow files, promotion.

A change reaches production only through gates, in order, each one a command that exits
non-zero and names what failed:

``code``     the unit tests of the pipeline's steps (pytest, in a subprocess)
``data``     a fresh batch honours the data contract (pandera, :func:`pipeline.steps.validate`)
``train``    train a candidate on it; save it and its held-out rows as CI artifacts
``model``    the candidate's tests: the serving contract (the server selects the model's inputs
             by name from each request's JSON object: the model must know those names and
             requests must carry them), quality floor, no regression against the champion,
             valid and deterministic probabilities, no weak slice, single-row latency
``promote``  register the candidate CI tested (the artifact in ``<workspace>/ci``, never a
             retrained one) and move ``@champion`` to it if it beats the champion; the
             version it replaces keeps ``@previous`` (:func:`tracking.promote`). Servers
             started with ``--follow-alias SECONDS`` load the new version within that interval

``mlops-course ci run --stages code,data,train,model`` is what a pull request runs;
``--stages ...,promote`` is the delivery job on the main branch. Stages share state through
``<workspace>/ci/`` so a workflow can run them as separate steps, like a real CI system passes
artifacts between jobs. The workflow templates in ``course_helpers/templates/`` (GitHub
Actions, GitLab CI) call exactly these commands; :func:`validate_workflow` checks them offline
against their JSON schemas.

The package: :mod:`.gates` (the checks), :mod:`.stages` (running them in order, with
artifacts), :mod:`.workflows` (the templates); the ``mlops-course ci`` command is here.
Everything public is importable from ``course_helpers.cicd``. Importing it is cheap: pandas,
scikit-learn and MLflow load inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from ..config import PROFILE_NAMES
from ..errors import CourseError
from .gates import (Check, GateResult, Thresholds, code_gate, data_gate, latency_p95_ms,
                    model_gate, serving_contract)
from .stages import (PR_STAGES, STAGES, CIReport, require_tracking_server, run_stages,
                     state_dir)
from .workflows import (TEMPLATES, WORKFLOW_SCHEMAS, templates, validate_workflow,
                        workflow_commands, workflow_kind, write_workflows)

__all__ = ["PR_STAGES", "STAGES", "TEMPLATES", "WORKFLOW_SCHEMAS", "CIReport", "Check",
           "CourseError", "GateResult", "Thresholds", "code_gate", "data_gate",
           "latency_p95_ms", "model_gate", "register_cli", "require_tracking_server",
           "run_stages", "serving_contract", "state_dir", "templates", "validate_workflow",
           "workflow_commands", "workflow_kind", "write_workflows"]


# -- command line ------------------------------------------------------------------------
def _cli_run(args) -> int:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    th = Thresholds(min_auc=args.min_auc, max_latency_ms=args.max_latency_ms)
    report = run_stages(stages, profile=args.profile, preset=args.preset, seed=args.seed,
                        corrupt=args.corrupt, path=args.path, model_name=args.model_name,
                        tracking_uri=args.tracking_uri, thresholds=th,
                        echo=None if args.json else print,
                        require_server=args.require_tracking_server)
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
    r.add_argument("--profile", choices=PROFILE_NAMES)
    r.add_argument("--preset", default="baseline", help="the training config (pipeline presets)")
    r.add_argument("--seed", type=int, default=1, help="which batch")
    r.add_argument("--corrupt", help="inject a data defect (to see the data gate fail)")
    r.add_argument("--path", help="validate and train on this CSV/Parquet batch")
    r.add_argument("--model-name", help="registered model (default simple-system)")
    r.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the workspace store")
    r.add_argument("--require-tracking-server", action="store_true",
                   help="promote only into a tracking server (http...), never a local store")
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
