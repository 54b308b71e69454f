"""The app in-process: request schema from the signature, and a 4xx for every bad input."""

import json
import math

import pytest
from fastapi.testclient import TestClient

from course_helpers.data import request_rows
from course_helpers.serving.app import Settings, create_app

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def client(logreg_uri, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "log.db"
    app = create_app(Settings(model_uri=logreg_uri, db=str(db), max_batch=8,
                              max_body_bytes=1_000_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.db = db
        yield c


ROW = request_rows(1)[0]


def test_one_row_and_a_batch(client):
    one = client.post("/predict", json={"row": ROW})
    assert one.status_code == 200
    body = one.json()
    assert body["predictions"][0] in (0, 1) and math.isclose(sum(body["probabilities"][0]), 1)
    assert body["model_name"] == "logreg" and body["request_id"]
    batch = client.post("/predict", json={"rows": request_rows(5)})
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 5
    assert batch.json()["cache_hits"] == 1  # request_rows(5)[0] == ROW


def test_request_id_header_is_honoured(client):
    r = client.post("/predict", json={"row": ROW}, headers={"X-Request-ID": "abc-123"})
    assert r.json()["request_id"] == "abc-123"


def test_schema_names_the_features(client):
    schema = client.get("/openapi.json").json()
    row = schema["components"]["schemas"]["Row"]
    assert sorted(row["required"]) == [f"f{i:02d}" for i in range(30)]
    assert row.get("additionalProperties") is False


def bad(client, payload=None, *, content=None, status=422):
    if content is None:
        r = client.post("/predict", json=payload)
    else:
        r = client.post("/predict", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"], r.text
    return r.json()["error"]


def test_missing_feature(client):
    row = dict(ROW)
    row.pop("f03")
    assert "missing field 'row.f03'" in bad(client, {"row": row})


def test_unknown_feature(client):
    assert "unexpected field 'row.colour'" in bad(client, {"row": ROW | {"colour": 1.0}})


def test_wrong_type(client):
    assert "row.f00" in bad(client, {"row": ROW | {"f00": "high"}})
    assert "row.f00" in bad(client, {"row": ROW | {"f00": True}})
    assert "row.f00" in bad(client, {"row": ROW | {"f00": None}})


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity(client, value):
    body = json.dumps({"row": ROW}).replace(str(ROW["f00"]), value, 1)
    assert "row.f00" in bad(client, content=body)


def test_empty_batch(client):
    assert "rows" in bad(client, {"rows": []})


def test_batch_over_the_limit(client):
    assert "rows" in bad(client, {"rows": request_rows(9)})


def test_both_or_neither(client):
    assert "exactly one" in bad(client, {"row": ROW, "rows": [ROW]})
    assert "exactly one" in bad(client, {})


def test_not_an_object(client):
    bad(client, [1, 2, 3])
    bad(client, "row")


def test_invalid_json(client):
    assert "not valid JSON" in bad(client, content='{"row": {"f00": 1.0,', status=400)


def test_body_over_one_megabyte(client):
    big = json.dumps({"rows": [ROW] * 3000})
    assert len(big) > 1_000_000
    assert "larger than" in bad(client, content=big, status=413)


def test_health_ready_version_metrics(client):
    assert client.get("/health").json() == {"status": "alive"}
    assert client.get("/ready").json()["status"] == "ready"
    assert client.get("/version").json()["features"][0] == "f00"
    text = client.get("/metrics").text
    assert 'mlops_requests_total{model_version=' in text
    assert 'status="422"' in text and 'status="413"' in text and "mlops_cache_hits_total" in text


def test_predictions_are_logged_on_shutdown(logreg_uri, tmp_path):
    from course_helpers.serving.store import read_predictions

    db = tmp_path / "log.db"
    app = create_app(Settings(model_uri=logreg_uri, db=str(db)))
    with TestClient(app) as c:
        for row in request_rows(20):
            assert c.post("/predict", json={"row": row}).status_code == 200
    df = read_predictions(str(db))
    assert len(df) == 20 and set(df.cache_hit) == {0}
    assert json.loads(df.inputs[0]) == request_rows(1)[0]


def test_wrong_method_and_unknown_path_use_the_error_shape(client):
    r = client.get("/predict")
    assert r.status_code == 405 and r.json() == {"error": "GET is not allowed on /predict: use POST"}
    r = client.get("/nowhere")
    assert r.status_code == 404 and "/docs" in r.json()["error"]


def test_wrong_content_type_is_415(client):
    r = client.post("/predict", content=json.dumps({"row": ROW}),
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]


def test_empty_body_is_422(client):
    assert "body is empty" in bad(client, content=b"")


def test_unparseable_body_is_400(client):
    assert "parsed as JSON" in bad(client, content=b'{"row": "\xff\xfe"}', status=400)


def test_chunked_body_over_the_limit_is_413(client):
    chunk = json.dumps({"rows": [ROW] * 400}).encode()

    def body():
        for _ in range(5):  # no Content-Length: sent chunked, 1.4 MB in all
            yield chunk

    r = client.post("/predict", content=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_key_order_does_not_matter(client):
    shuffled = dict(reversed(list(ROW.items())))
    assert list(shuffled) != list(ROW)
    a = client.post("/predict", json={"row": ROW}).json()
    b = client.post("/predict", json={"row": shuffled}).json()
    assert a["probabilities"] == b["probabilities"]


def test_non_finite_output_is_422_not_cached_not_logged(logreg_uri, tmp_path):
    from course_helpers.serving.store import read_predictions

    db = tmp_path / "log.db"
    app = create_app(Settings(model_uri=logreg_uri, db=str(db)))
    # finite inputs whose weighted sum overflows to inf - inf = NaN inside the model
    extreme = {k: 1.79e308 for k in ROW}
    with TestClient(app) as c:
        r = c.post("/predict", json={"rows": [ROW, extreme]})
        assert r.status_code == 422, r.text
        assert "row(s) 1" in r.json()["error"] and "not a finite number" in r.json()["error"]
        again = c.post("/predict", json={"row": ROW}).json()
        assert again["cache_hits"] == 0, "nothing from the refused request may be cached"
    assert len(read_predictions(str(db))) == 1, "only the good request is logged"


def test_docs_render_from_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in ("docs-assets/swagger-ui-bundle.js", "docs-assets/swagger-ui.css"):
        assert asset in page.text
        r = client.get("/" + asset)
        assert r.status_code == 200 and len(r.content) > 10_000
    assert client.get("/redoc").status_code == 404


def test_ready_reports_the_cache_and_health_is_cheap(client):
    body = client.get("/ready").json()
    assert body["status"] == "ready" and body["cache"] == "lru"


def test_unreachable_database_refuses_to_start(logreg_uri, tmp_path):
    from course_helpers.serving.loading import ServerStartError
    from course_helpers.supervisor import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(ServerStartError) as err:
        create_app(Settings(model_uri=logreg_uri, db=url))
    msg = str(err.value)
    assert "cannot be reached" in msg and "--db none" in msg and "\n" not in msg


def test_unreachable_redis_refuses_to_start(logreg_uri):
    from course_helpers.serving.loading import ServerStartError
    from course_helpers.supervisor import free_port

    with pytest.raises(ServerStartError, match="does not answer.*--cache lru"):
        create_app(Settings(model_uri=logreg_uri, cache="redis",
                            redis_url=f"redis://127.0.0.1:{free_port()}/0"))


def test_unresolvable_model_uri_is_one_sentence(tmp_path):
    from course_helpers.serving.loading import ServerStartError, check_model

    with pytest.raises(ServerStartError) as err:
        check_model(str(tmp_path / "no-such-model"))
    assert "does not resolve" in str(err.value) and "\n" not in str(err.value)


def test_teaching_switch_puts_predict_on_the_event_loop(logreg_uri, monkeypatch):
    monkeypatch.setenv("MLOPS_MODEL_URI", logreg_uri)
    monkeypatch.setenv("MLOPS_PREDICT_ON_LOOP", "true")
    settings = Settings.from_env()
    assert settings.predict_on_loop and settings.to_env()["MLOPS_PREDICT_ON_LOOP"] == "true"
    for on_loop in (False, True):
        app = create_app(Settings(model_uri=logreg_uri, db=None, predict_on_loop=on_loop))
        route = next(r for r in app.routes if getattr(r, "path", "") == "/predict")
        assert route.endpoint.__name__ == ("on_loop" if on_loop else "threaded")
