"""Cache keys for the pipeline's tasks: the content of their inputs and the pipeline's code.

Imports Prefect (its cache policy classes); :mod:`.flow` uses :data:`CACHED` on the data and
training tasks.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy

from . import steps


@functools.cache
def code_version() -> str:
    """A hash of the steps' source: part of every cache key and of a model's identity."""
    return hashlib.sha256(Path(steps.__file__).read_bytes()).hexdigest()[:12]


def content_key(value: Any) -> str:
    """A stable hash of a task input: DataFrames and arrays by their content.

    Prefect's ``INPUTS`` policy hashes a pickle of each input. Two equal DataFrames do not
    always pickle to equal bytes (a frame fresh from ``train_test_split`` and the same frame
    read back from the cache differ in internal layout), so the first rerun would miss the
    cache. Hashing the values themselves does not have that problem.
    """
    import numpy as np
    import pandas as pd

    h = hashlib.sha256()
    if isinstance(value, (pd.DataFrame, pd.Series)):
        names = list(value.columns) if isinstance(value, pd.DataFrame) else [value.name]
        dtypes = list(value.dtypes) if isinstance(value, pd.DataFrame) else [value.dtype]
        h.update(repr((type(value).__name__, names, [str(t) for t in dtypes])).encode())
        h.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
    elif isinstance(value, np.ndarray):
        h.update(repr((value.dtype.str, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            h.update(f"{k}=".encode() + content_key(value[k]).encode())
    elif isinstance(value, (list, tuple)):
        for item in value:
            h.update(content_key(item).encode())
    else:
        h.update(repr(value).encode())
    return h.hexdigest()


def _inputs_key(ctx, parameters: dict[str, Any]) -> str:
    return content_key({"task": ctx.task.name,
                        **{k: v for k, v in parameters.items() if k != "flaky"}})


@functools.cache
def pipeline_source() -> str:
    """A hash of the flow's, this module's and the steps' source (part of every cache key)."""
    h = hashlib.sha256()
    here = Path(__file__)
    for path in (here.with_name("flow.py"), here, Path(steps.__file__)):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


#: the cache key: the task and its inputs' content, and the pipeline's source. Not Prefect's
#: ``TASK_SOURCE``: it hashes the task's source differently in a served run (a pickled copy)
#: and in a direct call, so a scheduled run would miss what a manual run cached.
CONTENT = CacheKeyFnPolicy(cache_key_fn=_inputs_key)
CODE = CacheKeyFnPolicy(cache_key_fn=lambda ctx, params: pipeline_source())
CACHED = CONTENT + CODE
