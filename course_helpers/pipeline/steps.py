"""The training pipeline's steps as plain functions: no orchestrator, no server, easy to test.

``ingest -> validate -> split -> train -> evaluate -> gate -> register`` (the last one lives in
:mod:`.flow`, because it talks to the registry). :mod:`.flow` wraps each step in a Prefect task
that adds retries, caching and a record of every run; the functions here stay importable and
testable on their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CourseError

LABEL = "label"
N_FEATURES = 30
FEATURE_RANGE = (-8.0, 8.0)  # the seeded features are standard normal: |x| > 8 is a bug
MIN_ROWS = 200
POSITIVE_RATE = (0.05, 0.95)
CORRUPTIONS = ("nulls", "out_of_range", "missing_column", "constant_label", "wrong_type")


class DataValidationError(CourseError):
    """A batch failed the data checks; the message lists what was wrong, one clause a problem."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


# -- configuration -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What to train. ``features``: how many of f00.. to use (None: all);
    ``interactions``: pairwise products of the first k features (0: none)."""

    kind: str = "logreg"
    C: float = 1.0
    features: int | None = None
    interactions: int = 0
    n_estimators: int = 50
    max_depth: int = 12
    test_size: float = 0.25
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}: use {sorted(fields)}")
        return cls(**values)

    def key(self) -> str:
        """A short, stable hash of the config (part of a trained model's identity)."""
        return _digest(json.dumps(self.to_dict(), sort_keys=True))


#: Named configurations the CLI and the lessons use.
PRESETS: dict[str, dict[str, Any]] = {
    "baseline": {"kind": "logreg"},
    "weak": {"kind": "logreg", "features": 3},  # a worse model: 3 of 30 features
    "crossed": {"kind": "logreg", "interactions": 4},  # feature engineering: f00*f01, ...
    "forest": {"kind": "forest"},
}


def config(preset: str | TrainConfig | Mapping[str, Any] = "baseline", **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a preset name, a dict or a config, with overrides."""
    if isinstance(preset, TrainConfig):
        base = preset.to_dict()
    elif isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        base = dict(PRESETS[preset])
    else:
        base = dict(preset)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(base)


def _digest(text: str | bytes, n: int = 12) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:n]


# -- ingest ------------------------------------------------------------------------------
def make_batch(n_rows: int = 2_000, seed: int = 1, n_features: int = N_FEATURES,
               concept_seed: int = 0):
    """One batch of labelled rows from a fixed relationship between features and label.

    ``seed`` picks the rows (batch 1, batch 2, ... of the same process); ``concept_seed``
    picks the relationship itself, so every batch of a pipeline comes from the same world.
    (:func:`course_helpers.data.make_dataset` draws its weights after the rows, so its
    relationship changes with both ``seed`` and ``n_rows``: fine for one table, wrong for a
    stream of batches.) Same shape as ``make_dataset``: f00.. floats and a 0/1 ``label``.
    """
    import numpy as np
    import pandas as pd

    from ..data import feature_names

    if n_rows < 1:
        raise ValueError("n_rows must be at least 1")
    k = max(2, n_features // 2)
    weights = np.random.default_rng([concept_seed, 7]).normal(size=k)
    rng = np.random.default_rng([concept_seed, seed])
    X = rng.normal(size=(n_rows, n_features))
    logit = X[:, :k] @ weights / np.sqrt(k) * 2.0 + 0.8 * X[:, 0] * X[:, 1] - 1.0
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    df = pd.DataFrame(X, columns=feature_names(n_features))
    df[LABEL] = y
    return df


def ingest(n_rows: int = 2_000, seed: int = 1, corrupt: str | None = None,
           path: str | Path | None = None):
    """One batch: read from ``path`` (CSV or Parquet) or generated (:func:`make_batch`).

    ``corrupt`` injects a realistic defect for the lessons: ``nulls`` (a broken feature job),
    ``out_of_range`` (a unit change: one column x1000), ``missing_column`` (an upstream
    schema change), ``constant_label`` (a broken join), ``wrong_type`` (numbers as strings).
    """
    import pandas as pd

    if path is not None:
        path = Path(path)
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    else:
        df = make_batch(n_rows, seed=seed)
    if corrupt:
        df = corrupt_batch(df, corrupt, seed=seed)
    return df


#: Errors worth retrying: the source may answer on the next attempt (a timeout, a dropped
#: connection, an overloaded server). Everything else (a missing file, a parse error, bad data)
#: fails the same way every time, so retrying only delays the error.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
#: HTTP statuses that mean "try again later".
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_transient(error: BaseException | None) -> bool:
    """Whether retrying the step that raised ``error`` can help (see :data:`TRANSIENT_ERRORS`)."""
    import urllib.error

    if error is None:
        return False
    if isinstance(error, urllib.error.HTTPError):
        return error.code in TRANSIENT_HTTP
    if isinstance(error, urllib.error.URLError):
        return isinstance(error.reason, (*TRANSIENT_ERRORS, OSError)) and \
            not isinstance(error.reason, FileNotFoundError)
    return isinstance(error, TRANSIENT_ERRORS)


def file_digest(path: str | Path) -> str:
    """A short content hash of a file (16 hex digits): same bytes, same digest."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def corrupt_batch(df, kind: str, seed: int = 0):
    """A copy of ``df`` with one defect (see :func:`ingest`)."""
    import numpy as np

    df = df.copy()
    rng = np.random.default_rng(seed + 99)
    if kind == "nulls":
        rows = rng.choice(len(df), size=max(1, len(df) // 20), replace=False)
        df.loc[df.index[rows], "f03"] = np.nan
    elif kind == "out_of_range":
        df["f07"] = df["f07"] * 1000.0
    elif kind == "missing_column":
        df = df.drop(columns=["f12"])
    elif kind == "constant_label":
        df[LABEL] = 0
    elif kind == "wrong_type":
        df["f05"] = df["f05"].map(lambda v: f"{v:.3f}")
    else:
        raise ValueError(f"unknown corruption {kind!r}: choose one of {', '.join(CORRUPTIONS)}")
    return df


def fingerprint(df) -> str:
    """A short content hash of a batch: same rows and columns, same fingerprint."""
    import pandas as pd

    cols = ",".join(map(str, df.columns)) + "|" + ",".join(map(str, df.dtypes))
    rows = pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()
    return _digest(cols.encode() + rows)


# -- validate ----------------------------------------------------------------------------
def schema(n_features: int = N_FEATURES, min_rows: int = MIN_ROWS):
    """The data contract of a training batch, as a pandera schema.

    Every feature ``f00..`` is a non-null float in ``FEATURE_RANGE``; ``label`` is 0 or 1; the
    batch has at least ``min_rows`` rows and a positive rate inside ``POSITIVE_RATE``.
    """
    import pandera.pandas as pa

    from ..data import feature_names

    lo, hi = FEATURE_RANGE
    columns = {name: pa.Column(float, pa.Check.in_range(lo, hi), nullable=False)
               for name in feature_names(n_features)}
    columns[LABEL] = pa.Column(int, pa.Check.isin([0, 1]), nullable=False)
    low, high = POSITIVE_RATE
    checks = [
        pa.Check(lambda df: len(df) >= min_rows, error=f"at least {min_rows} rows"),
        pa.Check(lambda df: LABEL not in df or low <= df[LABEL].mean() <= high,
                 error=f"positive rate between {low:.0%} and {high:.0%}"),
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=False, coerce=False,
                              name="training batch")


def describe_failures(failure_cases) -> list[str]:
    """pandera's failure-case table as one short clause per (column, check).

    A column of the wrong type reports only that (its range check fails too, as noise).
    """
    problems = []
    wrong_type = set()
    for (context, column, check), group in failure_cases.groupby(
            ["schema_context", "column", "check"], dropna=False, sort=False):
        check = str(check)
        examples = [v for v in group["failure_case"].tolist() if v == v][:3]  # drop NaN
        shown = ", ".join(repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float)
                          else str(v) for v in examples)
        if check == "column_in_dataframe":
            problems.append(f"missing column {shown}")
        elif context == "DataFrameSchema":  # a check on the whole batch
            problems.append(f"batch: expected {check}")
        elif check == "not_nullable":
            problems.append(f"column {column}: {len(group)} null value(s)")
        elif check.startswith("dtype("):
            wrong_type.add(column)
            problems.append(f"column {column}: wrong type ({group['failure_case'].iloc[0]}, "
                            f"expected {check[7:-2]})")
        elif column not in wrong_type:
            problems.append(f"column {column}: {len(group)} value(s) fail {check}"
                            + (f" (e.g. {shown})" if shown else ""))
    return [p for p in problems
            if not any(p.startswith(f"column {c}: ") and "wrong type" not in p for c in wrong_type)]


def validate(df, n_features: int = N_FEATURES, min_rows: int = MIN_ROWS):
    """Return ``df`` if it honours :func:`schema`; raise :class:`DataValidationError` otherwise.

    Every problem is collected (pandera's lazy mode), not just the first.
    """
    from pandera.errors import SchemaErrors

    try:
        return schema(n_features, min_rows).validate(df, lazy=True)
    except SchemaErrors as err:
        problems = describe_failures(err.failure_cases)
        raise DataValidationError(
            f"batch rejected by the data checks ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}): " + "; ".join(problems), problems) from None


# -- split, train, evaluate ---------------------------------------------------------------
def split(df, test_size: float = 0.25, seed: int = 0):
    """Stratified train/test split: ``(X_train, X_test, y_train, y_test)``."""
    from sklearn.model_selection import train_test_split

    X = df.drop(columns=[LABEL])
    y = df[LABEL]
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def build_model(cfg: TrainConfig):
    """An unfitted scikit-learn estimator for ``cfg`` (accepts all feature columns, in order)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    steps = []
    n = cfg.features or N_FEATURES
    k = min(cfg.interactions, n)
    # integer column positions: works on DataFrames (training) and arrays (the server)
    if k >= 2:
        parts = [("crossed", PolynomialFeatures(2, interaction_only=True, include_bias=False),
                  list(range(k)))]
        if n > k:
            parts.append(("rest", "passthrough", list(range(k, n))))
        steps.append(("features", ColumnTransformer(parts)))
    elif n < N_FEATURES:
        steps.append(("features", ColumnTransformer([("keep", "passthrough", list(range(n)))])))
    if cfg.kind == "logreg":
        steps += [("scale", StandardScaler()),
                  ("model", LogisticRegression(C=cfg.C, max_iter=1000))]
    elif cfg.kind == "forest":
        steps.append(("model", RandomForestClassifier(
            n_estimators=cfg.n_estimators, max_depth=cfg.max_depth, random_state=cfg.seed,
            n_jobs=1)))
    else:
        raise ValueError(f"unknown model kind {cfg.kind!r}: choose logreg or forest")
    return Pipeline(steps)


def train(X, y, cfg: TrainConfig):
    """Fit :func:`build_model` on ``X, y``."""
    return build_model(cfg).fit(X, y)


def evaluate(model, X, y) -> dict[str, float]:
    """ROC AUC, accuracy and log loss on held-out rows."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    proba = model.predict_proba(X)[:, 1]
    return {"auc": round(float(roc_auc_score(y, proba)), 5),
            "accuracy": round(float(accuracy_score(y, proba >= 0.5)), 5),
            "log_loss": round(float(log_loss(y, proba, labels=[0, 1])), 5),
            "n_test": float(len(y))}


# -- gate --------------------------------------------------------------------------------
@dataclasses.dataclass
class GateDecision:
    """Whether a candidate model may replace the champion, and why (one line per rule)."""

    promote: bool
    reasons: list[str]

    def __str__(self) -> str:
        head = "PROMOTE" if self.promote else "KEEP CHAMPION"
        return head + "\n" + "\n".join(f"  {r}" for r in self.reasons)


def gate(candidate: Mapping[str, float], champion: Mapping[str, float] | None = None,
         min_auc: float = 0.70, min_delta: float = 0.001) -> GateDecision:
    """The promotion rule: an absolute floor, then better than the champion by ``min_delta``.

    The margin stops churn: a rerun of the same model, or noise, does not replace the champion.

    Both metric sets must come from the **same** held-out rows (the flow re-scores the
    champion on the candidate's test set), or the comparison means nothing.
    """
    reasons = []
    ok = True
    auc = candidate["auc"]
    if auc >= min_auc:
        reasons.append(f"PASS auc {auc:.4f} >= floor {min_auc:.4f}")
    else:
        ok = False
        reasons.append(f"FAIL auc {auc:.4f} < floor {min_auc:.4f}")
    if champion is None:
        reasons.append("PASS no champion yet: the first model that clears the floor wins")
    elif auc >= champion["auc"] + min_delta:
        reasons.append(f"PASS auc {auc:.4f} >= champion {champion['auc']:.4f} + {min_delta:g}")
    else:
        ok = False
        reasons.append(f"FAIL auc {auc:.4f} < champion {champion['auc']:.4f} + {min_delta:g}")
    return GateDecision(ok, reasons)
