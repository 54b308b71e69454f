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


class _Phase:
    """Progress for one phase: a tqdm bar (refreshed at most once a second) in a terminal or
    a notebook, else one line when the phase starts and one when it ends."""

    def __init__(self, total: int, desc: str, unit: str = "req") -> None:
        import sys

        self.desc, self.total, self.n, self.t0 = desc, total, 0, time.perf_counter()
        self.bar = None
        if sys.stderr.isatty() or "ipykernel" in sys.modules:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, mininterval=1.0, leave=False)
        else:
            print(f"{desc}: {total} {unit} ...", flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(f"{self.desc}: done, {self.n} in {time.perf_counter() - self.t0:.1f} s",
                  flush=True)


def latency_sample(url: str, rows: list[dict], order=None, desc: str = "requests"):
    """Send ``rows[i]`` for each ``i`` in ``order`` (default: each row once), one at a time.

    Returns a DataFrame: one line per request with ``latency_ms`` (client-side, ms),
    ``cache_hit`` (bool) and ``status``. Shows progress as ``desc``.
    """
    import pandas as pd

    order = range(len(rows)) if order is None else order
    client = Client(url)
    out = []
    phase = _Phase(len(order), desc)
    try:
        for i in order:
            t0 = time.perf_counter()
            status, body = client.post("/predict", {"row": rows[int(i)]})
            out.append({"latency_ms": (time.perf_counter() - t0) * 1000, "status": status,
                        "cache_hit": bool(body.get("cache_hits"))})
            phase.update()
    finally:
        phase.close()
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


class HealthProbe:
    """Probe ``url + path`` every ``every_s`` seconds from a thread, as a kubelet would (a new
    connection each time, ``timeout_s`` per probe), while something else loads the server.

    >>> with HealthProbe(url) as probe:
    ...     run_the_load()
    >>> probe.summary()   # {'probes': n, 'p50_ms': ..., 'p99_ms': ..., 'max_ms': ..., 'failed': k}
    """

    def __init__(self, url: str, path: str = "/health", every_s: float = 0.05,
                 timeout_s: float = 1.0) -> None:
        import threading

        self.url, self.path, self.every_s, self.timeout_s = url, path, every_s, timeout_s
        self.latencies_ms: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def _run(self) -> None:
        parts = urlparse(self.url)
        while not self._stop.wait(self.every_s):
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s)
            t0 = time.perf_counter()
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            if ok:
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
            else:
                self.failed += 1

    def __enter__(self) -> "HealthProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, float]:
        """Probe count, failures, and latency percentiles in milliseconds (NaN if none)."""
        import numpy as np

        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {"probes": len(self.latencies_ms) + self.failed, "failed": self.failed,
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                "max_ms": float(np.max(lat))}


def stop_under_load(server, rows: list[dict], clients: int = 4, load_s: float = 2.0) -> dict:
    """Keep ``clients`` threads posting ``rows`` to ``server`` for ``load_s`` seconds, then
    stop it gracefully while they still post. Returns what the clients got and what the
    prediction log holds: ``answered`` (200s), ``refused`` (errors once the server stopped
    listening), ``logged`` (rows logged since the load began), ``stop_s`` (seconds the
    stop took)."""
    import threading

    from .store import read_predictions

    if not server.db:
        raise ValueError("this server has no prediction log: start it with a db")
    answered, refused = [0] * clients, [0] * clients
    halt = threading.Event()

    def post(i: int) -> None:
        client, k = Client(server.url, timeout=10), i
        while not halt.is_set():
            try:
                status, _ = client.post("/predict", {"row": rows[k % len(rows)]})
            except (OSError, http.client.HTTPException):
                status = None
                client.close()
                client = Client(server.url, timeout=10)
                time.sleep(0.05)
            k += clients
            if status == 200:
                answered[i] += 1
            else:
                refused[i] += 1
        client.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(clients)]
    since = time.time()
    for t in threads:
        t.start()
    time.sleep(load_s)
    t0 = time.perf_counter()
    server.stop()
    stop_s = time.perf_counter() - t0
    halt.set()
    for t in threads:
        t.join(timeout=30)
    return {"answered": sum(answered), "refused": sum(refused),
            "logged": int(read_predictions(server.db, "SELECT COUNT(*) AS n FROM predictions "
                                                      f"WHERE ts >= {since}").n.iloc[0]),
            "stop_s": round(stop_s, 2)}
