"""Model monitoring: drift of inputs and predictions, data quality, delayed-label AUC.

A window of production rows (from the prediction log, or the seeded scenarios below) is
compared with the training reference:

* **PSI** per feature on the reference's quantile bins (edges from the reference only, open
  ends, a floor for empty bins): < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant. PSI
  has a positive bias of about ``(bins - 1) * (1/n + 1/m)`` on samples of ``n`` and ``m``
  rows, so small windows look drifted: read it with its sample size;
* **KS** two-sample test per feature, with **Benjamini-Hochberg** over the features: with 30
  undrifted features, at least one raw p < 0.05 happens in 1 - 0.95^30 = 79% of windows;
* **prediction drift**: PSI of the predicted probabilities;
* **data quality**: null rate, out-of-range values, a unit change (scale off by 10x or more);
* **delayed labels**: AUC of the window once its labels arrive (``label_delay`` windows later).

:func:`export` publishes a window's result as Prometheus gauges (served by the webhook
receiver's ``/metrics``, job ``model-monitor``), so drift alerts take the same path as SLO
alerts: rule ``ModelInputDrift`` -> Alertmanager -> receiver -> retraining.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import config
from .prometheus import monitoring_dir

SCENARIOS = ("none", "covariate", "concept", "quality")
#: rows per window, windows per scenario run, reference rows, by profile
SIZES = {"smoke": (500, 12, 5_000), "classroom": (1_000, 16, 20_000),
         "full": (5_000, 48, 100_000)}
FEATURE_RANGE = (-8.0, 8.0)  # the seeded features are standard normal


# -- statistics ----------------------------------------------------------------------------
def quantile_edges(reference, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, duplicates dropped (a discrete or
    constant feature gets fewer bins, never empty duplicate bins). Shape ``(k,)``, k < bins."""
    ref = np.asarray(reference, dtype=float)
    ref = ref[~np.isnan(ref)]
    if ref.size == 0:
        raise ValueError("the reference has no non-null values: nothing to bin")
    qs = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf")
    return np.unique(qs)


def psi(reference, current, bins: int = 10, floor: float = 1e-4) -> float:
    """Population stability index of ``current`` against ``reference`` (1-D arrays).

    Bins: the reference's quantiles (so each holds ~1/bins of it), outer bins open to
    -inf/+inf (values beyond the reference's range still count); nulls are ignored (the
    data-quality checks count them). Empty bins get ``floor`` instead of 0, so the log stays
    finite. ``sum((c - r) * ln(c / r))`` over bins.
    """
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if cur.size == 0:
        raise ValueError("the current window has no non-null values: PSI is undefined")
    edges = quantile_edges(ref, bins)
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    r = np.maximum(r / r.sum(), floor)
    c = np.maximum(c / c.sum(), floor)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_bias(n_current: int, n_reference: int, bins: int = 10) -> float:
    """Expected PSI of two samples of the same distribution (chi-square approximation)."""
    return (bins - 1) * (1.0 / n_current + 1.0 / n_reference)


