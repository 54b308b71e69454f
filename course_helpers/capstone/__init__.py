"""Lesson 10, the capstone: a compressed week in production, on one machine, in one command.

* :mod:`.plan`: what a week does by profile (sizes, the seeded event days);
* :mod:`.week`: :func:`run_week` plays it with every earlier lesson's module;
* :mod:`.checklist`: best practices scored from the run's own artefacts (ML Test Score);
* :mod:`.report`: ``timeline.png`` and ``report.md``.

``mlops-course capstone run --profile P --days N`` writes ``<workspace>/capstone/<P>/``
(``capstone.json``, ``timeline.csv``, ``memory.csv``, ``timeline.png``, ``report.md``).
Importing this package is cheap.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..config import PROFILE_NAMES

if TYPE_CHECKING:
    from .checklist import Checklist
    from .week import WeekReport

__all__ = ["checklist", "run_week"]


def run_week(profile: str = "classroom", days: int | None = None, out=None, seed: int = 0,
             backend: str = "local", verbose: bool = True) -> "WeekReport":
    """Play the week; see :func:`course_helpers.capstone.week.run_week`."""
    from .week import run_week as _run

    return _run(profile, days, out, seed, backend, verbose)


def checklist(run_dir, store: bool = True) -> "Checklist":
    """Score a run directory; see :func:`course_helpers.capstone.checklist.checklist`."""
    from .checklist import checklist as _ck

    return _ck(run_dir, store)


def _days(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--days wants a whole number, not {text!r}") from None


def _cli_run(args: argparse.Namespace) -> int:
    import signal

    from ..errors import CourseError
    from .plan import make_plan

    make_plan(args.profile, args.days)  # bad input: one sentence before anything starts
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C
    rep = run_week(args.profile, args.days, args.out, args.seed, args.backend)
    s = rep.summary
    print(f"drift day {s['drift_day']} detected on day {s['drift_detected_day']}, retrained "
          f"on day {s['retrained_day']}; bad model's highest canary weight "
          f"{s['bad_model_max_weight']}%; SLO {'met' if s['slo_met'] else 'MISSED'}; "
          f"{s['wall_s']} s wall, peak {s['peak_mb']} MB")
    ck = rep.data.get("checklist")
    if ck:
        print(f"best practices: {ck['score']} of {ck['checked']} checked items pass")
    print(f"wrote {rep.out}/capstone.json, timeline.png and report.md")
    failed = [d["day"] for d in rep.days if d.get("status", "ok") != "ok"]
    if failed:
        raise CourseError(f"day(s) {', '.join(map(str, failed))} failed: see the status in "
                          f"{rep.out}/capstone.json")
    return 0


def _cli_checklist(args: argparse.Namespace) -> int:
    from .. import config

    run_dir = args.run_dir or config.workspace_dir("capstone", args.profile or "classroom")
    ck = checklist(run_dir)
    print(ck.table().to_string(index=False))
    print(ck)
    return 0


def register_cli(subparsers) -> None:
    """``mlops-course capstone run|checklist``."""
    p = subparsers.add_parser("capstone", help="lesson 10: a compressed week in production")
    sub = p.add_subparsers(dest="capstone_cmd", required=True, metavar="ACTION")
    r = sub.add_parser("run", help="play the week -> capstone.json, timeline.png, report.md")
    r.add_argument("--profile", choices=PROFILE_NAMES)
    r.add_argument("--days", type=_days, help="simulated days, 3-30 (default: the profile's)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="run directory (default <workspace>/capstone/<profile>)")
    r.add_argument("--backend", default="local", choices=["local", "auto", "docker"],
                   help="where the production replicas run (default local)")
    r.set_defaults(func=_cli_run)
    c = sub.add_parser("checklist", help="score a run's best practices from its artefacts")
    c.add_argument("run_dir", nargs="?")
    c.add_argument("--profile", choices=PROFILE_NAMES)
    c.set_defaults(func=_cli_checklist)
