"""Seeded, offline datasets. Nothing is downloaded: every table is generated from a seed."""

from __future__ import annotations

import numpy as np

N_FEATURES = 30


def feature_names(n_features: int = N_FEATURES) -> list[str]:
    return [f"f{i:02d}" for i in range(n_features)]


def make_dataset(n_rows: int, n_features: int = N_FEATURES, seed: int = 0):
    """A binary classification table: ``X`` (n_rows, n_features) float64 DataFrame, ``y`` 0/1 Series.

    Columns are ``f00``... Half of the features carry signal, a few interact, the rest are
    noise; about 30% of labels are positive. Same seed, same table, on every machine. The
    relationship between features and label is fixed (it does not depend on ``seed`` or
    ``n_rows``): tables with other seeds are new samples from the same world.
    """
    import pandas as pd

    if n_rows < 1:
        raise ValueError("n_rows must be at least 1")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    k = max(2, n_features // 2)
    weights = np.random.default_rng(20261126).normal(scale=1.0, size=k)
    logit = X[:, :k] @ weights / np.sqrt(k) * 2.0 + 0.8 * X[:, 0] * X[:, 1] - 1.0
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    names = feature_names(n_features)
    return pd.DataFrame(X, columns=names), pd.Series(y, name="label")


def request_rows(n: int, n_features: int = N_FEATURES, seed: int = 1) -> list[dict[str, float]]:
    """``n`` feature rows as JSON-ready dicts, drawn like the training data (for load tests)."""
    X, _ = make_dataset(n, n_features=n_features, seed=seed)
    return [{k: round(float(v), 6) for k, v in row.items()} for row in X.to_dict("records")]


def zipf_indices(n_requests: int, n_distinct: int, a: float = 1.2, seed: int = 2) -> np.ndarray:
    """Indices in ``[0, n_distinct)`` with Zipf-like popularity: a few rows are asked for often."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_distinct + 1)
    p = ranks ** -a
    return rng.choice(n_distinct, size=n_requests, p=p / p.sum())
