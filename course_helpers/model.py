"""The course's model: trained on the seeded dataset, saved in MLflow's format, loaded by URI.

It builds on :mod:`.tracking` (how models are saved and registered); tracking never imports
this module.
"""

from __future__ import annotations

from pathlib import Path

from . import config
from .tracking.runs import pip_requirements  # noqa: F401 - part of this module's interface

MODEL_NAME = "simple-system"
KINDS = ("logreg", "forest")


def train(kind: str = "logreg", n_rows: int | None = None, n_estimators: int | None = None,
          seed: int = 0, profile: str | None = None):
    """Fit a classifier on the seeded dataset; returns ``(model, X, y)``.

    ``logreg`` is cheap (~0.1 ms a row); ``forest`` costs ~``n_estimators`` tree walks a
    row, which makes a server CPU-bound. Sizes default to the profile's.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .data import make_dataset

    prof = config.get_profile(profile)
    X, y = make_dataset(n_rows or prof.n_rows, seed=seed)
    if kind == "logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    elif kind == "forest":
        model = RandomForestClassifier(n_estimators=n_estimators or prof.n_estimators,
                                       max_depth=12, random_state=seed, n_jobs=1)
    else:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {', '.join(KINDS)}")
    model.fit(X, y)
    return model, X, y


def save(model, path: str | Path, X_example) -> Path:
    """Save in MLflow's sklearn format with signature and input example; returns the path."""
    from .tracking import quiet, trusted_types

    quiet()
    import mlflow.sklearn
    from mlflow.models import infer_signature

    path = Path(path)
    if path.exists():
        import shutil

        shutil.rmtree(path)
    example = X_example.head(2)
    signature = infer_signature(example, model.predict_proba(example))
    mlflow.sklearn.save_model(model, str(path), signature=signature, input_example=example,
                              pip_requirements=pip_requirements(),
                              skops_trusted_types=trusted_types(model))
    return path


def register(model, X_example, name: str = MODEL_NAME, alias: str | None = "champion",
             params: dict | None = None, metrics: dict | None = None) -> str:
    """Log the model to the current MLflow store (:func:`tracking.current_uri`), register a new
    version of ``name``, set ``alias``. Returns the version number as a string."""
    from . import tracking

    uri = tracking.current_uri()
    logged = tracking.log_run(name, params=params, metrics=metrics, model=model,
                              X_example=X_example, register_as=name, uri=uri)
    if alias:
        tracking.client(uri).set_registered_model_alias(name, alias, logged.version)
    return logged.version


def prepare(kind: str = "logreg", profile: str | None = None, seed: int = 0,
            n_estimators: int | None = None) -> str:
    """Train and save a model under ``<workspace>/models/<kind>``; returns its path (a URI).

    Training is seeded, so a model already saved for the same kind, profile and seed is reused
    instead of trained again."""
    prof = config.get_profile(profile)
    trees = n_estimators or prof.n_estimators
    sub = kind if kind == "logreg" else f"{kind}-{trees}"
    path = config.workspace_dir("models") / f"{sub}-{prof.n_rows}-s{seed}"
    if not (path / "MLmodel").exists():
        model, X, _ = train(kind, profile=profile, seed=seed, n_estimators=n_estimators)
        save(model, path, X)
    return str(path)
