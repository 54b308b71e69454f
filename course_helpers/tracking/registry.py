"""The model registry: versions, aliases and the course's one rollback convention, lineage.

Promoting moves ``@champion`` to a version and gives the version it replaced ``@previous``;
:func:`rollback` swaps the two. Servers load ``models:/NAME@champion`` (with
``--follow-alias SECONDS`` they follow it while running).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from ..errors import CourseError
from .store import client, current_uri, quiet, using

CHAMPION = "champion"
CHALLENGER = "challenger"
#: the version ``@champion`` pointed to before its last move: what :func:`rollback` restores
PREVIOUS = "previous"


def resolve(name: str, alias: str = CHAMPION, uri: str | None = None) -> str | None:
    """The version ``name@alias`` points to, or None if the alias (or the model) does not exist."""
    c = client(uri)
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except Exception as err:  # RESOURCE_DOES_NOT_EXIST / INVALID_PARAMETER_VALUE
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower() or \
                "INVALID_PARAMETER_VALUE" in str(err):
            return None
        raise


def versions_table(name: str, uri: str | None = None, metrics: tuple[str, ...] = ()):
    """Every version of ``name``: aliases, run, creation time, tags and the run's ``metrics``."""
    import pandas as pd

    c = client(uri)
    try:
        aliases = c.get_registered_model(name).aliases or {}
    except Exception:
        return pd.DataFrame(columns=["version", "aliases", "run_id", "created"])
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in c.search_model_versions(f"name='{name}'"):
        row: dict[str, Any] = {
            "version": int(mv.version),
            "aliases": ",".join(sorted(by_version.get(str(mv.version), []))),
            "run_id": mv.run_id, "created": pd.to_datetime(mv.creation_timestamp, unit="ms")}
        if metrics and mv.run_id:
            data = c.get_run(mv.run_id).data.metrics
            row.update({m: data.get(m) for m in metrics})
        row.update({f"tags.{k}": v for k, v in sorted((mv.tags or {}).items())})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("version").reset_index(drop=True) if rows else \
        pd.DataFrame(columns=["version", "aliases", "run_id", "created"])


@dataclasses.dataclass
class Promotion:
    """An alias move: ``name@alias`` went from ``previous`` (None: it did not exist) to ``version``."""

    name: str
    alias: str
    previous: str | None
    version: str


def promote(name: str, version: str | int, alias: str = CHAMPION, reason: str = "",
            uri: str | None = None) -> Promotion:
    """Point ``name@alias`` at ``version``.

    The rollback convention, for ``@champion``: the version it leaves gets ``@previous``, so
    :func:`rollback` (or anyone with registry access) can swap them back. MLflow moves one
    alias per request and has no transaction over two, so the order is chosen for the
    servers, which read only ``@champion``: ``@previous`` moves first (for a moment both name
    the old version, which is harmless), then ``@champion`` moves in one request, so a server
    sees the old version or the new one, never a mix. If another promotion moved
    ``@champion`` meanwhile, this raises instead of reporting a move that did not stick.
    """
    c = client(uri)
    version = str(version)
    c.get_model_version(name, version)  # raises if it does not exist
    current = resolve(name, alias, uri)
    if current == version:
        return Promotion(name, alias, current, version)
    if alias == CHAMPION and current is not None:
        c.set_registered_model_alias(name, PREVIOUS, current)
    c.set_registered_model_alias(name, alias, version)
    _confirm(name, alias, version, uri)
    c.set_model_version_tag(name, version, f"promoted_to_{alias}",
                            time.strftime("%Y-%m-%dT%H:%M:%S") + (f" {reason}" if reason else ""))
    return Promotion(name, alias, current, version)


def rollback(name: str, reason: str = "", uri: str | None = None) -> Promotion:
    """Swap ``@champion`` and ``@previous``: the champion goes back to the version it replaced,
    and the version rolled back from keeps ``@previous`` (a second call rolls forward again).

    ``@champion`` moves first (that is what the servers read), then ``@previous``.
    """
    c = client(uri)
    current = resolve(name, CHAMPION, uri)
    target = resolve(name, PREVIOUS, uri)
    if target is None or target == current:
        raise CourseError(f"{name}@{CHAMPION} has no earlier version to roll back to "
                          f"(it points to {current or 'nothing'} and there is no "
                          f"@{PREVIOUS}): promote a version with tracking.promote instead.")
    c.set_registered_model_alias(name, CHAMPION, target)
    _confirm(name, CHAMPION, target, uri)
    if current is not None:
        c.set_registered_model_alias(name, PREVIOUS, current)
    c.set_model_version_tag(name, target, "rolled_back_to",
                            time.strftime("%Y-%m-%dT%H:%M:%S") + (f" {reason}" if reason else ""))
    return Promotion(name, CHAMPION, current, target)


def _confirm(name: str, alias: str, version: str, uri: str | None) -> None:
    now = resolve(name, alias, uri)
    if now != version:
        raise CourseError(f"{name}@{alias} points to {now}, not {version}: another promotion "
                          f"moved it at the same time; look at tracking.versions_table("
                          f"{name!r}) and promote again if needed.")


def copy_model(model_uri: str, dest: str | Path, uri: str | None = None) -> Path:
    """Download ``models:/...`` or ``runs:/...`` into ``dest`` as a self-contained model
    directory, loadable with no tracking store (e.g. inside a container); returns its path.

    MLflow 3 records the logged model's id in ``MLmodel`` and looks it up in a tracking store
    when loading; the copy's ``MLmodel`` is rewritten without it through ``mlflow.models.Model``.
    """
    quiet()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.models import Model

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with using(uri or current_uri()):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri,
                                                         dst_path=str(dest)))
    meta = local / "MLmodel"
    if meta.exists():
        model = Model.load(str(meta))
        model.model_id = None
        model.save(str(meta))
    return local.resolve()


def delete_model(name: str, uri: str | None = None) -> bool:
    """Delete a registered model with all its versions and aliases (runs stay). True if it existed."""
    c = client(uri)
    try:
        c.delete_registered_model(name)
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower():
            return False
        raise
    return True


def lineage(name: str, ref: str | int = CHAMPION, uri: str | None = None) -> dict[str, Any]:
    """Where a model version came from: its run, params, metrics, dataset digests and tags.

    ``ref`` is an alias (``champion``) or a version number.
    """
    c = client(uri)
    ref = str(ref)
    mv = c.get_model_version(name, ref) if ref.isdigit() else c.get_model_version_by_alias(name, ref)
    out: dict[str, Any] = {"model": name, "version": str(mv.version),
                           "aliases": list(mv.aliases or []), "source": mv.source,
                           "run_id": mv.run_id, "version_tags": dict(mv.tags or {})}
    if mv.run_id:
        run = c.get_run(mv.run_id)
        out.update(experiment_id=run.info.experiment_id, run_name=run.info.run_name,
                   params=dict(run.data.params), metrics=dict(run.data.metrics),
                   run_tags={k: v for k, v in run.data.tags.items()
                             if not k.startswith("mlflow.") or k == "mlflow.source.git.commit"},
                   datasets=[{"name": d.dataset.name, "digest": d.dataset.digest,
                              "context": next((t.value for t in d.tags
                                               if t.key == "mlflow.data.context"), None)}
                             for d in (run.inputs.dataset_inputs if run.inputs else [])])
    return out
