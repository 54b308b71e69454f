"""The launcher cards of jupyter-server-proxy: an icon each, and Locust's Host preset."""

from __future__ import annotations

import pytest

from course_helpers import proxy

@pytest.mark.unit
@pytest.mark.parametrize("name", ["mlflow", "locust", "dask", "prometheus"])
def test_every_launcher_has_an_icon_jupyterlab_draws(name):
    entry = proxy.servers()[name]["launcher_entry"]
    icon = entry["icon_path"]
    assert icon.endswith(".svg") and "<svg" in open(icon).read()
    # JupyterLab 4 draws a launcher item's image only in the Notebook and Console sections
    assert entry["category"] == "Notebook"


@pytest.mark.unit
def test_locust_host_empty_when_nothing_runs(workspace, monkeypatch):
    monkeypatch.delenv(proxy.LOCUST_HOST_ENV, raising=False)
    assert proxy.running_server_url() is None
    assert "--host" not in proxy.locust_argv(8089, proxy.Path("locustfile.py"))
    monkeypatch.setenv(proxy.LOCUST_HOST_ENV, "http://127.0.0.1:1234")
    argv = proxy.locust_argv(8089, proxy.Path("locustfile.py"))
    assert argv[argv.index("--host") + 1] == "http://127.0.0.1:1234"


@pytest.mark.integration
def test_locust_host_prefers_the_model_server(workspace, monkeypatch):
    import sys

    from course_helpers.supervisor import Supervisor, free_port

    monkeypatch.delenv(proxy.LOCUST_HOST_ENV, raising=False)
    sup = Supervisor()
    ports = {}
    for name in ("model-server", "other-server"):
        ports[name] = free_port()
        sup.start(name, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                         str(ports[name])], port=ports[name])
    assert proxy.running_server_url() == f"http://127.0.0.1:{ports['model-server']}"
    sup.stop("model-server")
    assert proxy.running_server_url() == f"http://127.0.0.1:{ports['other-server']}"
