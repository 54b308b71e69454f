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


class RedisCache:
    """The same interface on a Redis server (shared by every worker and replica)."""

    def __init__(self, url: str, ttl_s: float = 300.0, prefix: str = "pred:") -> None:
        import redis

        self.ttl_s, self.prefix = ttl_s, prefix
        self._r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._r.ping()

    def get(self, key: str) -> dict | None:
        raw = self._r.get(self.prefix + key)
        return json.loads(raw) if raw is not None else None

    def set(self, key: str, value: dict) -> None:
        self._r.set(self.prefix + key, json.dumps(value), px=max(1, int(self.ttl_s * 1000)))


def make_cache(kind: str, *, maxsize: int = 10_000, ttl_s: float = 300.0,
               redis_url: str | None = None) -> Cache | None:
    """``none`` -> None, ``lru`` -> LRUCache, ``redis`` -> RedisCache(redis_url)."""
    if kind in ("", "none", "off"):
        return None
    if kind == "lru":
        return LRUCache(maxsize=maxsize, ttl_s=ttl_s)
    if kind == "redis":
        if not redis_url:
            raise ValueError("cache 'redis' needs a Redis URL (MLOPS_REDIS_URL)")
        return RedisCache(redis_url, ttl_s=ttl_s)
    raise ValueError(f"unknown cache {kind!r}: choose none, lru or redis")
