"""The server survives its dependencies: real gunicorn, Redis and PostgreSQL, real faults."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import psutil
import pytest

from course_helpers import services
from course_helpers.data import request_rows
from course_helpers.serving import serve
from course_helpers.serving.loading import ServerStartError
from course_helpers.supervisor import Supervisor, free_port
from tests.helpers import ROOT, gone, need

pytestmark = pytest.mark.integration


def has_redis() -> None:
    import shutil

    need(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")


def has_postgres() -> None:
    import glob
    import shutil

    need(bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")),
         "PostgreSQL (Debian package postgresql)")


def get(url: str, timeout: float = 5) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def send(url: str, body: bytes, content_type: str | None = "application/json") -> tuple[int, dict]:
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url + "/predict", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class Traffic:
    """``n`` client threads posting rows (a few distinct ones, so the cache matters) until
    stopped; counts statuses (and 'error' for a failed connection)."""

    def __init__(self, url: str, n: int = 4, rows: list[dict] | None = None) -> None:
        self.url, self.rows = url, rows or request_rows(20)
        self.codes: Counter = Counter()
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]

    def _run(self, i: int) -> None:
        k = i
        while not self._stop.is_set():
            body = json.dumps({"row": self.rows[k % len(self.rows)]}).encode()
            k += 1
            try:
                code, answer = send(self.url, body)
            except (OSError, http.client.HTTPException, ValueError):
                code, answer = "error", {}
            with self._lock:
                self.codes[code] += 1
                if code == 200:
                    self.versions.append(answer["model_version"])

    def __enter__(self) -> "Traffic":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(timeout=30)


def metric_total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith(name + "_created"))


def test_redis_killed_or_paused_under_traffic_gives_no_5xx(workspace, logreg_uri):
    has_redis()
    port = free_port()
    redis_url = services.start_redis(port=port)
    server = serve(logreg_uri, workers=2, cache="redis", redis_url=redis_url, db=None)
    sup = Supervisor()
    redis_pid = sup.get("redis").pid
    assert get(server.url + "/ready")[1]["cache"] == "redis"
    with Traffic(server.url) as traffic:
        time.sleep(1.0)
        os.kill(redis_pid, signal.SIGSTOP)  # paused: connections open, no answers
        try:
            time.sleep(1.0)
            t0 = time.perf_counter()
            code, ready = get(server.url + "/ready")
            ready_s = time.perf_counter() - t0
            health_s = min(_timed_get(server.url + "/health") for _ in range(5))
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        assert (code, ready["cache"]) == (200, "degraded")
        time.sleep(1.0)
        sup.stop("redis")  # killed: connections refused
        time.sleep(1.5)
        down = get(server.url + "/ready")
        services.start_redis(port=port)  # back, on the same port
        time.sleep(2.5)
    print(f"\nstatuses {dict(traffic.codes)}; /ready took {ready_s * 1000:.0f} ms and "
          f"/health {health_s * 1000:.1f} ms with Redis paused")
    assert set(traffic.codes) == {200}, traffic.codes
    assert down[0] == 200 and down[1]["cache"] == "degraded"
    assert ready_s < 1.0 and health_s < 0.5
    assert metric_total(server.metrics_text(), "mlops_cache_errors_total") > 0
    row = request_rows(1, seed=77)[0]
    answers = [server.predict(row)["cache_hits"] for _ in range(6)]
    assert answers[0] == 0 and answers[-1] == 1, f"caching did not resume: {answers}"
    assert get(server.url + "/ready")[1]["cache"] == "redis"


def _timed_get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
    return time.perf_counter() - t0


def test_ready_is_503_while_the_log_database_is_down(workspace, logreg_uri):
    has_postgres()
    port = free_port()
    db = services.start_postgres(port=port)
    server = serve(logreg_uri, workers=1, cache="none", db=db)
    assert get(server.url + "/ready")[0] == 200
    Supervisor().stop("postgres")
    code, body = get(server.url + "/ready")
    assert code == 503 and "cannot be reached" in body["reason"], body
    assert get(server.url + "/health") == (200, {"status": "alive"})
    answer = send(server.url, json.dumps({"row": request_rows(1)[0]}).encode())
    assert answer[0] == 200, answer
    services.start_postgres(port=port)  # back (it may still be recovering for a moment)
    assert eventually(lambda: get(server.url + "/ready")[0] == 200, within=15)


def test_while_the_model_loads_ready_is_refused_not_503(workspace, logreg_uri):
    """gunicorn --preload loads the model before it opens its socket (the workers then share
    the model's memory): until the model is loaded a probe's connection is refused, which
    a kubelet, Docker's health check and nginx all count as 'not ready', like a 503. What
    lessons 01 and 04 say."""
    from course_helpers.readiness import probe

    port = free_port()
    url = f"http://127.0.0.1:{port}/ready"
    answers: list[str] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            answer = probe(url, expect=200, timeout=1)
            if not answers or answers[-1] != answer.detail:
                answers.append(answer.detail)
            if answer:
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        serve(logreg_uri, port=port, workers=2, cache="none", db=None)
        watcher.join(timeout=10)
    finally:
        done.set()
    assert answers[0] == "connection refused" and answers[-1] == "HTTP 200", answers
    assert set(answers) == {"connection refused", "HTTP 200"}, answers  # never a 503 first


def eventually(check, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_health_answers_while_predict_is_saturated(workspace, tmp_path):
    """A liveness probe must not time out under load (Kubernetes' default timeout: 1 s)."""
    from course_helpers import model

    clf, X, _ = model.train("forest", n_rows=1000, n_estimators=150)
    uri = str(model.save(clf, tmp_path / "forest", X))
    server = serve(uri, workers=1, cache="none", db=None)
    with Traffic(server.url, n=8, rows=request_rows(500)) as traffic:
        time.sleep(1.0)
        probes = []
        for _ in range(30):
            probes.append(_timed_get(server.url + "/health"))
            time.sleep(0.05)
    probes.sort()
    print(f"\n/health under load: median {probes[15] * 1000:.1f} ms, max {probes[-1] * 1000:.1f} ms;"
          f" {sum(traffic.codes.values())} predictions; load {os.getloadavg()[0]:.2f}")
    assert traffic.codes[200] > 30, "the load should keep /predict busy"
    assert probes[-1] < 1.0


def workers_of(pid: int, n: int, within: float = 15.0) -> list[psutil.Process]:
    """The master's ``n`` workers: gunicorn forks them one after another, so the first can be
    ready (and ``serve`` return) before the last exists."""
    deadline = time.monotonic() + within
    workers = psutil.Process(pid).children()
    while len(workers) < n and time.monotonic() < deadline:
        time.sleep(0.1)
        workers = psutil.Process(pid).children()
    assert len(workers) == n, f"{len(workers)} of {n} workers after {within} s"
    return workers


def test_workers_die_within_two_seconds_of_master_sigkill(workspace, logreg_uri):
    server = serve(logreg_uri, workers=2, cache="none", db=None)
    workers = workers_of(server.pid, 2)
    os.kill(server.pid, signal.SIGKILL)
    t0 = time.monotonic()
    assert all(gone(w.pid, within=2.0) for w in workers), "a worker outlived its master by 2 s"
    print(f"\nworkers gone {time.monotonic() - t0:.2f} s after the master")
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "/health", timeout=2)


def test_each_worker_listens_on_its_own_socket(workspace, logreg_uri):
    """The adapter's end-to-end check (see serving/adapters.py)."""
    server = serve(logreg_uri, workers=2, cache="none", db=None)
    for w in workers_of(server.pid, 2):
        ports = {c.laddr.port for c in w.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert server.port in ports, f"worker {w.pid} does not listen on {server.port}"


def test_sigterm_stops_a_foreground_serve_like_ctrl_c(workspace, logreg_uri):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "course_helpers.cli", "serve", "--model",
                             logreg_uri, "--port", str(port), "--cache", "none", "--db", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        seen = []
        for line in proc.stdout:  # until the CLI says it is serving in the foreground
            seen.append(line)
            if "Ctrl-C stops it" in line:
                break
        assert get(f"http://127.0.0.1:{port}/ready")[0] == 200, "".join(seen)
        master = Supervisor().get("model-server").pid
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
        out = "".join(seen) + out
    finally:
        proc.kill()
    print(out)
    assert proc.returncode == 0 and "stopping" in out
    assert gone(master, within=5)


def test_413_reaches_an_ordinary_client_with_and_without_content_length(workspace, logreg_uri):
    server = serve(logreg_uri, workers=1, cache="none", db=None)
    big = json.dumps({"rows": request_rows(1) * 3000}).encode()
    assert len(big) > 1_000_000
    code, body = send(server.url, big)  # urllib sends Content-Length
    assert code == 413 and "larger than 1000000 bytes" in body["error"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    conn.request("POST", "/predict", body=chunks, encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    assert resp.status == 413 and "larger than" in json.loads(resp.read())["error"]
    conn.close()
    code, body = send(server.url, json.dumps({"row": request_rows(1)[0]}).encode(), None)
    assert code == 415, body  # urllib's default is application/x-www-form-urlencoded
    code, body = send(server.url, b"")
    assert code == 422 and "empty" in body["error"]


def _cli(*args: str) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "course_helpers.cli", "serve", *args],
                         capture_output=True, text=True, timeout=60, env=env)
    return out.returncode, out.stderr.strip(), time.monotonic() - t0


@pytest.mark.parametrize("case", ["model", "redis", "database"])
def test_startup_errors_are_one_sentence_within_ten_seconds(workspace, logreg_uri, tmp_path, case):
    dead = f"127.0.0.1:{free_port()}"
    args = {"model": ["--model", str(tmp_path / "nothing-here"), "--cache", "none"],
            "redis": ["--model", logreg_uri, "--cache", "redis", "--redis-url", f"redis://{dead}/0"],
            "database": ["--model", logreg_uri, "--cache", "none",
                         "--db", f"postgresql://postgres@{dead}/postgres"]}[case]
    code, err, seconds = _cli(*args)
    print(f"\n{case}: {seconds:.1f} s: {err}")
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert seconds < 10
    assert not Supervisor().records(), "nothing may have been started"


def test_gunicorn_alone_reports_a_bad_model_in_one_line(workspace, tmp_path):
    """Containers start gunicorn directly: the preloaded app fails before any worker."""
    from course_helpers.serving.server import gunicorn_command

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLOPS_MODEL_URI": str(tmp_path / "missing"),
           "MLOPS_CACHE": "none", "MLOPS_DB": "none"}
    cmd = gunicorn_command(2, f"127.0.0.1:{free_port()}")
    cmd[0] = str(__import__("pathlib").Path(sys.executable).with_name("gunicorn"))
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    print(f"\n{time.monotonic() - t0:.1f} s: {errors}")
    assert out.returncode != 0 and time.monotonic() - t0 < 10
    assert errors == [errors[0]] and errors[0].startswith("Error: the model URI"), out.stderr


def test_serve_raises_before_starting_anything(workspace, tmp_path):
    with pytest.raises(ServerStartError, match="does not resolve"):
        serve(str(tmp_path / "absent"), db=None)
    assert not Supervisor().records()


def test_follow_alias_swaps_the_model_under_load_without_a_failed_request(workspace):
    """A real `mlflow server`, a real registry alias moved under load."""
    from course_helpers import model, tracking

    srv = tracking.start_server(set_uri=False)
    name = "follow-alias-model"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = srv.url
    try:
        first = model.train("logreg", n_rows=300, seed=0)
        v1 = model.register(first[0], first[1], name=name, alias="champion")
        server = serve(f"models:/{name}@champion", workers=2, cache="lru", db=None,
                       follow_alias_s=0.5)
        assert get(server.url + "/version")[1]["model_version"] == v1
        second = model.train("logreg", n_rows=300, seed=1)
        v2 = model.register(second[0], second[1], name=name, alias=None)
        with Traffic(server.url, n=4) as traffic:
            time.sleep(1.5)
            tracking.promote(name, v2, "champion", uri=srv.url)
            assert eventually(lambda: get(server.url + "/version")[1]["model_version"] == v2,
                              within=20)
            time.sleep(2.0)  # both workers must have swapped: every answer now from v2
        seen = traffic.versions
        print(f"\nstatuses {dict(traffic.codes)}; answers by version "
              f"{dict(Counter(seen))}; /version {get(server.url + '/version')[1]['model_uri']}")
        assert set(traffic.codes) == {200}, traffic.codes
        assert seen[0] == v1 and seen[-1] == v2 and set(seen) == {v1, v2}
        assert all(get(server.url + "/version")[1]["model_version"] == v2 for _ in range(6))
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