def ks_pvalue(reference, current) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (nulls dropped)."""
    from scipy.stats import ks_2samp

    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if cur.size == 0 or ref.size == 0:
        return float("nan")
    return float(ks_2samp(ref, cur, method="asymp").pvalue)


def benjamini_hochberg(pvalues, q: float = 0.05) -> np.ndarray:
    """Which hypotheses to reject at false discovery rate ``q`` (boolean array, same order).

    Sort the m p-values, find the largest k with ``p_(k) <= k/m * q``, reject the k smallest.
    NaN p-values are never rejected.
    """
    p = np.asarray(pvalues, dtype=float)
    m = int(np.sum(~np.isnan(p)))
    reject = np.zeros(p.shape, dtype=bool)
    if m == 0:
        return reject
    order = np.argsort(np.where(np.isnan(p), np.inf, p))[:m]
    passed = p[order] <= (np.arange(1, m + 1) / m) * q
    if passed.any():
        k = int(np.max(np.nonzero(passed)[0])) + 1
        reject[order[:k]] = True
    return reject


def ks_statistic(ref_sorted: np.ndarray, ref_cdf: np.ndarray, cur: np.ndarray) -> float:
    """Two-sample KS statistic D of ``cur`` (1-D, no NaN) against a reference given sorted
    (``ref_sorted``, shape (n,)) with its empirical CDF at its own points (``ref_cdf``).
    The same D as ``scipy.stats.ks_2samp`` (the largest CDF gap over both samples' points)
    without sorting the reference again for every window."""
    cur = np.sort(cur)
    m = cur.size
    gap_at_ref = ref_cdf - np.searchsorted(cur, ref_sorted, side="right") / m
    gap_at_cur = (np.searchsorted(ref_sorted, cur, side="right") / ref_sorted.size
                  - np.searchsorted(cur, cur, side="right") / m)
    hi = max(gap_at_ref.max(), gap_at_cur.max())
    lo = min(gap_at_ref.min(), gap_at_cur.min())
    return float(max(min(max(-lo, 0.0), 1.0), hi))


def ks_asymp_pvalues(d, n_ref: int, n_cur) -> np.ndarray:
    """Two-sided asymptotic KS p-values for statistics ``d`` (shape (k,)) of windows of
    ``n_cur`` rows (int or shape (k,)) against ``n_ref`` rows: Smirnov's distribution at
    the effective size n*m/(n+m), as ``ks_2samp(..., method="asymp")`` computes it."""
    from scipy.stats import kstwo

    n_cur = np.broadcast_to(np.asarray(n_cur, dtype=float), np.shape(d))
    big, small = np.maximum(float(n_ref), n_cur), np.minimum(float(n_ref), n_cur)
    return np.clip(kstwo.sf(np.asarray(d, dtype=float), np.round(big * small / (big + small))),
                   0, 1)


def quality_checks(window, reference, max_null_rate: float = 0.01,
                   feature_range: tuple[float, float] = FEATURE_RANGE,
                   reference_scale: dict[str, float] | None = None) -> list[str]:
    """Data-quality problems of a window, one sentence each ([] when clean): null rate above
    ``max_null_rate``, values outside ``feature_range``, a unit change (the median absolute
    value 10x the reference's or more, or a tenth or less). ``reference_scale``: the
    reference's median absolute value per column, if already computed."""
    problems = []
    for col in reference.columns:
        if col not in window.columns:
            problems.append(f"{col}: missing from the window")
            continue
        x = window[col].astype(float)
        nulls = float(x.isna().mean())
        if nulls > max_null_rate:
            problems.append(f"{col}: {nulls:.1%} nulls (limit {max_null_rate:.0%})")
        lo, hi = feature_range
        out = int(((x < lo) | (x > hi)).sum())
        if out:
            problems.append(f"{col}: {out} value(s) outside [{lo:g}, {hi:g}]")
        ref_scale = (reference_scale or {}).get(col) or float(
            np.nanmedian(np.abs(reference[col].to_numpy(dtype=float)))) or 1e-12
        cur_scale = float(np.nanmedian(np.abs(x.to_numpy()))) if x.notna().any() else ref_scale
        ratio = cur_scale / ref_scale
        if ratio >= 10 or ratio <= 0.1:
            problems.append(f"{col}: typical magnitude {ratio:.3g}x the reference's "
                            f"(a unit change?)")
    return problems


# -- the monitor ---------------------------------------------------------------------------
@dataclasses.dataclass
class DriftMonitor:
    """Compares windows with a reference, scikit-learn style: ``fit(X_ref, model)``, then
    ``check(X_window, y_window=None)`` -> dict.

    ``q``: Benjamini-Hochberg false discovery rate over the features (``correction=False``
    flags raw p < q instead); ``min_psi``: also require this PSI (effect size) for a flag;
    ``prediction_psi``: alarm above this PSI of the predicted probabilities;
    ``auc_drop``: alarm when the delayed-label AUC falls this far below the reference's.
    """

    q: float = 0.01
    correction: bool = True
    min_psi: float = 0.0
    bins: int = 10
    prediction_psi: float = 0.25
    auc_drop: float = 0.05

    def fit(self, reference, model=None, y_reference=None) -> "DriftMonitor":
        self.reference_ = reference.reset_index(drop=True)
        self.features_ = list(reference.columns)
        self.model_ = model
        self.ref_sorted_ = {c: np.sort(reference[c].to_numpy(dtype=float))
                            for c in self.features_}
        self.ref_scale_ = {c: float(np.nanmedian(np.abs(v))) for c, v in self.ref_sorted_.items()}
        # the reference's empirical CDF at its own points, for the KS statistic of each window
        self.ref_cdf_ = {c: np.searchsorted(v, v, side="right") / v.size
                         for c, v in self.ref_sorted_.items() if not np.isnan(v).any()}
        # bins and the reference's share in each, computed once (each window reuses them)
        self.edges_ = {c: quantile_edges(v, self.bins) for c, v in self.ref_sorted_.items()}
        self.ref_share_ = {}
        for c, v in self.ref_sorted_.items():
            v = v[~np.isnan(v)]
            counts = np.bincount(np.searchsorted(self.edges_[c], v, side="right"),
                                 minlength=self.edges_[c].size + 1)
            self.ref_share_[c] = np.maximum(counts / counts.sum(), 1e-4)
        self.ref_pred_ = self._proba(reference) if model is not None else None
        self.ref_auc_ = None
        if model is not None and y_reference is not None:
            from sklearn.metrics import roc_auc_score

            self.ref_auc_ = float(roc_auc_score(y_reference, self.ref_pred_))
        return self

    def _proba(self, X) -> np.ndarray:
        Xf = X[self.features_].astype(float).fillna(0.0).clip(-1e6, 1e6)
        return self.model_.predict_proba(Xf)[:, 1]

    def check(self, window, y=None, index: int = 0) -> dict[str, Any]:
        """One window's verdict: ``psi``, ``ks_p`` (per feature), ``flagged_features``,
        ``prediction_psi``, ``quality``, ``auc`` (when ``y`` is given), ``alert`` and
        ``reasons``."""
        from scipy.stats import ks_2samp

        psis, pvals, ks_d, ks_n = {}, {}, {}, {}
        for c in self.features_:
            cur = window[c].to_numpy(dtype=float)
            cur = cur[~np.isnan(cur)]
            if cur.size:
                counts = np.bincount(np.searchsorted(self.edges_[c], cur, side="right"),
                                     minlength=self.edges_[c].size + 1)
                share, ref = np.maximum(counts / counts.sum(), 1e-4), self.ref_share_[c]
                psis[c] = float(np.sum((share - ref) * np.log(share / ref)))  # = psi()
            else:
                psis[c] = float("nan")
            if not cur.size:
                pvals[c] = 1.0
            elif c in self.ref_cdf_:
                ks_d[c], ks_n[c] = ks_statistic(self.ref_sorted_[c], self.ref_cdf_[c], cur), cur.size
            else:
                pvals[c] = float(ks_2samp(self.ref_sorted_[c], cur, method="asymp").pvalue)
        if ks_d:
            pvals.update(zip(ks_d, ks_asymp_pvalues(list(ks_d.values()), len(self.reference_),
                                                    list(ks_n.values()))))
        p = np.array([pvals[c] for c in self.features_])
        reject = benjamini_hochberg(p, self.q) if self.correction else p < self.q
        flagged = [c for c, r in zip(self.features_, reject)
                   if r and (psis[c] >= self.min_psi or np.isnan(psis[c]))]
        out: dict[str, Any] = {"window": index, "rows": int(len(window)),
                               "psi": {c: round(v, 5) for c, v in psis.items()},
                               "ks_p": {c: float(f"{v:.4g}") for c, v in pvals.items()},
                               "flagged_features": flagged}
        reasons = []
        if flagged:
            reasons.append(f"input drift in {len(flagged)} feature(s)")
        quality = quality_checks(window, self.reference_, reference_scale=self.ref_scale_)
        out["quality"] = quality
        if quality:
            reasons.append(f"data quality: {len(quality)} problem(s)")
        if self.model_ is not None:
            pred = self._proba(window)
            out["prediction_psi"] = round(psi(self.ref_pred_, pred, self.bins), 5)
            out["positive_rate"] = round(float(np.mean(pred >= 0.5)), 4)
            if out["prediction_psi"] > self.prediction_psi:
                reasons.append(f"prediction drift (PSI {out['prediction_psi']:.2f})")
            if y is not None and len(set(np.asarray(y))) > 1:
                from sklearn.metrics import roc_auc_score

                out["auc"] = round(float(roc_auc_score(y, pred)), 4)
                if self.ref_auc_ is not None and out["auc"] < self.ref_auc_ - self.auc_drop:
                    reasons.append(f"AUC {out['auc']:.3f} vs {self.ref_auc_:.3f} at training")
        out["reasons"] = reasons
        out["alert"] = bool(reasons)
        return out


# -- seeded scenarios ----------------------------------------------------------------------
def _labels(X, rng, concept: bool) -> np.ndarray:
    """Labels from the course dataset's relationship (:func:`course_helpers.data.make_dataset`);
    ``concept``: the world changed (a third of the signal weights flip sign, the interaction
    reverses) while the inputs look the same."""
    n_features = X.shape[1]
    k = max(2, n_features // 2)
    weights = np.random.default_rng(20261126).normal(scale=1.0, size=k)
    inter = 0.8
    if concept:
        weights = weights.copy()
        weights[: k // 3 + 1] *= -1
        inter = -0.8
    logit = X[:, :k] @ weights / np.sqrt(k) * 2.0 + inter * X[:, 0] * X[:, 1] - 1.0
    return (rng.random(len(X)) < 1.0 / (1.0 + np.exp(-logit))).astype(int)


def make_window(scenario: str, index: int, rows: int, seed: int = 0, onset: int = 0,
                n_features: int = 30):
    """Window ``index`` of a scenario: ``(X, y)`` (DataFrame, int array), seeded.

    Before ``onset`` every scenario is the training world. From ``onset``: ``covariate``
    shifts f00-f02 by +0.3 standard deviations (labels follow the same rule);
    ``concept`` leaves the inputs alone and changes the rule; ``quality`` has a unit
    change (f03 in thousandths: x1000) and 3% nulls in f05.
    """
    import pandas as pd

    from ..data import feature_names

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng([seed, index, SCENARIOS.index(scenario), 8])
    X = rng.normal(size=(rows, n_features))
    drifted = scenario != "none" and index >= onset
    if drifted and scenario == "covariate":
        X[:, :3] += 0.3
    y = _labels(X, rng, concept=drifted and scenario == "concept")
    df = pd.DataFrame(X, columns=feature_names(n_features))
    if drifted and scenario == "quality":
        df["f03"] = df["f03"] * 1000.0
        df.loc[rng.random(rows) < 0.03, "f05"] = np.nan
    return df, y


def reference(profile: str | None = None, seed: int = 0):
    """The training reference and the model trained on it: ``(X_ref, y_ref, model)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..data import make_dataset

    n_ref = SIZES[config.get_profile(profile).name][2]
    X, y = make_dataset(n_ref, seed=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    return X, y.to_numpy(), model


def run_windows(scenario: str, n_windows: int, rows: int, monitor: DriftMonitor,
                seed: int = 0, onset: int | None = None, label_delay: int = 1,
                progress=None) -> list[dict]:
    """Check ``n_windows`` windows of a scenario; labels of window w are used (AUC) as if
    they arrived ``label_delay`` windows later (``auc_known_at``). ``onset`` defaults to a
    quarter of the way in (``none`` never drifts)."""
    onset = n_windows // 4 if onset is None else onset
    out = []
    for w in range(n_windows):
        X, y = make_window(scenario, w, rows, seed=seed, onset=onset)
        res = monitor.check(X, y, index=w)
        res["drifted"] = scenario != "none" and w >= onset
        res["auc_known_at"] = w + label_delay
        out.append(res)
        if progress:
            progress(w, res)
    return out


def rates(results: list[dict]) -> dict[str, float]:
    """``false_alarm_rate`` over undrifted windows, ``detection_rate`` over drifted ones."""
    clean = [r["alert"] for r in results if not r["drifted"]]
    drifted = [r["alert"] for r in results if r["drifted"]]
    return {"false_alarm_rate": round(float(np.mean(clean)), 4) if clean else float("nan"),
            "detection_rate": round(float(np.mean(drifted)), 4) if drifted else float("nan")}


def run_scenario(scenario: str, profile: str | None = None, out: str | Path | None = None,
                 seed: int = 0, publish: bool = True) -> dict[str, Any]:
    """``mlops-course monitor drift``: run a scenario at the profile's sizes, write
    ``drift.json`` (per window: ``psi``, ``ks_p``, ``flagged_features``, ``alert``...) and
    ``drift.png``; publish the last window's gauges (:func:`export`) and save the last
    drifted window with its labels as the recent data a retrain would use."""
    prof = config.get_profile(profile).name
    rows, n_windows, _ = SIZES[prof]
    X_ref, y_ref, model = reference(prof)
    monitor = DriftMonitor().fit(X_ref, model, y_ref)
    results = run_windows(scenario, n_windows, rows, monitor, seed=seed)
    out_dir = Path(out) if out else config.workspace_dir("monitoring", "drift", scenario, prof)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"scenario": scenario, "profile": prof, "window_rows": rows,
               "n_windows": n_windows, "reference_rows": len(X_ref),
               "reference_auc": round(monitor.ref_auc_, 4), "monitor": dataclasses.asdict(monitor),
               **rates(results), "alerts": int(sum(r["alert"] for r in results)),
               "windows": results}
    json_path = out_dir / "drift.json"
    json_path.write_text(json.dumps(summary, indent=1))
    from .plots import plot_drift

    fig = plot_drift(results, title=f"scenario {scenario} ({prof}: {rows} rows a window)",
                     reference_auc=monitor.ref_auc_)
    png = out_dir / "drift.png"
    fig.savefig(png, dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    if publish:
        export(results[-1])
        X, y = make_window(scenario, n_windows - 1, rows, seed=seed, onset=0)
        save_recent(X, y)
    summary.update(json=str(json_path), plot=str(png))
    return summary


def save_recent(X, y) -> Path:
    """Keep the most recent labelled window where a retrain triggered by an alert finds it
    (``monitoring/recent.parquet``, columns f00.. and ``label``)."""
    df = X.copy()
    df["label"] = np.asarray(y).astype(int)
    df = df.fillna(0.0)
    path = monitoring_dir() / "recent.parquet"
    tmp = path.with_name(".recent.parquet.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def export(result: dict[str, Any], job: str = "model-monitor") -> None:
    """Publish one window's drift result (``psi``, ``ks_p`` per feature, ``flagged_features``,
    ``alert``, ``window``, optional ``prediction_psi``) as gauges ``mlops_drift_*``."""
    metrics = [
        {"name": "mlops_drift_alert", "value": 1.0 if result.get("alert") else 0.0,
         "help": "1 when the last window's drift checks raised an alarm"},
        {"name": "mlops_drift_flagged_features",
         "value": float(len(result.get("flagged_features", []))),
         "help": "features flagged in the last window (after the multiple-testing correction)"},
        {"name": "mlops_drift_window", "value": float(result.get("window", 0)),
         "help": "index of the last window tested"},
    ]
    for feature, value in (result.get("psi") or {}).items():
        metrics.append({"name": "mlops_drift_psi", "labels": {"feature": feature},
                        "value": float(value), "help": "population stability index per feature"})
    for feature, value in (result.get("ks_p") or {}).items():
        metrics.append({"name": "mlops_drift_ks_pvalue", "labels": {"feature": feature},
                        "value": float(value), "help": "two-sample KS p-value per feature"})
    if result.get("prediction_psi") is not None:
        metrics.append({"name": "mlops_drift_prediction_psi",
                        "value": float(result["prediction_psi"]),
                        "help": "PSI of the predicted probabilities"})
    if result.get("auc") is not None:
        metrics.append({"name": "mlops_model_auc", "value": float(result["auc"]),
                        "help": "AUC of the last window whose labels arrived"})
    path = monitoring_dir() / "drift_metrics.json"
    tmp = path.with_name(".drift_metrics.json.tmp")
    tmp.write_text(json.dumps({"job": job, "updated": time.time(), "metrics": metrics}))
    os.replace(tmp, path)


def windows_from_log(db: str, rows: int, features: list[str] | None = None):
    """The prediction log (lesson 01's database) as consecutive windows of ``rows`` inputs,
    aligned to its end (the last window holds the latest ``rows`` predictions; older rows
    that do not fill a window are left out): a list of DataFrames (feature columns, plus
    ``probability``), oldest first."""
    import pandas as pd

    from ..serving.store import read_predictions

    log = read_predictions(db, "SELECT ts, inputs, probability FROM predictions ORDER BY id")
    if log.empty:
        return []
    X = pd.DataFrame([json.loads(s) if isinstance(s, str) else s for s in log["inputs"]])
    if features:
        X = X[[c for c in features if c in X.columns]]
    X["probability"] = log["probability"].to_numpy()
    first = len(X) % rows
    return [X.iloc[i:i + rows].reset_index(drop=True) for i in range(first, len(X) - rows + 1, rows)]
