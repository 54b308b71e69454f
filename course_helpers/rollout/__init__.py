"""Lesson 09: A/B testing and gradual rollout.

* :mod:`.stats`: sample size, SRM, two-proportion z-test, peeking (naive vs mSPRT);
  :mod:`.ab` runs the simulated experiment end to end (``mlops-course rollout ab``).
* :mod:`.decision`: the canary step decision, a pure function.
* :mod:`.canary`: the controller behind nginx (``mlops-course rollout canary``).
* :mod:`.faults`: challengers, some with a seeded fault, registered in MLflow.
* :mod:`.shadow`: nginx ``mirror`` to a shadow and the comparison of the two prediction logs.

Importing the package is cheap: heavy modules are imported by the functions.
"""

from __future__ import annotations

import argparse
import json
import sys

PROFILES = ("smoke", "classroom", "full")


def _cli_ab(args: argparse.Namespace) -> int:
    from .ab import run_ab

    rep = run_ab(args.profile, out=args.out, baseline=args.baseline, mde=args.mde,
                 alpha=args.alpha, power=args.power, seed=args.seed)
    exp, peek = rep["experiment"], rep["peeking"]
    print(f"sample size: {rep['sample_size_per_arm']:,} users per arm for "
          f"{rep['baseline']:.1%} -> {rep['baseline'] + rep['mde']:.1%} "
          f"(alpha {rep['alpha']}, power {rep['power']})")
    print(f"SRM p = {exp['srm']['p_value']:.3g}; decision: {exp['decision']}"
          + (f" (lift {exp['test']['lift']:+.4f}, 95% CI [{exp['test']['ci_low']:+.4f}, "
             f"{exp['test']['ci_high']:+.4f}], p = {exp['test']['p_value']:.3g})"
             if exp["test"] else ""))
    print(f"broken split: SRM p = {rep['broken_split']['srm']['p_value']:.2g} -> "
          f"{rep['broken_split']['decision']}")
    print(f"peeking over {peek['looks']} looks, {peek['n_sims']:,} A/A tests: naive "
          f"{peek['fpr_naive']:.1%}, fixed horizon {peek['fpr_fixed']:.1%}, mSPRT "
          f"{peek['fpr_sequential']:.1%}")
    print(f"wrote {rep['out']}/ab.json")
    return 0


def _cli_canary(args: argparse.Namespace) -> int:
    import signal

    from .canary import run_canary
    from .decision import Thresholds

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    t = Thresholds(min_requests=args.min_requests, max_error_ratio=args.max_error_ratio,
                   max_p95_ms=args.max_p95_ms, max_p95_ratio=args.max_p95_ratio,
                   min_p95_delta_ms=args.min_p95_delta_ms)
    try:
        rep = run_canary(args.stable, args.canary, args.steps, args.interval,
                         max_failed_checks=args.max_failed_checks, thresholds=t,
                         metrics=args.metrics, profile=args.profile, out=args.out,
                         users=args.users, rate_per_user=args.rate, backend=args.backend)
    except KeyboardInterrupt:
        # run_canary has sent the traffic back to stable and stopped what it started; the
        # workspace's other servers (a kept champion, another lesson's) keep running
        print("interrupted: traffic is back on the stable version; the canary's servers, "
              "nginx and Locust are stopped", file=sys.stderr)
        return 130
    print(f"outcome: {rep['outcome']}; client-visible failed requests: "
          f"{rep.get('failed_requests')} of {(rep.get('load') or {}).get('requests')}; "
          f"wrote {rep['out']}/rollout.json")
    return 0 if rep["outcome"] == "promoted" else 3


def _cli_challenger(args: argparse.Namespace) -> int:
    from .faults import ensure_champion, make_challenger

    champ = ensure_champion(args.name, profile=args.profile)
    version = make_challenger(args.fault, name=args.name, seed=args.seed, profile=args.profile,
                              error_rate=args.error_rate, delay_ms=args.delay_ms)
    print(f"{args.name}: champion version {champ}; registered version {version} "
          f"(fault {args.fault}) as @challenger")
    print(f"try: mlops-course rollout canary --stable models:/{args.name}@champion "
          f"--canary models:/{args.name}@challenger --steps 5,25,50,100 --interval 5")
    return 0


