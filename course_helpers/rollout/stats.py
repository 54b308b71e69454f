"""A/B statistics that keep a decision honest: sample size before, SRM first, a z-test and a
confidence interval for the lift, and what peeking does to the false-positive rate.

Conversion rates are fractions (0.10 = 10 %); counts are users. Everything is vectorised
numpy/statsmodels/scipy: the peeking simulation of 10,000 A/A tests x 50 looks takes well
under a second.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import CourseError

#: An SRM p-value below this means the split is broken: do not read the result.
SRM_ALPHA = 0.001


def _check_rate(name: str, p: float) -> None:
    if not (0 < p < 1):
        raise CourseError(f"{name} must be a conversion rate strictly between 0 and 1, got {p!r}")


def sample_size(baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8,
                ratio: float = 1.0) -> int:
    """Users per arm (control; treatment gets ``ratio`` times as many) to detect a move from
    ``baseline`` to ``baseline + mde`` (absolute, e.g. 0.10 -> 0.11 is ``mde=0.01``) with a
    two-sided test at ``alpha`` and the given ``power``. Uses Cohen's h and
    statsmodels' ``NormalIndPower``; 0.10 -> 0.11 at 0.05/0.8 gives 14,745."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    _check_rate("baseline", baseline)
    _check_rate("baseline + mde", baseline + mde)
    if mde == 0:
        raise CourseError("the minimum detectable effect must not be 0 (no sample is big enough)")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise CourseError("alpha and power must be between 0 and 1 (e.g. 0.05 and 0.8)")
    h = abs(proportion_effectsize(baseline + mde, baseline))
    n = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=ratio,
                                     alternative="two-sided")
    return int(math.ceil(n))


def srm_check(n_a: int, n_b: int, expected_share_b: float = 0.5) -> dict:
    """Sample-ratio mismatch: chi-square of the observed arm sizes against the planned split.

    Returns ``chi2``, ``p_value``, ``share_b`` and ``ok`` (p >= ``SRM_ALPHA``). A failed SRM
    means users were lost or mis-assigned: the comparison is not trustworthy whatever it says.
    """
    from scipy.stats import chisquare

    if n_a < 0 or n_b < 0 or n_a + n_b == 0:
        raise CourseError("the SRM check needs non-negative arm sizes with at least one user")
    total = n_a + n_b
    expected = [total * (1 - expected_share_b), total * expected_share_b]
    chi2, p = chisquare([n_a, n_b], f_exp=expected)
    return {"n_a": int(n_a), "n_b": int(n_b), "share_b": round(n_b / total, 5),
            "expected_share_b": expected_share_b, "chi2": float(chi2), "p_value": float(p),
            "ok": bool(p >= SRM_ALPHA)}


def ztest(conv_a: int, n_a: int, conv_b: int, n_b: int, alpha: float = 0.05) -> dict:
    """Two-proportion z-test (pooled) and a ``1 - alpha`` Newcombe-style interval for the
    absolute lift ``p_b - p_a``; ``relative_lift`` is the lift over ``p_a``."""
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    for c, n, arm in ((conv_a, n_a, "A"), (conv_b, n_b, "B")):
        if n <= 0 or c < 0 or c > n:
            raise CourseError(f"arm {arm}: conversions must be between 0 and the number of users "
                              f"(got {c} of {n})")
    z, p = proportions_ztest([conv_b, conv_a], [n_b, n_a])
    lo, hi = confint_proportions_2indep(conv_b, n_b, conv_a, n_a, compare="diff",
                                        alpha=alpha, method="newcomb")
    pa, pb = conv_a / n_a, conv_b / n_b
    return {"rate_a": pa, "rate_b": pb, "lift": pb - pa,
            "relative_lift": (pb - pa) / pa if pa else float("nan"),
            "z": float(z), "p_value": float(p), "ci_low": float(lo), "ci_high": float(hi),
            "alpha": alpha}


def decide_ab(conv_a: int, n_a: int, conv_b: int, n_b: int, alpha: float = 0.05,
              expected_share_b: float = 0.5) -> dict:
    """The whole A/B decision from counts, SRM first.

    ``decision`` is ``invalid_srm`` (the split is broken: fix it, do not read the lift),
    ``ship_b`` (B significantly better), ``keep_a`` (B significantly worse) or
    ``no_difference`` (not significant: the test cannot tell them apart at this size).
    """
    srm = srm_check(n_a, n_b, expected_share_b)
    out = {"srm": srm}
    if not srm["ok"]:
        return out | {"decision": "invalid_srm", "test": None}
    test = ztest(conv_a, n_a, conv_b, n_b, alpha)
    if test["p_value"] < alpha:
        decision = "ship_b" if test["lift"] > 0 else "keep_a"
    else:
        decision = "no_difference"
    return out | {"decision": decision, "test": test}


