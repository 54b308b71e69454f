"""Lesson 09's figures: a bad canary rolled back, a good one promoted, the mirror's cost,
and what peeking does to an A/A test.

    python benchmarks/rollout.py [--profile classroom] [--metrics prometheus|scrape]
                                 [--interval 5] [--steps 5,25,50,100]

Registers a champion, a challenger with a seeded fault (errors on ~20 % of inputs), a slow one
(40 ms a prediction: a latency regression with a healthy error rate) and a healthy challenger in the workspace's MLflow store (``$MLOPS_HOME``), runs the canary
controller on each under paced Locust load (the profile's users, 10 req/s each), then a shadow
run with and without nginx ``mirror``, then the peeking simulation. Prints, last:

* ``rollback_s``: from the bad canary's first request to its weight back at 0;
* ``promotion_failed_requests``: client-visible failures during the good canary's full
  promotion (four nginx reloads under load);
* ``mirror_p95_ratio``: client p95 with the mirror (through nginx's relay, so no client
  connection waits for the shadow; the shadow niced with its session group and on its own
  CPU, the live server on any CPU) / without, from one paced Locust run while nginx
  switches the mirror on and off every 1.5 s (ABBA order, so others' load falls on both
  alike). Printed above it from the same run: the A/A ratio (mirror off / mirror off: the
  noise floor) and the plain nginx mirror's ratio (no relay: a client's next request waits
  until the shadow has answered the previous copy);
* ``mirror_p95_ratio_lb``: the same requests timed by nginx (its access log: request time,
  1 ms resolution), which leaves out Locust's own scheduling; printed above it, the LB-side
  A/A ratio and the live server's answer time as nginx saw it (``upstream``);
* ``peeking_fpr_naive`` and ``peeking_fpr_sequential``: A/A false-positive rates over 50 looks.

Timings are wall clock on whatever else the machine runs: the load average is printed beside.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from course_helpers import monitoring, tracking
    from course_helpers.rollout import ab, canary, faults, shadow, stats
    from course_helpers.rollout.decision import Thresholds

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="classroom", choices=["smoke", "classroom", "full"])
    p.add_argument("--metrics", default="prometheus", choices=["prometheus", "scrape"])
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--steps", default="5,25,50,100")
    p.add_argument("--min-requests", type=int, default=20)
    p.add_argument("--mirror-s", type=int, default=30,
                   help="seconds of load per mirror condition (off, relayed, off again, direct)")
    args = p.parse_args()

    print(f"loadavg={os.getloadavg()[0]:.2f} cpus={len(os.sched_getaffinity(0))} "
          f"profile={args.profile} metrics={args.metrics}", flush=True)
    started_prom = False
    if args.metrics == "prometheus" and monitoring.running() is None:
        monitoring.start(args.profile, rules=False)
        started_prom = True
    name = "rollout-bench"
    try:
        faults.ensure_champion(name, profile=args.profile)
        faults.make_challenger("errors", name=name, seed=1, profile=args.profile, alias="bad")
        faults.make_challenger("none", name=name, seed=2, profile=args.profile, alias="good")
        faults.make_challenger("slow", name=name, seed=3, profile=args.profile, alias="slow",
                               delay_ms=40)
        checks = Thresholds(min_requests=args.min_requests)
        kw = dict(steps=args.steps, interval_s=args.interval, thresholds=checks,
                  metrics=args.metrics, profile=args.profile, verbose=False)
        bad = canary.run_canary(f"models:/{name}@champion", f"models:/{name}@bad", **kw)
        print(f"bad_outcome={bad['outcome']} bad_max_weight={max(s['weight'] for s in bad['steps'])} "
              f"bad_failed_requests={bad['failed_requests']} bad_requests={bad['load']['requests']} "
              f"bad_seconds={bad['seconds']} loadavg={os.getloadavg()[0]:.2f}", flush=True)
        slow = canary.run_canary(f"models:/{name}@champion", f"models:/{name}@slow", **kw)
        last = slow["steps"][-1]
        failed = [c["name"] for c in last["checks"] if not c["passed"]]
        p95 = {c["name"]: c["value"] for c in last["checks"]}
        print(f"slow_outcome={slow['outcome']} slow_max_weight={max(s['weight'] for s in slow['steps'])} "
              f"slow_failed_checks={','.join(failed) or 'none'} slow_p95_ms={p95.get('p95_ms')} "
              f"slow_p95_ratio={p95.get('p95_ratio_vs_stable')} slow_rollback_s={slow.get('rollback_s')} "
              f"slow_failed_requests={slow['failed_requests']} loadavg={os.getloadavg()[0]:.2f}",
              flush=True)
        good = canary.run_canary(f"models:/{name}@champion", f"models:/{name}@good", **kw)
        print(f"good_outcome={good['outcome']} promotion_s={good.get('promotion_s')} "
              f"good_requests={good['load']['requests']} good_seconds={good['seconds']} "
              f"loadavg={os.getloadavg()[0]:.2f}", flush=True)
        sh = shadow.run_shadow(f"models:/{name}@previous", f"models:/{name}@champion",
                               profile=args.profile, duration_s=args.mirror_s, aa=True,
                               variants={"direct": {"relay": False}})
        cmp, pooled = sh["comparison"], sh["pooled"]
        print(f"mirror_phases={sh['phases']}x{sh['phase_s']}s "
              + " ".join(f"requests_{c}={v['requests']}" for c, v in pooled.items())
              + f" isolation={sh['isolation']} loadavg_range={sh['loadavg_1m']}", flush=True)
        print(" ".join(f"{c}: p50={v['p50_ms']} p95={v['p95_ms']} ms"
                       + (f" shadow_lag_p95={v['lag_p95_ms']} max={v['lag_max_ms']} ms"
                          if "lag_p95_ms" in v else "") + ";" for c, v in pooled.items()),
              flush=True)
        print(f"mirror_p95_ratio_aa={sh['p95_ratio_aa']} "
              f"mirror_p95_ratio_direct={sh['p95_ratio_direct']} "
              f"shadow_agreement={cmp['agreement']:.4f} shadow_matched={cmp['matched']} "
              f"loadavg={os.getloadavg()[0]:.2f}", flush=True)
        print("at the load balancer (nginx's access log, 1 ms resolution): "
              + " ".join(f"{c}: n={v['requests']} p50={v['p50_ms']} p95={v['p95_ms']} "
                         f"mean={v['mean_ms']} upstream_p95={v['upstream_p95_ms']} ms;"
                         for c, v in sh["lb"].items()), flush=True)
        print(f"mirror_p95_ratio_lb_aa={sh['lb_p95_ratio_aa']} "
              f"mirror_p95_ratio_lb_direct={sh['lb_p95_ratio_direct']} "
              f"mirror_upstream_p95_ratio_lb={sh['lb_upstream_mirror_p95_ratio']} "
              f"mirror_upstream_p95_ratio_lb_aa={sh['lb_upstream_p95_ratio_aa']}", flush=True)
        if good["outcome"] == "promoted":
            tracking.rollback(name)  # the next run starts from the same champion
    finally:
        if started_prom:
            monitoring.stop()
    peek = stats.peeking_simulation(n_sims=ab.SIMS[args.profile], looks=50,
                                    batch=stats.sample_size(0.10, 0.01) // 50, tau=0.01)
    print(f"peeking_n_sims={peek['n_sims']} peeking_fpr_fixed={peek['fpr_fixed']:.4f} "
          f"peeking_se={peek['se']:.4f}")
    if sh["mirror_p95_ratio"] > 1.10:
        print(f"mirror_note=above the 1.10 goal, with an A/A ratio of {sh['p95_ratio_aa']} in "
              f"the same run (load average {sh['loadavg_1m'][0]}-{sh['loadavg_1m'][1]} on "
              f"{len(os.sched_getaffinity(0))} CPUs); the p50 goes "
              f"{sh['pooled']['off']['p50_ms']} -> {sh['pooled']['mirror']['p50_ms']} ms with "
              f"the mirror ({sh['pooled']['off_aa']['p50_ms']} ms in the A/A condition); at "
              f"the load balancer the p95 ratio is {sh['lb_mirror_p95_ratio']} (A/A "
              f"{sh['lb_p95_ratio_aa']})")
    print(f"loadavg={os.getloadavg()[0]:.2f}")
    print(f"rollback_s={bad.get('rollback_s')}")
    print(f"promotion_failed_requests={good['failed_requests'] if good['outcome'] == 'promoted' else 'not_promoted'}")
    print(f"mirror_p95_ratio={sh['mirror_p95_ratio']}")
    print(f"mirror_p95_ratio_lb={sh['lb_mirror_p95_ratio']}")
    print(f"peeking_fpr_naive={peek['fpr_naive']:.4f}")
    print(f"peeking_fpr_sequential={peek['fpr_sequential']:.4f}")


if __name__ == "__main__":
    main()
