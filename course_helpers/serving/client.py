"""Small clients for the lessons: timed requests and a tour of bad inputs."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlparse


class Client:
    """A keep-alive HTTP client for one server (what a real service client would hold)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlparse(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def post(self, path: str, body: bytes | str | dict | list,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        self._conn.request("POST", path, body=data,
                           headers={"Content-Type": "application/json", **(headers or {})})
        resp = self._conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, {"raw": raw.decode(errors="replace")}

    def close(self) -> None:
        self._conn.close()


def latency_sample(url: str, rows: list[dict], order=None):
    """Send ``rows[i]`` for each ``i`` in ``order`` (default: each row once), one at a time.

    Returns a DataFrame: one line per request with ``latency_ms`` (client-side, ms),
    ``cache_hit`` (bool) and ``status``.
    """
    import pandas as pd

    order = range(len(rows)) if order is None else order
    client = Client(url)
    out = []
    try:
        for i in order:
            t0 = time.perf_counter()
            status, body = client.post("/predict", {"row": rows[int(i)]})
            out.append({"latency_ms": (time.perf_counter() - t0) * 1000, "status": status,
                        "cache_hit": bool(body.get("cache_hits"))})
    finally:
        client.close()
    return pd.DataFrame(out)


def bad_input_tour(url: str, row: dict[str, float]):
    """Send one example of each kind of bad input; returns a DataFrame of status and message."""
    import pandas as pd

    name = next(iter(row))
    missing = {k: v for k, v in row.items() if k != name}
    cases = [
        ("missing feature", {"row": missing}),
        ("unknown feature", {"row": row | {"colour": 1.0}}),
        ("wrong type", {"row": row | {name: "high"}}),
        ("NaN", json.dumps({"row": row}).replace(json.dumps(row[name]), "NaN", 1)),
        ("empty batch", {"rows": []}),
        ("batch over the limit", {"rows": [row] * 300}),
        ("invalid JSON", '{"row": {'),
        ("body over 1 MB", json.dumps({"rows": [row] * 3_000})),
    ]
    client = Client(url)
    out = []
    try:
        for case, body in cases:
            status, answer = client.post("/predict", body)
            out.append({"input": case, "status": status,
                        "message": answer.get("error", answer.get("raw", ""))[:120]})
            if status >= 500 or case in ("body over 1 MB", "batch over the limit"):
                client.close()
                client = Client(url)
    finally:
        client.close()
    return pd.DataFrame(out)