@dataclasses.dataclass
class Population:
    """A simulated experiment: ``users`` ids split by ``assign`` into arms, converting with
    ``rate_a`` / ``rate_b`` (the true effect is ``rate_b - rate_a``)."""

    arm: np.ndarray  # 0 = A, 1 = B, one per user
    converted: np.ndarray  # bool, one per user

    def counts(self) -> tuple[int, int, int, int]:
        """``(conv_a, n_a, conv_b, n_b)``."""
        a, b = self.arm == 0, self.arm == 1
        return (int(self.converted[a].sum()), int(a.sum()),
                int(self.converted[b].sum()), int(b.sum()))


def assign(user_ids: np.ndarray, share_b: float = 0.5, salt: str = "exp") -> np.ndarray:
    """Sticky assignment: a hash of (salt, user id) decides the arm, so a user always gets
    the same one (what nginx ``split_clients`` does with MurmurHash2)."""
    import hashlib

    out = np.empty(len(user_ids), dtype=np.int8)
    for i, uid in enumerate(user_ids):
        h = int.from_bytes(hashlib.blake2b(f"{salt}:{uid}".encode(), digest_size=4).digest(),
                           "big")
        out[i] = 1 if h / 2**32 < share_b else 0
    return out


def simulate_population(n_users: int, rate_a: float = 0.10, rate_b: float = 0.11,
                        seed: int = 0, share_b: float = 0.5,
                        drop_b: float = 0.0) -> Population:
    """``n_users`` users assigned by :func:`assign`, converting with the true rates.

    ``drop_b`` loses that share of B's users before analysis (a broken split: say B's page
    crashed before it logged the exposure) - what the SRM check must catch.
    """
    _check_rate("rate_a", rate_a)
    _check_rate("rate_b", rate_b)
    rng = np.random.default_rng(seed)
    arm = assign(np.arange(n_users), share_b, salt=f"s{seed}")
    p = np.where(arm == 1, rate_b, rate_a)
    converted = rng.random(n_users) < p
    if drop_b:
        keep = ~((arm == 1) & (rng.random(n_users) < drop_b))
        arm, converted = arm[keep], converted[keep]
    return Population(arm, converted)


def msprt_statistic(diff: np.ndarray, var: np.ndarray, tau2: float) -> np.ndarray:
    """The mixture SPRT likelihood ratio (Johari et al., normal mixture N(0, ``tau2``) over
    the true difference) for an observed ``diff`` with variance ``var``. Reject H0 the first
    time it reaches ``1/alpha``: valid however often you look."""
    return np.sqrt(var / (var + tau2)) * np.exp(tau2 * diff**2 / (2 * var * (var + tau2)))


def peeking_simulation(n_sims: int = 5_000, looks: int = 50, batch: int = 200,
                       rate: float = 0.10, alpha: float = 0.05, tau: float = 0.01,
                       seed: int = 0) -> dict:
    """A/A tests (no true effect) checked after every batch of ``batch`` users per arm.

    ``fpr_naive``: share of tests a fixed-horizon z-test called significant at *any* look;
    ``fpr_fixed``: the same test read once at the end (should be ~``alpha``);
    ``fpr_sequential``: share where the mSPRT (mixture width ``tau``, absolute) ever crossed
    ``1/alpha``. ``se`` is the Monte-Carlo standard error of a rate near the naive one.
    Also returns ``first_look_naive``, the look at which each false positive first appeared
    (a histogram source).
    """
    from scipy.stats import norm

    if looks < 1 or batch < 1 or n_sims < 10:
        raise CourseError("the peeking simulation needs looks >= 1, batch >= 1, n_sims >= 10")
    rng = np.random.default_rng(seed)
    ca = rng.binomial(batch, rate, size=(n_sims, looks)).cumsum(axis=1)
    cb = rng.binomial(batch, rate, size=(n_sims, looks)).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    pa, pb = ca / n, cb / n
    pooled = (ca + cb) / (2 * n)
    var_pooled = pooled * (1 - pooled) * (2 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var_pooled > 0, (pb - pa) / np.sqrt(var_pooled), 0.0)
    crit = norm.ppf(1 - alpha / 2)
    sig = np.abs(z) > crit
    naive = sig.any(axis=1)
    var = np.maximum(pa * (1 - pa) / n + pb * (1 - pb) / n, 1e-12)
    lam = msprt_statistic(pb - pa, var, tau**2)
    seq = (lam >= 1 / alpha).any(axis=1)
    fpr = float(naive.mean())
    first = np.argmax(sig, axis=1)[naive] + 1
    return {"n_sims": n_sims, "looks": looks, "batch_per_arm": batch, "rate": rate,
            "alpha": alpha, "tau": tau, "fpr_naive": fpr, "fpr_fixed": float(sig[:, -1].mean()),
            "fpr_sequential": float(seq.mean()),
            "se": float(math.sqrt(max(fpr * (1 - fpr), 1e-9) / n_sims)),
            "first_look_naive": first.tolist()}
