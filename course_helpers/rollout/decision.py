"""The canary step decision: metrics in, ``wait``/``continue``/``promote``/``rollback`` out.

A pure function (no servers, no clock), so it is unit-tested and graded on its own. The
semantics follow Flagger: every interval the canary's own metrics are checked against
absolute thresholds and against the stable version; a failed check is counted, and
``max_failed_checks`` failed checks roll back. Too little traffic to judge is neither a pass
nor a failure: wait (never promote on no evidence).
"""

from __future__ import annotations

import dataclasses
import math

VERDICTS = ("wait", "continue", "promote", "rollback")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """What a canary must satisfy at each check.

    ``min_requests``: canary requests in the window before anything is judged;
    ``max_error_ratio``: errors / requests (Flagger's 99 % success rate is 0.01);
    ``max_p95_ms``: absolute p95 latency; ``max_p95_ratio``: canary p95 / stable p95
    (a latency regression even when the absolute value still looks fine), judged only when
    the canary is also ``min_p95_delta_ms`` slower: a p95 from a few dozen requests and
    histogram buckets is coarse, and 12 ms against 7 ms is noise, not a regression;
    ``max_error_ratio_delta``: canary error ratio minus stable's.
    """

    min_requests: int = 50
    max_error_ratio: float = 0.01
    max_p95_ms: float = 500.0
    max_p95_ratio: float = 1.5
    max_error_ratio_delta: float = 0.005
    min_p95_delta_ms: float = 20.0


@dataclasses.dataclass(frozen=True)
class TrackMetrics:
    """One track's (stable or canary) numbers over the last analysis window."""

    requests: float
    errors: float
    p95_ms: float

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else float("nan")


@dataclasses.dataclass
class StepDecision:
    """``verdict`` and the ``checks`` behind it (name, value, threshold, passed)."""

    verdict: str
    checks: list[dict]
    failed_checks: int
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _finite(x: float) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def run_checks(canary: TrackMetrics, stable: TrackMetrics | None,
               t: Thresholds = Thresholds()) -> list[dict]:
    """Each check as ``{"name", "value", "threshold", "passed"}``. Ratios against stable are
    skipped when stable has too little traffic to compare with."""
    er = canary.error_ratio
    checks = [
        {"name": "error_ratio", "value": er, "threshold": t.max_error_ratio,
         "passed": er <= t.max_error_ratio},
        {"name": "p95_ms", "value": canary.p95_ms, "threshold": t.max_p95_ms,
         "passed": _finite(canary.p95_ms) and canary.p95_ms <= t.max_p95_ms},
    ]
    if stable is not None and stable.requests >= t.min_requests:
        delta = er - stable.error_ratio
        checks.append({"name": "error_ratio_vs_stable", "value": delta,
                       "threshold": t.max_error_ratio_delta,
                       "passed": delta <= t.max_error_ratio_delta})
        if _finite(stable.p95_ms) and stable.p95_ms > 0 and _finite(canary.p95_ms):
            ratio = canary.p95_ms / stable.p95_ms
            slower_ms = canary.p95_ms - stable.p95_ms
            checks.append({"name": "p95_ratio_vs_stable", "value": ratio,
                           "threshold": t.max_p95_ratio,
                           "passed": ratio <= t.max_p95_ratio or slower_ms < t.min_p95_delta_ms})
    return checks


def decide_step(canary: TrackMetrics, stable: TrackMetrics | None, *, final: bool,
                failed_checks: int = 0, max_failed_checks: int = 1,
                thresholds: Thresholds = Thresholds()) -> StepDecision:
    """Decide one analysis of a canary step.

    ``final`` is True at the last weight (100 %): a pass there promotes. ``failed_checks`` is
    the count before this analysis; the returned one includes it. Returns ``wait`` when the
    canary served fewer than ``min_requests`` (no evidence: do not move the weight, do not
    count a failure), ``rollback`` once failures reach ``max_failed_checks``, ``continue``
    after a failure below that (analyse the same step again) or after a pass before the last
    step, and ``promote`` after a pass at the last step.
    """
    if max_failed_checks < 1:
        raise ValueError("max_failed_checks must be at least 1")
    if canary.requests < thresholds.min_requests:
        return StepDecision("wait", [{"name": "requests", "value": canary.requests,
                                      "threshold": thresholds.min_requests, "passed": False}],
                            failed_checks, f"only {canary.requests:g} canary requests "
                                           f"(< {thresholds.min_requests}): not enough to judge")
    checks = run_checks(canary, stable, thresholds)
    failed = [c["name"] for c in checks if not c["passed"]]
    if failed:
        failed_checks += 1
        if failed_checks >= max_failed_checks:
            return StepDecision("rollback", checks, failed_checks,
                                f"failed {', '.join(failed)} ({failed_checks} failed check(s), "
                                f"limit {max_failed_checks})")
        return StepDecision("continue", checks, failed_checks,
                            f"failed {', '.join(failed)}; {failed_checks} of "
                            f"{max_failed_checks} allowed: analyse this step again")
    if final:
        return StepDecision("promote", checks, failed_checks, "every check passed at 100 %")
    return StepDecision("continue", checks, failed_checks, "every check passed: next step")


def parse_steps(text: str | list[int]) -> list[int]:
    """``"5,25,50,100"`` -> ``[5, 25, 50, 100]``; raises ValueError in one sentence unless the
    weights are integers, strictly increasing, between 1 and 100, ending at 100."""
    if isinstance(text, str):
        try:
            steps = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--steps must be comma-separated integer weights like 5,25,50,100, "
                             f"not {text!r}") from None
    else:
        steps = [int(s) for s in text]
    if not steps:
        raise ValueError("--steps is empty: give weights like 5,25,50,100")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"--steps must be strictly increasing, got {steps}")
    if steps[0] < 1 or steps[-1] != 100:
        raise ValueError(f"--steps must lie between 1 and 100 and end at 100 (the canary takes "
                         f"all traffic before it is promoted), got {steps}")
    return steps
