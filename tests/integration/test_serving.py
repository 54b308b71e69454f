"""The simple system for real: gunicorn workers, Redis, PostgreSQL, graceful shutdown, fuzzing."""

import json
from concurrent.futures import ThreadPoolExecutor
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from course_helpers import services
from course_helpers.data import request_rows
from course_helpers.serving import serve
from course_helpers.serving.store import read_predictions
from tests.helpers import need

pytestmark = pytest.mark.integration


def post(url: str, body: dict) -> int:
    req = urllib.request.Request(url + "/predict", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_metrics_add_up_across_workers(workspace, logreg_uri):
    server = serve(logreg_uri, workers=2, cache="lru")
    rows = request_rows(400)
    with ThreadPoolExecutor(16) as pool:  # enough concurrent clients to busy both workers
        assert set(pool.map(lambda r: post(server.url, {"row": r}), rows)) == {200}
    prom = workspace / "serving" / "model-server.prom"
    writers = {p.stem.split("_")[-1] for p in prom.glob("counter_*.db")}
    assert post(server.url, {"rows": []}) == 422
    text = server.metrics_text()
    version = server.get("/version")["model_version"]
    assert len(writers) == 2, "both workers should have served predictions"
    assert metric(text, "mlops_requests_total", status="200", model_version=version) == 400
    assert metric(text, "mlops_requests_total", status="422") == 1
    assert metric(text, "mlops_request_latency_seconds_count") == 401
    assert metric(text, "mlops_cache_misses_total") + metric(text, "mlops_cache_hits_total") == 400
    assert metric(text, "mlops_predicted_rows_total") == 400
    assert metric(text, "mlops_requests_in_flight") == 0


def test_redis_cache_is_shared_by_workers(workspace, logreg_uri):
    need(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    url = services.start_redis()
    server = serve(logreg_uri, workers=2, cache="redis", redis_url=url)
    row = request_rows(1)[0]
    first = server.predict(row)
    assert first["cache_hits"] == 0
    hits = [server.predict(row)["cache_hits"] for _ in range(10)]
    assert hits == [1] * 10, "every worker must see the shared Redis entry"
    assert [r["predictions"] for r in (first, server.predict(row))] == [first["predictions"]] * 2


def test_new_model_version_is_not_served_stale_predictions(workspace, tmp_path):
    need(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server)")
    from course_helpers import model

    url = services.start_redis()
    row = request_rows(1)[0]
    answers = []
    for seed in (0, 1):
        clf, X, _ = model.train("logreg", n_rows=300, seed=seed)
        uri = str(model.save(clf, tmp_path / f"m{seed}", X))
        server = serve(uri, name=f"server-{seed}", cache="redis", redis_url=url)
        answers.append(server.predict(row))
        server.stop()
    assert answers[0]["model_version"] != answers[1]["model_version"]
    assert answers[1]["cache_hits"] == 0
    assert answers[0]["probabilities"] != answers[1]["probabilities"]


def test_prediction_log_in_postgresql(workspace, logreg_uri):
    need(shutil.which("initdb") or bool(__import__("glob").glob("/usr/lib/postgresql/*/bin/initdb")),
         "PostgreSQL (Debian package postgresql)")
    db = services.start_postgres()
    server = serve(logreg_uri, workers=2, db=db)
    for row in request_rows(25):
        assert post(server.url, {"row": row}) == 200
    assert post(server.url, {"rows": request_rows(5, seed=9)}) == 200
    server.stop()
    df = read_predictions(db)
    assert len(df) == 30 and df.request_id.nunique() == 26
    assert set(df.model_version) == {server_version(df)}


def test_workers_starting_together_create_the_log_table_once(workspace):
    """Each gunicorn worker creates the table at start; together they must not collide."""
    need(shutil.which("initdb") or bool(__import__("glob").glob("/usr/lib/postgresql/*/bin/initdb")),
         "PostgreSQL (Debian package postgresql)")
    from course_helpers.serving.store import _Backend, check_database

    db = services.start_postgres()
    check_database(db)  # waits while PostgreSQL says "starting up"
    start = threading.Barrier(8)

    def open_log(_):
        start.wait()
        backend = _Backend(db)
        backend.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(open_log, range(8)))  # re-raises a worker's error
    assert read_predictions(db).empty


def server_version(df) -> str:
    return df.model_version.iloc[0]


def test_stopping_under_load_loses_no_prediction(workspace, logreg_uri):
    server = serve(logreg_uri, workers=2, cache="none")
    rows = request_rows(200)
    answered = [0] * 6
    failed = [0] * 6
    stop = threading.Event()

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            code = None
            try:
                code = post(server.url, {"row": rows[(i * 31 + n) % len(rows)]})
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            n += 1
            if code == 200:
                answered[i] += 1
            else:
                failed[i] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(3)
    assert sum(answered) > 50, "the load should be running before we stop the server"
    server.stop()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    stored = len(read_predictions(server.db))
    print(f"\nanswered {sum(answered)}, failed {sum(failed)}, stored {stored}")
    assert stored >= sum(answered), "an answered prediction is missing from the log"
    assert stored - sum(answered) <= len(threads), "more rows than requests in flight"


def test_schemathesis_finds_no_server_error(workspace, logreg_uri):
    server = serve(logreg_uri, workers=1, max_batch=16)
    st = str(__import__("pathlib").Path(sys.executable).with_name("st"))
    out = subprocess.run(
        [st, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "60", "--workers", "1", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=workspace)
    print(out.stdout[-3000:])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "No issues found" in out.stdout and "passed" in out.stdout


def test_two_workers_share_the_work(workspace, tmp_path):
    """Keep-alive connections from one burst must not all land on one worker."""
    import psutil

    from course_helpers import model
    from course_helpers.loadtest import run_locust

    clf, X, _ = model.train("forest", n_rows=1000, n_estimators=60)
    uri = str(model.save(clf, tmp_path / "forest", X))
    server = serve(uri, workers=2, cache="none", db=None)
    workers = psutil.Process(server.pid).children()
    before = {w.pid: sum(w.cpu_times()[:2]) for w in workers}
    run_locust(server.url, users=8, spawn_rate=8, duration_s=5, progress=False)
    used = sorted(sum(w.cpu_times()[:2]) - before[w.pid] for w in workers)
    print(f"\nCPU seconds per worker: {used}")
    assert len(used) == 2 and used[0] > 0.25 * used[1], f"one worker did the work: {used}"