def _cli_shadow(args: argparse.Namespace) -> int:
    from .shadow import run_shadow

    rep = run_shadow(args.stable, args.shadow, profile=args.profile, out=args.out)
    print(json.dumps({k: rep[k] for k in ("p95_without_mirror_ms", "p95_with_mirror_ms",
                                          "mirror_p95_ratio", "comparison")}, indent=2))
    return 0


def register_cli(subparsers) -> None:
    """``mlops-course rollout ab|canary|challenger|shadow``."""
    p = subparsers.add_parser("rollout", help="lesson 09: A/B statistics, canary, shadow")
    sub = p.add_subparsers(dest="rollout_cmd", required=True, metavar="ACTION")

    a = sub.add_parser("ab", help="the simulated A/B experiment end to end -> ab.json")
    a.add_argument("--profile", choices=PROFILES)
    a.add_argument("--baseline", type=float, default=0.10, help="control conversion rate")
    a.add_argument("--mde", type=float, default=0.01, help="absolute minimum detectable effect")
    a.add_argument("--alpha", type=float, default=0.05)
    a.add_argument("--power", type=float, default=0.8)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="folder for ab.json and ab.png")
    a.set_defaults(func=_cli_ab)

    c = sub.add_parser("canary", help="gradual rollout behind nginx, rolled back or promoted "
                                      "by the canary's metrics -> rollout.json")
    c.add_argument("--stable", required=True, help="e.g. models:/NAME@champion")
    c.add_argument("--canary", required=True, help="e.g. models:/NAME@challenger")
    c.add_argument("--steps", default="5,25,50,100", help="canary weights in percent")
    c.add_argument("--interval", type=float, default=10.0, help="seconds per analysis")
    c.add_argument("--max-failed-checks", type=int, default=1,
                   help="failed analyses before rollback (Flagger's threshold)")
    c.add_argument("--min-requests", type=int, default=50,
                   help="canary requests needed before a step is judged")
    c.add_argument("--max-error-ratio", type=float, default=0.01)
    c.add_argument("--max-p95-ms", type=float, default=500.0)
    c.add_argument("--max-p95-ratio", type=float, default=1.5,
                   help="canary p95 / stable p95 above this fails (when also "
                        "--min-p95-delta-ms slower)")
    c.add_argument("--min-p95-delta-ms", type=float, default=20.0)
    c.add_argument("--metrics", default="prometheus", choices=["prometheus", "scrape"],
                   help="read metrics from Prometheus (lesson 08) or the servers directly")
    c.add_argument("--backend", default="local", choices=["local", "docker"],
                   help="run each version as a local process or as a container (lesson 02)")
    c.add_argument("--users", type=int, help="Locust users (default: the profile's)")
    c.add_argument("--rate", type=float, default=10.0, help="requests/s per user")
    c.add_argument("--profile", choices=PROFILES)
    c.add_argument("--out", help="folder for rollout.json and rollout.png")
    c.set_defaults(func=_cli_canary)

    h = sub.add_parser("challenger", help="register a challenger version (healthy or with a "
                                          "seeded fault) beside a champion")
    h.add_argument("--fault", default="none", choices=["none", "errors", "slow"])
    h.add_argument("--name", default="rollout-demo")
    h.add_argument("--seed", type=int, default=1)
    h.add_argument("--error-rate", type=float, default=0.2)
    h.add_argument("--delay-ms", type=float, default=40.0)
    h.add_argument("--profile", choices=PROFILES)
    h.set_defaults(func=_cli_challenger)

    s = sub.add_parser("shadow", help="mirror live traffic to a shadow; compare predictions")
    s.add_argument("--stable", required=True)
    s.add_argument("--shadow", required=True)
    s.add_argument("--profile", choices=PROFILES)
    s.add_argument("--out")
    s.set_defaults(func=_cli_shadow)
