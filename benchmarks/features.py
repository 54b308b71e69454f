"""Feature-engine benchmark for lesson 07: speed at the profile's size, and how far each engine
gets under a memory budget.

    python benchmarks/features.py [--profile classroom] [--memory-mb 1500]
                                  [--ladder 1000000,4000000,16000000,50000000] [--timeout-s 900]

1. At the profile's size, every engine in its own subprocess under the budget (see
   ``course_helpers.features.bench``): prints the table and ``ratio_best_vs_pandas`` (pandas'
   wall time over the fastest other engine's, same rows, same run). The ``pandas`` engine is
   the baseline a student writes first (``engines.rolling_features_baseline``:
   ``groupby().rolling("7D")`` and a per-window ``apply`` for distinct items).
2. Up the ladder of sizes: each engine runs at each size until it fails (over the budget,
   error or timeout); prints ``largest_rows_<engine>`` (the largest size it finished) and, for
   a size whose in-memory data (32 bytes a row) exceeds the budget, which engines finished.

Data is written once per size under the workspace (``$MLOPS_HOME``); timings are wall clock
on whatever else the machine is doing, so the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from course_helpers.config import PROFILE_NAMES
    from course_helpers.features import bench, data
    from course_helpers.features.engines import ENGINES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="classroom", choices=PROFILE_NAMES)
    p.add_argument("--memory-mb", type=int, default=1500)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--ladder", default="1000000,4000000,16000000,50000000",
                   help="comma-separated row counts, ascending ('' to skip)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per engine and size")
    args = p.parse_args()
    engines = args.engines.split(",")

    print(f"loadavg={os.getloadavg()[0]:.2f} cpus={len(os.sched_getaffinity(0))}")
    res = bench.bench(args.profile, engines, memory_mb=args.memory_mb)
    print(bench.table([res]).to_string(index=False))
    print(f"rows={res['rows']} memory_mb={args.memory_mb} limit={res['limit']}")
    print(f"ratio_best_vs_pandas={bench.ratio_best_vs_pandas(res)}")

    sizes = [int(s) for s in args.ladder.split(",") if s.strip()]
    largest = {e: 0 for e in engines}
    alive = set(engines)
    for rows in sizes:
        if not alive:
            break
        info = data.generate(rows, show=False)
        out = Path(res["out"]).parent / f"ladder-{info.rows}"
        done = []
        for engine in [e for e in engines if e in alive]:
            r = bench.run_one(engine, info.path, out / engine, args.memory_mb,
                              timeout_s=args.timeout_s)
            print(f"ladder rows={info.rows} engine={engine} ok={r['ok']} wall_s={r['wall_s']} "
                  f"peak_mb={r['peak_mb']} error={r['error']!r} "
                  f"loadavg={os.getloadavg()[0]:.2f}", flush=True)
            if r["ok"]:
                largest[engine] = info.rows
                done.append(engine)
            else:
                alive.discard(engine)
        in_memory_mb = info.rows * 32 / 2**20
        if in_memory_mb > args.memory_mb:
            print(f"larger_than_budget rows={info.rows} in_memory_mb={in_memory_mb:.0f} "
                  f"finished={','.join(done) or 'none'}")
    if sizes:
        for engine, rows in largest.items():
            print(f"largest_rows_{engine}={rows}")


if __name__ == "__main__":
    main()
