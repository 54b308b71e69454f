"""One readiness wait: probe answers, the early-exit and timeout errors name URL, timeout and log."""

import http.server
import subprocess
import sys
import threading

import pytest

from course_helpers.errors import ReadinessTimeoutError
from course_helpers.readiness import probe, wait_until_ready
from course_helpers.supervisor import free_port

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def http_url():
    state = {"status": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status": "ready"}' if state["status"] == 200 else b'{"status": "loading"}'
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ready", state
    server.shutdown()
    server.server_close()


def test_probe_says_why_not(http_url):
    url, state = http_url
    state["status"] = 503
    assert not probe(url, expect=200) and probe(url, expect=200).detail == "HTTP 503"
    assert not probe(url)  # default: below 500
    state["status"] = 200
    assert probe(url, expect=lambda status, body: b'"ready"' in body)
    assert probe(url.replace("http://", "tcp://").rsplit("/", 1)[0])
    closed = f"http://127.0.0.1:{free_port()}/ready"
    assert probe(closed).detail == "connection refused"
    assert not probe(f"tcp://127.0.0.1:{free_port()}")


def test_timeout_names_url_timeout_last_answer_and_log(http_url, tmp_path):
    url, state = http_url
    state["status"] = 503
    log = tmp_path / "server.log"
    log.write_text("loading the model\n")
    with pytest.raises(ReadinessTimeoutError) as err:
        wait_until_ready(url, 0.5, expect=200, log=log, name="api")
    msg = str(err.value)
    assert msg.startswith(f"api was not ready at {url} after 0.5 s (last answer: HTTP 503)")
    assert str(log) in msg and msg.endswith("loading the model")


def test_dead_process_ends_the_wait_with_its_exit_code(tmp_path):
    log = tmp_path / "crash.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", "print('bad config'); raise SystemExit(3)"],
                                stdout=fh)
    proc.wait()
    url = f"http://127.0.0.1:{free_port()}/ready"
    with pytest.raises(ReadinessTimeoutError, match=r"exited \(code 3\) before .*ready") as err:
        wait_until_ready(url, 30, proc=proc, log=log)
    assert url in str(err.value) and "bad config" in str(err.value)


def test_ready_returns_the_seconds_it_took(http_url):
    url, state = http_url
    state["status"] = 200
    assert 0 <= wait_until_ready(url, 5, expect=200) < 5
