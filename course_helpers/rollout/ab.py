"""The simulated A/B experiment end to end: plan, run, SRM, test, peeking; ``ab.json``.

``mlops-course rollout ab --profile P`` calls :func:`run_ab`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import config
from . import stats

#: A/A simulations per profile: enough that the false-positive rates are stable to about
#: +-1 percentage point (the Monte-Carlo standard error is reported beside them).
SIMS = {"smoke": 2_000, "classroom": 10_000, "full": 50_000}


def run_ab(profile: str | None = None, out: str | Path | None = None, baseline: float = 0.10,
           mde: float = 0.01, alpha: float = 0.05, power: float = 0.8, seed: int = 0,
           looks: int = 50, plot: bool = True) -> dict:
    """Plan the sample size, simulate a population with a true effect of ``mde``, check the
    split (SRM) and decide; repeat on a broken split; simulate peeking over ``looks`` looks.

    Writes ``ab.json`` (and ``ab.png`` when ``plot``) to ``out`` (default
    ``<workspace>/rollout/ab``); returns the same dict.
    """
    prof = config.get_profile(profile)
    t0 = time.perf_counter()
    n = stats.sample_size(baseline, mde, alpha, power)
    pop = stats.simulate_population(2 * n, baseline, baseline + mde, seed=seed)
    result = stats.decide_ab(*pop.counts(), alpha=alpha)
    broken = stats.simulate_population(2 * n, baseline, baseline + mde, seed=seed, drop_b=0.03)
    broken_result = stats.decide_ab(*broken.counts(), alpha=alpha)
    power_sim = simulated_power(n, baseline, baseline + mde, alpha,
                                n_sims=SIMS[prof.name] // 5, seed=seed)
    peek = stats.peeking_simulation(n_sims=SIMS[prof.name], looks=looks,
                                    batch=max(1, n // looks), rate=baseline, alpha=alpha,
                                    tau=mde, seed=seed)
    first_looks = peek.pop("first_look_naive")
    report = {"profile": prof.name, "baseline": baseline, "mde": mde, "alpha": alpha,
              "power": power, "sample_size_per_arm": n,
              "experiment": result, "broken_split": broken_result,
              "simulated_power": power_sim, "peeking": peek,
              "seconds": round(time.perf_counter() - t0, 2)}
    out = Path(out) if out else config.workspace_dir("rollout", "ab")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.json").write_text(json.dumps(report, indent=2))
    if plot:
        from .plots import peeking_plot

        fig = peeking_plot(first_looks, peek)
        fig.savefig(out / "ab.png", dpi=90, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
    report["out"] = str(out)
    return report


def simulated_power(n_per_arm: int, rate_a: float, rate_b: float, alpha: float = 0.05,
                    n_sims: int = 2_000, seed: int = 0) -> dict:
    """Share of simulated experiments of ``n_per_arm`` users per arm, with a true effect,
    that the z-test calls significant: should be close to the planned power."""
    import numpy as np
    from scipy.stats import norm

    rng = np.random.default_rng(seed + 1)
    ca = rng.binomial(n_per_arm, rate_a, n_sims)
    cb = rng.binomial(n_per_arm, rate_b, n_sims)
    pooled = (ca + cb) / (2 * n_per_arm)
    z = (cb - ca) / n_per_arm / np.sqrt(pooled * (1 - pooled) * 2 / n_per_arm)
    return {"n_sims": n_sims, "power": float((np.abs(z) > norm.ppf(1 - alpha / 2)).mean())}
