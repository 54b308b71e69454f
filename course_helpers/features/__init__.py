"""Lesson 07: scalable data processing and feature engineering.

``data`` writes seeded day-partitioned Parquet events; ``engines`` computes one feature set with
pandas, polars, DuckDB and Dask; ``pit`` joins labels point-in-time and shows leakage; ``store``
materialises features into an online store; ``bench`` measures engines under a memory budget;
``cluster`` starts a Dask scheduler and workers through the supervisor.

Importing this package is cheap: engines are imported when used.
"""

from __future__ import annotations

from ..config import PROFILE_NAMES as PROFILES


def _cli_data(args) -> int:
    from .data import generate

    info = generate(args.rows, args.out, profile=args.profile, seed=args.seed, force=args.force)
    print(f"rows={info.rows} files={info.files} bytes={info.bytes} labels={info.labels}")
    print(f"path={info.path}")
    return 0


def _cli_bench(args) -> int:
    from .bench import bench, ratio_best_vs_pandas, table

    engines = [e.strip() for e in args.engines.split(",")] if args.engines else None
    res = bench(args.profile, engines, memory_mb=args.memory_mb, out=args.out, rows=args.rows,
                scheduler=args.scheduler)
    print(f"{res['rows']:,} rows, budget {res['memory_mb']} MB ({res['limit']}), "
          f"{res['cpus']} CPU(s)")
    print(table([res]).drop(columns="rows").to_string(index=False))
    print(f"ratio_best_vs_pandas={ratio_best_vs_pandas(res)}")
    return 0 if all(e["ok"] for e in res["engines"]) else 1


def _cli_compute(args) -> int:
    from pathlib import Path

    from .engines import compute

    out = compute(args.engine, args.data, args.out or Path(args.data) / f"features-{args.engine}",
                  memory_mb=args.memory_mb, scheduler=args.scheduler)
    print(f"wrote {out}/rolling and {out}/users")
    return 0


def _cli_cluster(args) -> int:
    from .cluster import start_cluster

    c = start_cluster(workers=args.workers, memory_mb=args.memory_mb, scheduler=args.scheduler)
    print(f"scheduler {c.address}  dashboard {c.dashboard_url or '(the launcher)'}")
    print("use it: mlops-course features bench --engines dask --scheduler " + c.address)
    print("stop it: mlops-course cleanup")
    from .. import supervisor

    supervisor._exit_hooks.clear()  # leave it running on purpose
    return 0


def register_cli(subparsers) -> None:
    """``mlops-course features data|bench|compute|cluster``."""
    p = subparsers.add_parser("features", help="lesson 07: data, engines, benchmark, Dask cluster")
    sub = p.add_subparsers(dest="features_cmd", required=True, metavar="ACTION")
    d = sub.add_parser("data", help="write the seeded events as day-partitioned Parquet")
    d.add_argument("--profile", choices=PROFILES)
    d.add_argument("--rows", type=int, help="override the profile's size")
    d.add_argument("--out", help="folder (default: under the workspace)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--force", action="store_true", help="rewrite even if it exists")
    d.set_defaults(func=_cli_data)
    b = sub.add_parser("bench", help="each engine in a subprocess under a memory budget")
    b.add_argument("--profile", choices=PROFILES)
    b.add_argument("--engines", help="comma-separated: pandas,polars,duckdb,dask (default all)")
    b.add_argument("--memory-mb", type=int, default=1500, help="budget per engine (default 1500)")
    b.add_argument("--rows", type=int, help="override the profile's size")
    b.add_argument("--out", help="folder for results.json and results.png")
    b.add_argument("--scheduler", help="tcp://host:port of a Dask scheduler for the dask engine")
    b.set_defaults(func=_cli_bench)
    c = sub.add_parser("compute", help="compute the feature tables with one engine")
    c.add_argument("engine", choices=["pandas", "polars", "duckdb", "dask"])
    c.add_argument("data", help="folder written by `features data`")
    c.add_argument("--out")
    c.add_argument("--memory-mb", type=int)
    c.add_argument("--scheduler", help="tcp://host:port (dask only)")
    c.set_defaults(func=_cli_compute)
    k = sub.add_parser("cluster", help="start a Dask scheduler and workers (stop: cleanup)")
    k.add_argument("--workers", type=int, default=2)
    k.add_argument("--memory-mb", type=int, default=512, help="per worker")
    k.add_argument("--scheduler", help="join workers to this tcp://host:port instead of "
                   "starting a scheduler (e.g. the Dask dashboard launcher's)")
    k.set_defaults(func=_cli_cluster)
