"""Scaling benchmark for lesson 02: does a second CPU double throughput, up or out?

    python benchmarks/scaling.py [--profile smoke|classroom|full] [--backend local|docker]

Costly model (random forest, 200 trees) so the server, not the load generator, is the
bottleneck. Four deployments behind the same nginx, each driven by the same Locust load:
many-small with 1 and 2 replicas (1 worker, 1 CPU each), single-large with 1 and 2 workers
(on 1 and 2 CPUs). Prints a table with the load generator's CPU, then the ratios last.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from course_helpers import config, model  # noqa: E402
from course_helpers.deploy import DeploymentSpec, get_backend  # noqa: E402
from course_helpers.loadtest import run_locust  # noqa: E402
from course_helpers.supervisor import Supervisor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=config.settings().profile,
                        choices=config.PROFILE_NAMES)
    parser.add_argument("--backend", default="local", choices=["local", "docker"])
    parser.add_argument("--users", type=int, default=10)
    args = parser.parse_args()
    prof = config.get_profile(args.profile)
    uri = model.prepare("forest", profile=prof.name, n_estimators=200)
    backend = get_backend(args.backend, verbose=False)
    cases = {
        "many-small x1": DeploymentSpec.many_small(uri, replicas=1, name="ms1"),
        "many-small x2": DeploymentSpec.many_small(uri, replicas=2, name="ms2"),
        "single-large 1w": DeploymentSpec.single_large(uri, cpus=1, name="sl1"),
        "single-large 2w": DeploymentSpec.single_large(uri, cpus=2, name="sl2"),
    }
    print(f"profile {prof.name}, backend {backend.name}, {args.users} users, "
          f"{prof.duration_s} s per run, load average {os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    try:
        for label, spec in cases.items():
            dep = backend.up(spec)
            try:
                run_locust(dep.url, users=args.users, spawn_rate=args.users, duration_s=2,
                           label=f"{spec.name}-warm", progress=False)
                res = run_locust(dep.url, users=args.users, spawn_rate=args.users,
                                 duration_s=prof.duration_s, label=spec.name, progress=False)
            finally:
                backend.down(dep)
            results[label] = res
            print(f"  {label:<16} {res.rps:8.1f} req/s  p95 {res.p95_ms:6.1f} ms  "
                  f"failures {res.failures}  Locust CPU {res.generator_cpu:.2f}", flush=True)
    finally:
        Supervisor().cleanup(containers=False)
    print(f"\n{'deployment':<16} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'fail':>5} "
          f"{'Locust CPU':>10}")
    for label, r in results.items():
        print(f"{label:<16} {r.rps:8.1f} {r.p50_ms:7.1f} {r.p95_ms:7.1f} {r.failures:5d} "
              f"{r.generator_cpu:10.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    ms = results["many-small x2"].rps / results["many-small x1"].rps
    sl = results["single-large 2w"].rps / results["single-large 1w"].rps
    print(f"scaling_many_small_2v1={ms:.2f}")
    print(f"scaling_single_large_2v1={sl:.2f}")


if __name__ == "__main__":
    main()
