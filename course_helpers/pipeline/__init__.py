"""Lesson 03: an automated training pipeline (steps, orchestration, retries, caching, triggers).

* :mod:`.steps`: the steps as plain, tested functions (ingest, validate, split, train,
  evaluate, gate), no orchestrator needed;
* :mod:`.flow`: the same steps as a Prefect flow with retries, caching and idempotent
  registration in MLflow; :func:`run` runs it once;
* :mod:`.orchestrator`: Prefect's API server, supervised like every other server;
* :mod:`.triggers`: run the pipeline when a new batch lands in an inbox directory;
* :mod:`.schedule`: run it at intervals (``prefect server start``'s scheduler and a runner).

Importing this package is cheap: Prefect, pandas and MLflow load on first use.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flow import PipelineResult


def run(preset: Any = "baseline", **kwargs: Any) -> "PipelineResult":
    """Run the training pipeline once (see :func:`course_helpers.pipeline.flow.run`)."""
    from .orchestrator import prepare_environment

    prepare_environment()  # before Prefect is imported: it reads its settings then
    from .flow import run as _run

    return _run(preset, **kwargs)


def connect(scheduler: bool = False) -> str:
    """Start (or find) this workspace's Prefect server and point this process at it.

    ``scheduler``: start it with its scheduler, so a later :func:`.schedule.start` need not
    restart it (same process, same memory).
    """
    from .orchestrator import connect as _connect

    return _connect(scheduler=scheduler)


# -- command line ------------------------------------------------------------------------
def _parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants key=value, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _print_result(res, as_json: bool) -> None:
    import dataclasses

    if as_json:
        print(json.dumps(dataclasses.asdict(res), indent=2, default=str))
        return
    print(res.summary())
    for reason in res.reasons:
        print(f"  {reason}")
    for t in res.tasks:
        print(f"  {t['task']:<15} {t['state']:<10} attempts {t['attempts']}  {t['seconds']:.2f} s")


def _cli_run(args) -> int:
    from ..errors import CourseError
    from ..model import MODEL_NAME
    from .orchestrator import prepare_environment

    prepare_environment()
    from .flow import run as _run

    res = _run(args.preset, n_rows=args.rows, seed=args.seed, corrupt=args.corrupt,
               path=args.path, profile=args.profile, model_name=args.model_name or MODEL_NAME,
               tracking_uri=args.tracking_uri, min_auc=args.min_auc, min_delta=args.min_delta,
               flaky=args.flaky, refresh_cache=args.refresh_cache, **_parse_sets(args.set))
    _print_result(res, args.json)
    if not res.ok:
        raise CourseError(f"the pipeline run failed: {res.error}")
    if args.require_promotion and not res.promote:
        print("not promoted (--require-promotion): exit 3")
        return 3
    return 0


def _cli_status(args) -> int:
    from .. import tracking
    from ..model import MODEL_NAME

    name = args.model_name or MODEL_NAME
    table = tracking.versions_table(name, metrics=("auc",))
    if table.empty:
        print(f"no versions of {name} in {tracking.current_uri()}")
        return 0
    cols = [c for c in ("version", "aliases", "auc", "created", "tags.data.fingerprint")
            if c in table.columns]
    print(table[cols].to_string(index=False))
    return 0


def _cli_trigger(args) -> int:
    from ..model import MODEL_NAME
    from .triggers import watch

    results = watch(args.inbox, poll_s=args.poll, timeout_s=args.timeout,
                    max_batches=args.max_batches, preset=args.preset, profile=args.profile,
                    model_name=args.model_name or MODEL_NAME, echo=print)
    return 0 if all(r.ok for r in results) else 1


def _cli_drop(args) -> int:
    from .triggers import drop_batch

    print(drop_batch(args.inbox, n_rows=args.rows, seed=args.seed, corrupt=args.corrupt))
    return 0


def _cli_schedule(args) -> int:
    from ..model import MODEL_NAME
    from . import schedule

    sched = schedule.start(args.every, preset=args.preset, path=args.path, seed=args.seed,
                           profile=args.profile, model_name=args.model_name or MODEL_NAME)
    print(f"{sched.deployment}: a run every {args.every:g} s (Prefect API {sched.api_url}); "
          f"waiting for {args.runs} run(s)")
    try:
        table = sched.wait(args.runs, timeout_s=args.timeout, echo=print, progress=False)
    finally:
        sched.stop()
    done = table[table["state"] == "Completed"]
    print(f"schedule paused and runner stopped; {len(done)} of {args.runs} run(s) completed")
    return 0 if len(done) >= args.runs else 1


def _cli_server(args) -> int:
    from . import orchestrator

    if args.server_cmd == "start":
        # no lease: it outlives this command
        url = orchestrator.start_server(keep=True, scheduler=args.scheduler)
        print(f"Prefect API at {url}: export PREFECT_API_URL={url} ; "
              f"stop it with `mlops-course pipeline server stop`")
    else:
        print("stopped" if orchestrator.stop_server() else "no Prefect server was running")
    return 0


def register_cli(subparsers) -> None:
    from .steps import CORRUPTIONS, PRESETS

    from ..config import PROFILE_NAMES as profiles
    p = subparsers.add_parser("pipeline", help="the automated training pipeline (lesson 03)")
    sub = p.add_subparsers(dest="pipeline_cmd", required=True, metavar="ACTION")

    r = sub.add_parser("run", help="run the pipeline once: validate, train, gate, register")
    r.add_argument("--preset", default="baseline", choices=list(PRESETS))
    r.add_argument("--profile", choices=profiles)
    r.add_argument("--rows", type=int, help="batch size (default: the profile's)")
    r.add_argument("--seed", type=int, default=1, help="which batch (default 1)")
    r.add_argument("--corrupt", choices=CORRUPTIONS, help="inject a data defect")
    r.add_argument("--path", help="train on this CSV/Parquet batch instead")
    r.add_argument("--model-name", default=None, help="registered model (default simple-system)")
    r.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the workspace store")
    r.add_argument("--min-auc", type=float, default=0.70)
    r.add_argument("--min-delta", type=float, default=0.001)
    r.add_argument("--flaky", type=int, default=0, help="the source fails its first N attempts")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    r.add_argument("--refresh-cache", action="store_true", help="recompute the cached steps")
    r.add_argument("--require-promotion", action="store_true", help="exit 3 if not promoted")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cli_run)

    s = sub.add_parser("status", help="the registered versions and their aliases")
    s.add_argument("--model-name")
    s.set_defaults(func=_cli_status)

    t = sub.add_parser("trigger", help="run the pipeline for each batch file landing in an inbox")
    t.add_argument("inbox")
    t.add_argument("--poll", type=float, default=1.0, help="seconds between looks")
    t.add_argument("--timeout", type=float, default=60.0, help="stop watching after this")
    t.add_argument("--max-batches", type=int, help="stop after this many batches")
    t.add_argument("--preset", default="baseline", choices=list(PRESETS))
    t.add_argument("--profile", choices=profiles)
    t.add_argument("--model-name", default=None)
    t.set_defaults(func=_cli_trigger)

    d = sub.add_parser("drop-batch", help="write a batch file into an inbox (for the trigger)")
    d.add_argument("inbox")
    d.add_argument("--rows", type=int, default=2_000)
    d.add_argument("--seed", type=int, default=2)
    d.add_argument("--corrupt", choices=CORRUPTIONS)
    d.set_defaults(func=_cli_drop)

    c = sub.add_parser("schedule", help="run the pipeline every N seconds for a few runs "
                                        "(prefect server start + a runner)")
    c.add_argument("--every", type=float, default=30.0, help="seconds between runs (>= 5)")
    c.add_argument("--runs", type=int, default=2, help="stop after this many runs (default 2)")
    c.add_argument("--timeout", type=float, help="give up after this many seconds")
    c.add_argument("--preset", default="baseline", choices=list(PRESETS))
    c.add_argument("--profile", choices=profiles)
    c.add_argument("--seed", type=int, default=1, help="which seeded batch (without --path)")
    c.add_argument("--path", help="train on this file at every run (replace it between runs)")
    c.add_argument("--model-name", default=None)
    c.set_defaults(func=_cli_schedule)

    v = sub.add_parser("server", help="keep Prefect's API server running between commands")
    v.add_argument("server_cmd", choices=["start", "stop"])
    v.add_argument("--scheduler", action="store_true",
                   help="`prefect server start` with its scheduler (for schedules)")
    v.set_defaults(func=_cli_server)
