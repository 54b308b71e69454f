"""The model server: FastAPI app with /predict, /health, /ready, /version and /metrics.

Configured by environment variables (gunicorn workers read them); see :class:`Settings`.
Run it with :func:`course_helpers.serving.serve` or ``mlops-course serve``.
"""


import dataclasses
import os
import time
import uuid
import warnings
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from . import metrics
from .cache import cache_key, make_cache
from .guard import Guard, error, install_error_handlers
from .loading import AliasFollower, LoadedModel, ServerStartError, load_model, parse_alias
from .store import DatabaseUnavailable, Prediction, PredictionLog, check_database

__all__ = ["LoadedModel", "ServerStartError", "Settings", "create_app", "load_model"]


@dataclasses.dataclass
class Settings:
    """Server settings; ``from_env`` reads ``MLOPS_*`` variables."""

    model_uri: str
    cache: str = "lru"  # none | lru | redis
    cache_size: int = 10_000
    cache_ttl_s: float = 300.0
    redis_url: str | None = None
    db: str | None = None  # SQLite path or sqlite:/// URL, postgresql:// URL, or None
    max_batch: int = 256
    max_body_bytes: int = 1_000_000
    variant: str = "default"
    # Close a keep-alive connection after this many requests (0: never). With several
    # workers, a burst of new connections all lands on one worker and keep-alive pins them
    # there; reconnecting now and then lets the idle workers pick connections up.
    max_requests_per_connection: int = 0
    # Poll the registry this often (seconds) and swap in the version models:/NAME@ALIAS
    # points at; 0: resolve the alias once at start.
    follow_alias_s: float = 0.0
    # Teaching switch (lesson 01): run /predict on the event loop, as a naive `async def`
    # would, to measure what that does to /health. Never in production.
    predict_on_loop: bool = False
    # Predictions running at once per worker (threads); see create_app.
    predict_threads: int = 2

    @classmethod
    def from_env(cls) -> "Settings":
        """The server's fields of :func:`course_helpers.config.settings` (where each
        ``MLOPS_*`` variable is documented once)."""
        from ..config import settings

        env = settings()
        if not env.model_uri:
            raise RuntimeError("MLOPS_MODEL_URI is not set: which model should I serve?")
        return cls(**{f.name: getattr(env, f.name) for f in dataclasses.fields(cls)
                      if f.name != "db"}, db=None if env.db in (None, "none") else env.db)

    def to_env(self) -> dict[str, str]:
        """Every field as its ``MLOPS_*`` variable, defaults included, so a stray variable in
        the parent's environment cannot change the server it starts (empty means unset)."""
        return {"MLOPS_MODEL_URI": self.model_uri, "MLOPS_CACHE": self.cache,
                "MLOPS_CACHE_SIZE": str(self.cache_size), "MLOPS_CACHE_TTL_S": str(self.cache_ttl_s),
                "MLOPS_REDIS_URL": self.redis_url or "", "MLOPS_DB": self.db or "none",
                "MLOPS_MAX_BATCH": str(self.max_batch),
                "MLOPS_MAX_BODY_BYTES": str(self.max_body_bytes), "MLOPS_VARIANT": self.variant,
                "MLOPS_MAX_REQUESTS_PER_CONNECTION": str(self.max_requests_per_connection),
                "MLOPS_FOLLOW_ALIAS_S": str(self.follow_alias_s),
                "MLOPS_PREDICT_ON_LOOP": "true" if self.predict_on_loop else "false",
                "MLOPS_PREDICT_THREADS": str(self.predict_threads)}


def _row_model(model: LoadedModel) -> type[BaseModel]:
    fields = {}
    for name in model.features:
        typ = model.types[name]
        if typ is float:
            fields[name] = (Annotated[float, Field(strict=True, allow_inf_nan=False)], ...)
        else:
            fields[name] = (Annotated[typ, Field(strict=True)], ...)
    return create_model("Row", __config__=ConfigDict(extra="forbid"), **fields)


