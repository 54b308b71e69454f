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
    assert "invalid JSON" in bad(client, content='{"row": {"f00": 1.0,', status=400)


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
