"""Prediction caches keyed by a canonical hash of the input row and the model version."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from typing import Protocol


def cache_key(row: dict[str, float], model_version: str) -> str:
    """Same features (in any order, ints or floats) and same model version -> same key.

    A new model version always gives new keys, so a stale prediction is never served.
    """
    canon = {k: float(v) for k, v in sorted(row.items())}
    for v in canon.values():
        if not math.isfinite(v):
            raise ValueError("cannot cache a row with NaN or infinity")
    payload = json.dumps([model_version, canon], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class Cache(Protocol):
    def get(self, key: str) -> dict | None: ...
    def set(self, key: str, value: dict) -> None: ...


class LRUCache:
    """In-process least-recently-used cache with a time to live (seconds); thread-safe.

    ``maxsize`` entries at most; an entry older than ``ttl_s`` is a miss.
    """

    def __init__(self, maxsize: int = 10_000, ttl_s: float = 300.0, clock=time.monotonic) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize, self.ttl_s, self._clock = maxsize, ttl_s, clock
        self._data: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> dict | None:
        with self._lock:
            item = self._data.get(key)
            if item is None or self._clock() - item[0] > self.ttl_s:
                if item is not None:
                    del self._data[key]
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[1]

    def set(self, key: str, value: dict) -> None:
        with self._lock:
            self._data[key] = (self._clock(), value)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class CacheUnavailable(RuntimeError):
    """Redis did not answer at start: the server refuses to start rather than run blind."""


class RedisCache:
    """The same interface on a Redis server (shared by every worker and replica).

    Every Redis call is bounded by ``timeout_s`` (connect and read, no retry). A failed call
    is counted in ``errors`` and answered as a miss (``get``) or skipped (``set``): the
    request is served without the cache. After a failure Redis is left alone for
    ``backoff_s`` seconds, so a paused Redis costs one timeout per ``backoff_s``, not one
    per request; then the next call tries again and caching resumes when Redis is back.
    """

    def __init__(self, url: str, ttl_s: float = 300.0, prefix: str = "pred:",
                 timeout_s: float = 0.05, backoff_s: float = 1.0, clock=time.monotonic,
                 on_error=None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.ttl_s, self.prefix, self.backoff_s = ttl_s, prefix, backoff_s
        self._clock, self._on_error = clock, on_error
        self._errors_type = (redis.RedisError, OSError)
        self._r = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                       socket_connect_timeout=timeout_s,
                                       retry=Retry(NoBackoff(), 0))
        self.errors = 0
        self._down_until = 0.0
        try:
            self._r.ping()
        except self._errors_type as err:
            raise CacheUnavailable(
                f"Redis at {_redact(url)} does not answer ({type(err).__name__}): start it, "
                f"or serve with --cache lru") from None

    @property
    def degraded(self) -> bool:
        """True while the last Redis call failed (the server answers without the cache)."""
        return self._down_until > 0.0

    def _call(self, fn, *args, **kwargs):
        now = self._clock()
        if now < self._down_until:
            return None
        try:
            out = fn(*args, **kwargs)
        except self._errors_type:
            self.errors += 1
            self._down_until = now + self.backoff_s
            if self._on_error is not None:
                self._on_error()
            return None
        self._down_until = 0.0
        return out

    def get(self, key: str) -> dict | None:
        raw = self._call(self._r.get, self.prefix + key)
        return json.loads(raw) if raw is not None else None

    def set(self, key: str, value: dict) -> None:
        self._call(self._r.set, self.prefix + key, json.dumps(value),
                   px=max(1, int(self.ttl_s * 1000)))

    def check(self) -> bool:
        """Ping Redis now (bounded by the timeout); True when it answers."""
        self._down_until = 0.0  # a readiness probe always asks Redis itself
        return self._call(self._r.ping) is not None


def _redact(url: str) -> str:
    """The URL without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def make_cache(kind: str, *, maxsize: int = 10_000, ttl_s: float = 300.0,
               redis_url: str | None = None, on_error=None) -> Cache | None:
    """``none`` -> None, ``lru`` -> LRUCache, ``redis`` -> RedisCache(redis_url)."""
    if kind in ("", "none", "off"):
        return None
    if kind == "lru":
        return LRUCache(maxsize=maxsize, ttl_s=ttl_s)
    if kind == "redis":
        if not redis_url:
            raise ValueError("cache 'redis' needs a Redis URL (MLOPS_REDIS_URL)")
        return RedisCache(redis_url, ttl_s=ttl_s, on_error=on_error)
    raise ValueError(f"unknown cache {kind!r}: choose none, lru or redis")
