"""Challengers for the canary demo: real registered model versions, some with a seeded fault.

A :class:`FaultyModel` wraps a trained course model and is registered in MLflow like any
other version (skops format, signature, input example). Its fault is a parameter, so the
registry shows exactly what is wrong with it (``params.fault``):

* ``errors``: raises on a seeded ``error_rate`` share of inputs (the same input always
  fails: think of a feature transform that breaks on some values); the server answers 500.
* ``slow``: sleeps ``delay_ms`` per prediction call (think of a model five times bigger).
* ``none``: a healthy challenger (the same model retrained with another seed).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

FAULTS = ("none", "errors", "slow")


class SeededFault(ValueError):
    """What a model with ``fault='errors'`` raises on its failing inputs."""


class FaultyModel(ClassifierMixin, BaseEstimator):
    """``base`` (a fitted classifier) plus a seeded fault; see the module docstring."""

    #: skops must trust this class to load it (see tracking.trusted_types)
    skops_trusted_types_ = ["course_helpers.rollout.faults.FaultyModel"]

    def __init__(self, base=None, fault: str = "none", error_rate: float = 0.2,
                 delay_ms: float = 40.0, seed: int = 0) -> None:
        self.base = base
        self.fault = fault
        self.error_rate = error_rate
        self.delay_ms = delay_ms
        self.seed = seed

    def fit(self, X, y=None):  # the base is fitted already; kept for the sklearn API
        self.classes_ = self.base.classes_
        if hasattr(self.base, "feature_names_in_"):
            self.feature_names_in_ = self.base.feature_names_in_
        self.n_features_in_ = getattr(self.base, "n_features_in_", np.shape(X)[1])
        return self

    def _failing(self, X) -> np.ndarray:
        arr = np.ascontiguousarray(np.asarray(X, dtype=float).round(4))
        out = np.empty(len(arr), dtype=bool)
        for i, row in enumerate(arr):
            h = hashlib.blake2b(row.tobytes(), digest_size=4, key=str(self.seed).encode())
            out[i] = int.from_bytes(h.digest(), "big") / 2**32 < self.error_rate
        return out

    def _apply_fault(self, X) -> None:
        if self.fault == "slow":
            time.sleep(self.delay_ms / 1000)
        elif self.fault == "errors":
            bad = self._failing(X)
            if bad.any():
                raise SeededFault(f"seeded fault: {int(bad.sum())} of {len(bad)} input(s) "
                                  f"break this model version")

    def predict_proba(self, X):
        self._apply_fault(X)
        return self.base.predict_proba(X)

    def predict(self, X):
        self._apply_fault(X)
        return self.base.predict(X)


def make_challenger(fault: str = "none", *, name: str = "rollout-demo", seed: int = 1,
                    profile: str | None = None, error_rate: float = 0.2,
                    delay_ms: float = 40.0, alias: str = "challenger") -> str:
    """Train the course model (``seed``), wrap it with ``fault``, register it as a new version
    of ``name`` with ``alias``; returns the version. ``fault='none'`` registers the plain
    model (a healthy challenger)."""
    from .. import model as course_model
    from ..errors import CourseError

    if fault not in FAULTS:
        raise CourseError(f"unknown fault {fault!r}: choose one of {', '.join(FAULTS)}")
    est, X, _ = course_model.train("logreg", seed=seed, profile=profile)
    if fault != "none":
        est = FaultyModel(est, fault, error_rate=error_rate, delay_ms=delay_ms,
                          seed=seed).fit(X)
    params = {"fault": fault, "seed": seed}
    if fault == "errors":
        params["error_rate"] = error_rate
    if fault == "slow":
        params["delay_ms"] = delay_ms
    return course_model.register(est, X, name=name, alias=alias, params=params)


def ensure_champion(name: str = "rollout-demo", profile: str | None = None) -> str:
    """Register a healthy champion of ``name`` if it has none; returns its version."""
    from .. import tracking

    current = tracking.resolve(name, tracking.CHAMPION)
    if current is not None:
        return current
    return make_challenger("none", name=name, seed=0, profile=profile, alias=tracking.CHAMPION)