class _OneOf(BaseModel):
    """Send one row as ``row`` or a batch as ``rows`` (not both)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def one_of(self):
        if (self.row is None) == (self.rows is None):
            raise ValueError("send exactly one of 'row' (one input) or 'rows' (a batch)")
        return self


def _request_model(row: type[BaseModel], max_batch: int) -> type[BaseModel]:
    batch = Annotated[list[row], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]
    return create_model("PredictRequest", __base__=_OneOf,
                        row=(row | None, None), rows=(batch | None, None))


class PredictResponse(BaseModel):
    predictions: list[int]
    probabilities: list[list[float]] | None
    model_name: str
    model_version: str
    variant: str
    request_id: str
    cache_hits: int


class ServingState:
    """What the endpoints share: ``model`` is swapped whole when an alias moves."""

    def __init__(self, settings: Settings, model: LoadedModel, cache) -> None:
        self.settings, self.model, self.cache = settings, model, cache
        self.log: PredictionLog | None = None
        self.follower: AliasFollower | None = None
        self.limiter = None  # anyio.CapacityLimiter, made on the event loop at first use
        from .faults import FaultSwitch

        self.faults = FaultSwitch()  # lesson 08's fault switch (POST /admin/fault)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: loads the model (its signature shapes the request schema) and checks
    that Redis and the prediction log's database answer; raises :class:`ServerStartError`
    (one sentence) otherwise."""
    import sklearn

    settings = settings or Settings.from_env()
    sklearn.set_config(assume_finite=True)  # the request schema already refuses NaN and inf
    # We pass arrays in the fitted column order on purpose (see LoadedModel.predict).
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    try:
        cache = make_cache(settings.cache, maxsize=settings.cache_size,
                           ttl_s=settings.cache_ttl_s, redis_url=settings.redis_url,
                           on_error=lambda: metrics.CACHE_ERRORS.inc())
        if settings.db:
            check_database(settings.db)
    except (RuntimeError, ValueError) as err:
        raise ServerStartError(str(err)) from None
    model = load_model(settings.model_uri)
    if settings.follow_alias_s and parse_alias(model.uri) is None:
        raise ServerStartError("--follow-alias needs a models:/NAME@ALIAS model URI")
    Row = _row_model(model)
    PredictRequest = _request_model(Row, settings.max_batch)
    state = ServingState(settings, model, cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.log = PredictionLog(settings.db) if settings.db else None
        if settings.follow_alias_s:
            state.follower = AliasFollower(state, settings.follow_alias_s).start()
        try:
            yield
        finally:
            if state.follower is not None:
                state.follower.stop()
            if state.log is not None:
                state.log.close()

    app = FastAPI(title="MLOps with Cloud model server", version="1.0", lifespan=lifespan,
                  description=f"Serves {model.name} ({model.uri}).",
                  docs_url=None, redoc_url=None)
    app.state.serving = state
    install_error_handlers(app)
    from .docs import install_docs

    install_docs(app)

    def predict(req, request: Request):
        t0 = time.perf_counter()
        delay = state.faults.delay()  # lesson 08's fault switch: 0 unless switched on
        if delay:
            time.sleep(delay)
        model = state.model  # read once: one version answers the whole request
        rows = [r.model_dump() for r in (req.rows or [req.row])]
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        results: list[dict | None] = [None] * len(rows)
        keys = []
        if state.cache is not None:
            for i, row in enumerate(rows):
                key = cache_key(row, model.uuid)
                keys.append(key)
                results[i] = state.cache.get(key)
        misses = [i for i, r in enumerate(results) if r is None]
        hits = len(rows) - len(misses)
        if misses:
            preds, probas, bad = model.predict([rows[i] for i in misses])
            if bad:
                where = ", ".join(str(misses[j]) for j in bad[:5])
                return error(422, f"the model's output for row(s) {where} is not a finite number "
                                  f"(NaN or infinity): the inputs are probably far outside the "
                                  f"training range; check them")
            for j, i in enumerate(misses):
                results[i] = {"p": preds[j], "q": probas[j] if probas else None}
                if state.cache is not None:
                    state.cache.set(keys[i], results[i])
        metrics.ROWS.labels(model.version).inc(len(rows))
        if state.cache is not None:
            metrics.CACHE_HITS.labels(model.version).inc(hits)
            metrics.CACHE_MISSES.labels(model.version).inc(len(misses))
        latency_ms = (time.perf_counter() - t0) * 1000
        if state.log is not None:
            now, missed = time.time(), set(misses)
            state.log.log([Prediction(rid, i, now, model.name, model.version, settings.variant,
                                      rows[i], r["p"], r["q"][-1] if r["q"] else None,
                                      latency_ms, i not in missed)
                           for i, r in enumerate(results)])
        return PredictResponse(
            predictions=[r["p"] for r in results],
            probabilities=[r["q"] for r in results] if model.has_proba else None,
            model_name=model.name, model_version=model.version, variant=settings.variant,
            request_id=rid, cache_hits=hits)

    # The model, Redis and the log run in worker threads, never on the event loop, so /health
    # answers while /predict is saturated. At most `predict_threads` (default 2) at a time:
    # the model holds the GIL for most of its work, so threads beyond what the CPUs can run
    # add no throughput, but every busy thread is one more the event loop queues behind for
    # the GIL on each step of a probe (accept, read, write). On the 200-tree forest at 10
    # users, 1 worker, 20 s runs alternating twice at load 7-9 on 2 cores: 2 threads /health
    # p50 4.0-4.3 ms, p99 29-39 ms at 56-71 req/s; 40 threads (FastAPI's pool) p50 11-14 ms,
    # p99 81-94 ms at 73-75 req/s. benchmarks/serving.py prints health_p99_ms_under_load.
    async def threaded(req: PredictRequest, request: Request):  # type: ignore[valid-type]
        import anyio

        if state.limiter is None:
            state.limiter = anyio.CapacityLimiter(settings.predict_threads)
        return await anyio.to_thread.run_sync(predict, req, request, limiter=state.limiter)

    async def on_loop(req: PredictRequest, request: Request):  # type: ignore[valid-type]
        return predict(req, request)  # blocks the event loop: the teaching switch only

    app.post("/predict", response_model=PredictResponse,
             responses={400: {"description": "invalid JSON"},
                        413: {"description": "body over the size limit"},
                        415: {"description": "not JSON"},
                        422: {"description": "input does not match the model's signature, "
                                             "or the model's output is not finite"}},
             name="predict")(on_loop if settings.predict_on_loop else threaded)

    @app.get("/health")
    async def health():
        """Liveness: the process and its event loop answer. Nothing else is checked."""
        return {"status": "alive"}

    @app.get("/ready", responses={503: {"description": "the prediction database is down"}})
    def ready():
        """Readiness: 503 while the prediction log's database does not answer; 200 with
        ``"cache": "degraded"`` when only Redis is down. Before the model is loaded nothing
        listens (gunicorn --preload loads it before opening the socket): connection refused,
        which probes count as not ready too."""
        model = state.model
        if model is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        if settings.db:
            try:
                check_database(settings.db, starting_s=0)  # starting up: not ready yet
            except DatabaseUnavailable as err:
                return JSONResponse({"status": "unavailable", "reason": str(err)},
                                    status_code=503)
        cache = settings.cache if state.cache is not None else "none"
        if hasattr(state.cache, "check") and not state.cache.check():
            cache = "degraded"
        return {"status": "ready", "model_version": model.version, "pid": os.getpid(),
                "cache": cache}

    @app.get("/version")
    async def version():
        model = state.model
        return {"model_name": model.name, "model_version": model.version, "model_uri": model.uri,
                "variant": settings.variant, "features": model.features,
                "cache": settings.cache, "database": "postgresql" if (settings.db or "").startswith(
                    "postgres") else ("sqlite" if settings.db else "none"),
                "follow_alias_s": settings.follow_alias_s}

    @app.get("/metrics")
    async def prometheus():
        body, ctype = metrics.exposition()
        return Response(body, media_type=ctype)

    @app.get("/admin/fault", include_in_schema=False)
    async def get_fault():
        return dataclasses.asdict(state.faults.current())

    @app.post("/admin/fault", include_in_schema=False)
    async def set_fault(request: Request):
        """Lesson 08's teaching switch: {"error_rate": 0.3} or {"latency_s": 0.5,
        "latency_share": 0.2}; {} clears it (see serving/faults.py)."""
        from .faults import Fault

        try:
            fault = Fault.parse(await request.json())
        except ValueError as err:
            return error(422, str(err))
        return dataclasses.asdict(state.faults.set(fault))

    app.add_middleware(Guard, state=state)
    return app


def create_app_from_env() -> FastAPI:
    """gunicorn's entry point: ``course_helpers.serving.app:create_app_from_env()``.

    A :class:`ServerStartError` is a RuntimeError: gunicorn prints its one sentence
    (``Error: ...``) and exits before any worker starts (the app is preloaded).
    """
    return create_app(Settings.from_env())
