"""What a capstone week does, by profile: a pure description (no servers), unit-tested.

A simulated *day* is a batch of data plus at least ``day_s`` seconds of paced production
traffic; events (drift, a retrain, a canary, a killed replica) lengthen the day they happen
on, so a day is seconds in ``smoke`` and tens of seconds in ``classroom``.
"""

from __future__ import annotations

import dataclasses

from ..config import PROFILE_NAMES
from ..errors import CourseError

MAX_DAYS = 30


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and seeded event days of one week (days are 1-based).

    ``rows``: rows in each day's batch; ``day_s``: seconds of traffic a quiet day lasts at
    least; ``users`` x ``rate``: paced Locust users (req/s each) on the production
    deployment; ``canary_users`` the same for the canary's own load; ``canary_steps`` (%)
    and ``canary_interval_s``: the canary analysis; ``min_requests``: canary requests a step
    needs before it is judged; ``drift_day``: the batch drifts from this day on;
    ``bad_model_day``: a model that passes the offline gate but is slow in production is
    registered; ``kill_day``: one production replica is SIGKILLed; ``retrain_every``: a
    scheduled retrain every N days (None: only alert-triggered retrains);
    ``sample_s``: seconds between timeline and memory samples."""

    profile: str
    days: int
    rows: int
    day_s: float
    users: int
    rate: float
    canary_users: int
    canary_steps: tuple[int, ...]
    canary_interval_s: float
    min_requests: int
    slow_delay_ms: float
    drift_day: int
    bad_model_day: int
    kill_day: int
    retrain_every: int | None
    sample_s: float
    # The week's own SLO, looser than lesson 08's 99.9 % on purpose: a compressed week serves
    # a few thousand requests, so 99.9 % would leave an error budget of two or three requests
    # for the whole week (one unlucky retry would "break" it). Production windows are longer.
    slo_availability: float = 0.99
    slo_p95_ms: float = 500.0

    def events_on(self, day: int) -> list[str]:
        """The seeded events of ``day``: ``drift``, ``bad_model``, ``kill``, ``schedule``."""
        out = []
        if day == self.drift_day:
            out.append("drift")
        if day == self.bad_model_day:
            out.append("bad_model")
        if day == self.kill_day:
            out.append("kill")
        if self.retrain_every and day % self.retrain_every == 0 and day != self.drift_day:
            out.append("schedule")
        return out


_BASE = {
    "smoke": dict(days=3, rows=1_000, day_s=5.0, users=3, rate=5.0, canary_users=4,
                  canary_steps=(10, 25, 50, 100), canary_interval_s=3.0, min_requests=10,
                  slow_delay_ms=35.0, retrain_every=None, sample_s=1.0),
    "classroom": dict(days=5, rows=2_000, day_s=8.0, users=4, rate=5.0, canary_users=4,
                      canary_steps=(10, 25, 50, 100), canary_interval_s=4.0, min_requests=15,
                      slow_delay_ms=35.0, retrain_every=None, sample_s=2.0),
    "full": dict(days=7, rows=5_000, day_s=30.0, users=10, rate=5.0, canary_users=6,
                 canary_steps=(5, 25, 50, 100), canary_interval_s=10.0, min_requests=50,
                 slow_delay_ms=35.0, retrain_every=3, sample_s=3.0),
}


def make_plan(profile: str | None = "classroom", days: int | None = None) -> Plan:
    """The plan for ``profile`` and ``days`` (default: the profile's), with the seeded event
    days spread over the week; one sentence (CourseError) for a bad profile or day count."""
    from .. import config

    try:
        name = config.get_profile(profile).name
    except ValueError as err:
        raise CourseError(str(err)) from None
    base = dict(_BASE[name])
    default_days = base.pop("days")
    n = default_days if days is None else days
    if isinstance(n, bool) or not isinstance(n, int) or not 3 <= n <= MAX_DAYS:
        raise CourseError(f"--days must be a whole number from 3 to {MAX_DAYS} (got {days!r}): "
                          "a week needs a quiet day, a drift day and a bad-model day")
    # day 1 quiet (the kill happens under normal traffic), drift next, the bad model after
    drift_day = 2 if n < 5 else 3
    bad_day = drift_day + 1
    kill_day = 1 if n < 5 else 2
    return Plan(profile=name, days=n, drift_day=drift_day, bad_model_day=bad_day,
                kill_day=kill_day, **base)


assert set(_BASE) == set(PROFILE_NAMES)
