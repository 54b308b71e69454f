"""File-based service discovery: what Prometheus scrapes, one JSON file per job.

Prometheus watches ``<workspace>/monitoring/targets/*.json`` (``file_sd_configs``) and picks
up a rewritten file within a second, without a restart or reload. A deployment that scales
rewrites its file; a server that stops removes its address. Each file holds one target group::

    [{"targets": ["127.0.0.1:41234", "127.0.0.1:41235"],
      "labels": {"job": "canary", "track": "canary"}}]

The ``job`` label comes from the file, so one scrape job covers every model server and
queries separate them with ``job="..."`` or any label passed here (``track="canary"``).

Standard library only: the deploy backends call this on every ``up``/``scale``/``down``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .. import config

#: Labels a caller may not set: Prometheus reserves names starting with ``__``.
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def targets_dir() -> Path:
    """``<workspace>/monitoring/targets``: the folder Prometheus's file_sd watches."""
    return config.workspace_dir("monitoring", "targets")


def _file(job: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job)
    return targets_dir() / f"{safe}.json"


def _check(job: str, targets: list[str], labels: dict[str, str]) -> None:
    if not job or not isinstance(job, str):
        raise ValueError("job must be a non-empty string, e.g. 'model-server'")
    for t in targets:
        if not isinstance(t, str) or "/" in t or ":" not in t:
            raise ValueError(f"target {t!r} must be host:port (e.g. 127.0.0.1:8000), "
                             f"without http:// or a path")
    for k, v in labels.items():
        if not _LABEL_RE.match(k) or k.startswith("__"):
            raise ValueError(f"label name {k!r} is not a valid Prometheus label name: use "
                             f"letters, digits and _, not starting with __")
        if not isinstance(v, str):
            raise ValueError(f"label {k!r} must be a string, got {type(v).__name__}")


def read_targets(job: str) -> dict | None:
    """The target group written for ``job`` (``{"targets": [...], "labels": {...}}``) or None."""
    try:
        groups = json.loads(_file(job).read_text())
        return groups[0] if groups else {"targets": [], "labels": {"job": job}}
    except (OSError, ValueError, IndexError):
        return None


def set_targets(job: str, targets: list[str], labels: dict[str, str] | None = None) -> Path:
    """(Re)write the file_sd file of ``job``: Prometheus scrapes ``targets`` (``host:port``,
    ``/metrics``) with ``labels`` plus ``job=<job>``; returns the file's path.

    ``labels=None`` keeps the labels the file already has (a scaling deployment keeps the
    ``track`` label a rollout gave it); a dict replaces them. Written atomically (a temporary
    file, then a rename), so Prometheus never reads half a file. An empty ``targets`` list
    keeps the job known but scrapes nothing.
    """
    targets = [t.removeprefix("http://").rstrip("/") for t in targets]
    if labels is None:
        old = read_targets(job)
        labels = dict((old or {}).get("labels") or {})
    labels = {k: v for k, v in dict(labels).items() if k != "job"}
    _check(job, targets, labels)
    body = [{"targets": sorted(set(targets)), "labels": {**labels, "job": job}}]
    path = _file(job)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)
    return path


def remove_targets(job: str) -> bool:
    """Forget ``job``: Prometheus stops scraping it. True if it was known."""
    path = _file(job)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def jobs() -> dict[str, dict]:
    """Every job with a file_sd file: ``{job: {"targets": [...], "labels": {...}}}``."""
    out = {}
    for path in sorted(targets_dir().glob("*.json")):
        try:
            group = json.loads(path.read_text())[0]
        except (OSError, ValueError, IndexError, KeyError):
            continue
        out[group.get("labels", {}).get("job", path.stem)] = group
    return out


# -- the deploy backends and the lesson-01 server register themselves here ----------------
def register_deployment(dep, labels: dict[str, str] | None = None) -> Path | None:
    """Scrape every replica of a lesson-02 deployment, as job ``<spec.name>``, with labels
    ``deployment`` and ``backend`` (kept: any label a rollout added). Never raises: a
    deployment must not fail because monitoring could not write its file."""
    try:
        old = (read_targets(dep.spec.name) or {}).get("labels") or {}
        merged = {**old, "deployment": dep.spec.name, "backend": dep.backend, **(labels or {})}
        addrs = [r.url for r in dep.replicas if r.url]
        return set_targets(dep.spec.name, addrs, merged)
    except Exception:  # noqa: BLE001 - monitoring is a side effect here
        return None


def unregister_deployment(dep) -> None:
    """Stop scraping a deployment that was taken down (never raises)."""
    try:
        remove_targets(dep.spec.name)
    except Exception:  # noqa: BLE001
        pass


def register_supervised_servers() -> list[str]:
    """Register every running model server the supervisor knows (lesson 01's ``serve`` and
    replicas: records whose readiness URL ends in ``/ready``) that no job covers yet.

    A server ``NAME`` becomes job ``NAME`` (replicas ``DEP-rN`` are left to their deployment's
    job when that exists). Returns the jobs written.
    """
    from ..supervisor import Supervisor

    covered = {t for g in jobs().values() for t in g.get("targets", [])}
    written = []
    for rec in Supervisor().records():
        if not rec.url or not rec.url.endswith("/ready") or rec.url.endswith("/-/ready") \
                or not rec.port:
            continue
        addr = f"127.0.0.1:{rec.port}"
        if addr in covered or not rec.is_alive():
            continue
        set_targets(rec.name, [addr], {"server": rec.name})
        written.append(rec.name)
    return written


def prune_dead() -> list[str]:
    """Remove jobs whose every target is a supervised process that is gone (a server stopped
    with ``handle.stop()`` leaves its file behind). Returns the jobs removed."""
    from ..supervisor import Supervisor

    live = {f"127.0.0.1:{r.port}" for r in Supervisor().records() if r.port and r.is_alive()}
    removed = []
    for job, group in jobs().items():
        labels = group.get("labels", {})
        if labels.get("server") and group.get("targets") and not set(group["targets"]) & live:
            remove_targets(job)
            removed.append(job)
    return removed
