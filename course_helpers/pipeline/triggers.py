"""Event triggers: run the pipeline when a new batch file lands in an inbox directory.

A scheduler says *when* (every night); a trigger says *on what* (new data, a drift alarm).
Here the event is a file arriving: ``watch`` polls the inbox, runs the pipeline once per new
batch, and moves each file to ``processed/`` or ``rejected/``. A ledger (``ledger.json``)
keyed by the file's content hash makes it idempotent: a batch delivered twice is trained on
once. Writers must drop files atomically (write a hidden temporary name, then rename), as
:func:`drop_batch` does, or the watcher could read half a file.

Only a finished batch is marked done. A run that failed for a transient reason (the source
or the tracking server did not answer, :attr:`PipelineResult.transient`) leaves the file in
the inbox, its ledger entry says ``retry`` with the number of attempts, and the next trigger
runs it again; after :data:`MAX_ATTEMPTS` it is filed under ``rejected/``. A batch the data
checks reject is rejected at once: bad data stays bad.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .steps import file_digest

SUFFIXES = (".parquet", ".csv")
#: a batch failing transiently this many times in a row is rejected (the ledger keeps why)
MAX_ATTEMPTS = 3
#: ledger statuses that mean "this content was handled: skip a copy of it"
FINAL_STATUSES = ("processed", "rejected")


def drop_batch(inbox: str | Path, n_rows: int = 2_000, seed: int = 2,
               corrupt: str | None = None) -> Path:
    """Write a seeded batch into ``inbox`` atomically; returns the file's path."""
    from .steps import ingest

    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    df = ingest(n_rows=n_rows, seed=seed, corrupt=corrupt)
    name = f"batch-s{seed}-{n_rows}{'-' + corrupt if corrupt else ''}.parquet"
    tmp = inbox / f".{name}.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, inbox / name)
    return inbox / name


def digest(path: Path) -> str:
    """The content hash the ledger is keyed by (:func:`.steps.file_digest`)."""
    return file_digest(path)


def _ledger_path(inbox: Path) -> Path:
    return inbox / "ledger.json"


def ledger(inbox: str | Path) -> dict[str, dict]:
    """content hash -> what happened to that batch."""
    path = _ledger_path(Path(inbox))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _save_ledger(inbox: Path, data: dict) -> None:
    tmp = inbox / ".ledger.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, _ledger_path(inbox))


def pending(inbox: str | Path) -> list[Path]:
    """Batch files waiting in the inbox, oldest first (hidden temporary files are ignored)."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return []
    files = [p for p in inbox.iterdir()
             if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def _status(entry: dict) -> str:
    """An entry's status (ledgers written before statuses existed: by ``ok``)."""
    return entry.get("status") or ("processed" if entry.get("ok") else "rejected")


def _file(inbox: Path, path: Path, folder: str) -> None:
    dest = inbox / folder / path.name
    dest.parent.mkdir(exist_ok=True)
    shutil.move(path, dest)


def process_pending(inbox: str | Path, echo: Callable[[str], Any] | None = None,
                    runner: Callable[..., Any] | None = None, **run_kwargs: Any) -> list:
    """Run the pipeline once for every pending batch; returns the PipelineResults.

    ``runner`` runs one batch (``runner(path=..., **run_kwargs)``, default
    :func:`course_helpers.pipeline.run`) and returns an object with ``ok``, ``transient``,
    ``state``, ``version``, ``alias``, ``promote``, ``error`` and ``summary()``.
    """
    if runner is None:
        from . import run as runner
    inbox = Path(inbox)
    book = ledger(inbox)
    results = []
    for path in pending(inbox):
        key = digest(path)
        entry = book.get(key)
        if entry is not None and _status(entry) in FINAL_STATUSES:
            _file(inbox, path, _status(entry))
            if echo:
                echo(f"{path.name}: already handled as {entry['file']} (skipped)")
            continue
        attempts = (entry or {}).get("attempts", 0) + 1
        res = runner(path=path, **run_kwargs)
        results.append(res)
        if res.ok:
            status = "processed"
        elif getattr(res, "transient", False) and attempts < MAX_ATTEMPTS:
            status = "retry"  # stays in the inbox: the next trigger tries again
        else:
            status = "rejected"
        if status != "retry":
            _file(inbox, path, status)
        book[key] = {"file": path.name, "status": status, "attempts": attempts, "ok": res.ok,
                     "state": res.state, "version": res.version, "alias": res.alias,
                     "promoted": res.promote, "error": res.error,
                     "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _save_ledger(inbox, book)
        if echo:
            suffix = (f" (transient: left in the inbox, attempt {attempts} of {MAX_ATTEMPTS})"
                      if status == "retry" else "")
            echo(f"{path.name}: {res.summary()}{suffix}")
    return results


def watch(inbox: str | Path, poll_s: float = 1.0, timeout_s: float = 60.0,
          max_batches: int | None = None, echo: Callable[[str], Any] | None = None,
          **run_kwargs: Any) -> list:
    """Poll ``inbox`` until ``timeout_s`` passes or ``max_batches`` pipeline runs happened
    (a transient failure retried at a later poll counts as another run)."""
    Path(inbox).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    results: list = []
    while time.monotonic() < deadline:
        results += process_pending(inbox, echo=echo, **run_kwargs)
        if max_batches is not None and len(results) >= max_batches:
            break
        time.sleep(poll_s)
    return results
