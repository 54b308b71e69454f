"""Run Locust headless in a subprocess and read its results back as numbers and a DataFrame."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import config
from ..errors import CourseError
from ..supervisor import ENV_TAG

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclasses.dataclass
class LoadResult:
    """Totals of one load test (from Locust's JSON) and its time series (history CSV).

    Latencies in milliseconds; ``generator_cpu`` is the CPU the load generator itself used,
    in cores (1.0 = one full core), to show when it competes with the server.
    """

    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    duration_s: float
    users: int
    generator_cpu: float
    history_csv: str
    json_file: str
    timeline_file: str = ""
    shape: str = "constant"

    def summary(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("history_csv", "json_file", "timeline_file")}

    def timeline(self):
        """Exact per-second outcomes: t (epoch s), elapsed_s, ok, failed, rps, p50_ms, p95_ms,
        and users (from Locust's history, for step and ramp shapes)."""
        import pandas as pd

        df = pd.DataFrame(json.loads(Path(self.timeline_file).read_text()))
        if df.empty:
            return df
        df["elapsed_s"] = df["t"] - df["t"].iloc[0]
        df["rps"] = df["ok"] + df["failed"]
        try:
            hist = pd.read_csv(self.history_csv)
            hist = hist[hist["Name"] == "Aggregated"] if "Name" in hist else hist
            users = hist.groupby(hist["Timestamp"].astype(int))["User Count"].max()
            df["users"] = df["t"].map(users).ffill().bfill()
        except (OSError, KeyError, ValueError):
            df["users"] = self.users
        return df

    def history(self):
        """Per-second DataFrame: elapsed_s, users, rps, failures_per_s, p50_ms, p95_ms."""
        import pandas as pd

        df = pd.read_csv(self.history_csv)
        df = df[df["Name"] == "Aggregated"] if "Name" in df else df
        out = pd.DataFrame({
            "elapsed_s": df["Timestamp"] - df["Timestamp"].iloc[0],
            "users": df["User Count"],
            "rps": df["Requests/s"],
            "failures_per_s": df["Failures/s"],
            "p50_ms": pd.to_numeric(df["50%"], errors="coerce"),
            "p95_ms": pd.to_numeric(df["95%"], errors="coerce"),
        })
        return out.reset_index(drop=True)


def _percentile(hist: dict[str, int], q: float) -> float:
    """Percentile from Locust's rounded response-time histogram ({ms: count})."""
    items = sorted((float(k), v) for k, v in hist.items())
    total = sum(v for _, v in items)
    if not total:
        return float("nan")
    rank, seen = q * total, 0
    for ms, count in items:
        seen += count
        if seen >= rank:
            return ms
    return items[-1][0]


def parse_json(path: str | Path) -> dict:
    """Totals across all request names in a Locust ``--json-file``."""
    stats = json.loads(Path(path).read_text())
    hist: dict[str, int] = {}
    req = fail = 0
    total_time = 0.0
    start, end = float("inf"), 0.0
    for s in stats:
        req += s["num_requests"]
        fail += s["num_failures"]
        total_time += s["total_response_time"]
        start = min(start, s["start_time"])
        end = max(end, s["last_request_timestamp"] or 0)
        for k, v in s["response_times"].items():
            hist[k] = hist.get(k, 0) + v
    duration = max(end - start, 1e-9) if req else 0.0
    return {"requests": req, "failures": fail, "duration_s": round(duration, 2),
            "rps": round(req / duration, 1) if req else 0.0,
            "p50_ms": _percentile(hist, 0.50), "p95_ms": _percentile(hist, 0.95),
            "p99_ms": _percentile(hist, 0.99),
            "mean_ms": round(total_time / req, 2) if req else float("nan")}


def run_locust(host: str, *, users: int | None = None, spawn_rate: int | None = None,
               duration_s: int | None = None, rows: list[dict] | None = None,
               mix: str = "uniform", zipf_a: float = 1.2, batch: int = 1,
               out_dir: str | Path | None = None, label: str = "load",
               profile: str | None = None, progress: bool = True, api: str = "course",
               shape: str = "constant", steps: int = 4, rate_per_user: float | None = None,
               started_file: str | Path | None = None,
               locustfile: str | Path = LOCUSTFILE) -> LoadResult:
    """Drive ``host`` (a loopback URL) with Locust for ``duration_s`` seconds.

    Users, spawn rate and duration default to the profile's. ``rows`` are the request
    payloads (default: 500 rows of the course dataset), picked uniformly or Zipf-skewed.
    ``rate_per_user`` (requests/s) paces each user (Locust's ``constant_throughput``);
    None: each user sends its next request as soon as the last one is answered.
    ``started_file``: Locust writes the epoch second its first request was sent there.
    """
    from ..data import request_rows

    if not host.startswith(("http://127.", "http://localhost")):
        raise CourseError(f"load tests only target loopback addresses, not {host}")
    prof = config.get_profile(profile)
    users = users or prof.users
    spawn_rate = spawn_rate or prof.spawn_rate
    duration_s = duration_s or prof.duration_s
    out = Path(out_dir) if out_dir else config.workspace_dir("loadtests")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{label}-{time.strftime('%H%M%S')}-{os.getpid()}"
    rows_file = Path(f"{stem}.rows.json")
    rows_file.write_text(json.dumps(rows if rows is not None else request_rows(500)))
    env = dict(os.environ, MLOPS_LOAD_ROWS=str(rows_file), MLOPS_LOAD_MIX=mix,
               MLOPS_LOAD_ZIPF_A=str(zipf_a), MLOPS_LOAD_BATCH=str(batch), MLOPS_LOAD_API=api,
               MLOPS_LOAD_TIMELINE=f"{stem}.timeline.json", MLOPS_LOAD_SHAPE=shape,
               MLOPS_LOAD_USERS=str(users), MLOPS_LOAD_DURATION=str(duration_s),
               MLOPS_LOAD_STEPS=str(steps), MLOPS_LOAD_RATE=str(rate_per_user or 0),
               MLOPS_LOAD_STARTED=str(started_file or ""),
               LOCUST_SKIP_MONKEY_PATCH_CHECK="1")
    # tagged like supervised processes, so `mlops-course cleanup` finds a Locust whose owner died
    env[ENV_TAG] = f"{config.workspace()}::locust-{label}"
    locust = str(Path(sys.executable).with_name("locust"))
    cmd = [locust, "-f", str(locustfile), "--headless", "-u", str(users), "-r", str(spawn_rate),
           "-t", f"{duration_s}s", "--host", host, "--csv", str(stem), "--csv-full-history",
           "--json-file", str(stem), "--only-summary", "--stop-timeout", "2",
           "--loglevel", "WARNING"]
    log_path = Path(f"{stem}.log")
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    bar = None
    if progress:
        from .progress import Phase

        bar = Phase(f"locust {label}", duration_s, unit="s")
    deadline = start + duration_s + 45
    rusage = None
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise CourseError(f"locust did not finish within {duration_s + 45} s; "
                                  f"see {log_path}")
            if bar is not None:
                bar.update_to(int(time.monotonic() - start))
            time.sleep(0.2)
    except BaseException:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        raise
    finally:
        if bar is not None:
            bar.close()
    wall = time.monotonic() - start
    json_file = Path(f"{stem}.json")
    if not json_file.exists():
        tail = log_path.read_text(errors="replace").splitlines()[-10:]
        raise CourseError(f"locust failed (exit {proc.returncode}); last lines:\n" + "\n".join(tail))
    totals = parse_json(json_file)
    cpu = (rusage.ru_utime + rusage.ru_stime) / wall if rusage else float("nan")
    return LoadResult(users=users, generator_cpu=round(cpu, 2),
                      history_csv=f"{stem}_stats_history.csv", json_file=str(json_file),
                      timeline_file=f"{stem}.timeline.json", shape=shape, **totals)
