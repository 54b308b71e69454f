"""The server selects input features by name: any key order, any fitted column order."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from course_helpers.data import request_rows
from course_helpers.serving.app import Settings, create_app

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def by_name(tmp_path_factory):
    """A pipeline that selects columns by name (it needs a DataFrame), fitted on the columns
    in reverse order, so neither the signature's nor the request's order is the fitted one."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from course_helpers import model
    from course_helpers.data import make_dataset

    X, y = make_dataset(600, seed=3)
    X = X[list(reversed(X.columns))]
    picked = ["f07", "f00", "f21", "f03", "f15"]
    pipe = make_pipeline(ColumnTransformer([("num", StandardScaler(), picked)]),
                         LogisticRegression(max_iter=500))
    pipe.fit(X, y)
    uri = str(model.save(pipe, tmp_path_factory.mktemp("models") / "by-name", X))
    return pipe, X, uri


def test_columns_are_matched_by_name_not_position(by_name):
    import pandas as pd

    pipe, X, uri = by_name
    app = create_app(Settings(model_uri=uri, cache="none", db=None))
    rows = request_rows(20, seed=5)
    with TestClient(app) as c:
        assert app.state.serving.model.needs_frame  # a bare array would crash this pipeline
        shuffled = [dict(sorted(r.items(), key=lambda kv: hash(kv[0]) % 97)) for r in rows]
        got = c.post("/predict", json={"rows": shuffled})
        assert got.status_code == 200, got.text
        want = pipe.predict_proba(pd.DataFrame(rows)[list(X.columns)])
        assert np.allclose(got.json()["probabilities"], want)
        missing = {k: v for k, v in rows[0].items() if k != "f21"}
        r = c.post("/predict", json={"row": missing})
        assert r.status_code == 422 and "missing field 'row.f21'" in r.json()["error"]
        r = c.post("/predict", json={"row": rows[0] | {"f99": 1.0}})
        assert r.status_code == 422 and "unexpected field 'row.f99'" in r.json()["error"]


def test_a_plain_model_keeps_the_fast_array_path(logreg_uri):
    app = create_app(Settings(model_uri=logreg_uri, cache="none", db=None))
    assert not app.state.serving.model.needs_frame
