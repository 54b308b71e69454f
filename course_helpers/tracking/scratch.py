"""A throwaway MLflow store that is ready at once: a copy of an empty, migrated database.

MLflow creates a new SQLite store by running its ~60 alembic migrations: 1.5 s on an idle
machine, 5-6 s at a load of 8 (measured here), and that was most of a06's setup cell. The
package ships the empty database those migrations produce (``data/mlflow-empty-<version>.db.gz``,
16 KB), and :func:`scratch_store` copies it. When the installed MLflow is another version, it
falls back to letting MLflow build the store itself (slower, never wrong);
``python -m course_helpers.tracking.scratch`` rebuilds the template for the installed MLflow.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
PREFIX = "mlflow-empty-"


def _mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def template_path(mlflow_version: str | None = None) -> Path:
    """Where the empty database for this MLflow version is (or would be) kept."""
    return DATA / f"{PREFIX}{mlflow_version or _mlflow_version()}.db.gz"


def scratch_store(folder: str | Path | None = None) -> str:
    """A new, empty SQLite tracking store in ``folder`` (a new temporary folder if None);
    returns its ``sqlite:///.../mlflow.db`` URI for ``MlflowClient(tracking_uri=..., registry_uri=...)``.
    """
    where = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="mlflow-scratch-"))
    where.mkdir(parents=True, exist_ok=True)
    db = where / "mlflow.db"
    template = template_path()
    if template.is_file() and not db.exists():
        db.write_bytes(gzip.decompress(template.read_bytes()))
    return f"sqlite:///{db}"


def build_template(dest: Path | None = None) -> Path:
    """Run MLflow's migrations on an empty SQLite file and keep it, gzipped, as the template."""
    import sqlite3

    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    dest = dest or template_path()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlflow.db"
        engine = sqlalchemy.create_engine(f"sqlite:///{path}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        with sqlite3.connect(path) as con:
            con.execute("VACUUM")
        con.close()
        dest.write_bytes(gzip.compress(path.read_bytes(), 9, mtime=0))
    for old in DATA.glob(f"{PREFIX}*.db.gz"):
        if old != dest:
            old.unlink()
    return dest


if __name__ == "__main__":
    print(f"wrote {build_template()}")
