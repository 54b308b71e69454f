"""The pipeline's steps as plain functions: data contract, models, gate, fingerprints, inbox."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from course_helpers.pipeline import steps

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def batch():
    return steps.make_batch(1_000, seed=1)


def test_batches_share_one_concept_but_not_rows(batch):
    other = steps.make_batch(1_000, seed=2)
    assert list(batch.columns) == [f"f{i:02d}" for i in range(30)] + ["label"]
    assert not batch.drop(columns="label").equals(other.drop(columns="label"))
    assert steps.make_batch(1_000, seed=1).equals(batch), "same seed, same batch"
    # a model trained on batch 1 keeps its quality on batch 2: the relationship is the same
    X_tr, _, y_tr, _ = steps.split(batch)
    model = steps.train(X_tr, y_tr, steps.config("baseline"))
    assert steps.evaluate(model, other.drop(columns="label"), other["label"])["auc"] > 0.75


def test_a_clean_batch_passes_validation(batch):
    assert steps.validate(batch) is not None


@pytest.mark.parametrize("kind, expected", [
    ("nulls", "column f03: 50 null value(s)"),
    ("out_of_range", "column f07:"),
    ("missing_column", "missing column 'f12'"),
    ("constant_label", "positive rate between 5% and 95%"),
    ("wrong_type", "column f05: wrong type"),
])
def test_each_defect_is_named_in_one_sentence(batch, kind, expected):
    bad = steps.corrupt_batch(batch, kind, seed=1)
    with pytest.raises(steps.DataValidationError) as err:
        steps.validate(bad)
    msg = str(err.value)
    assert msg.startswith("batch rejected by the data checks") and expected in msg, msg
    assert "\n" not in msg and "Traceback" not in msg


def test_every_problem_is_reported_not_just_the_first(batch):
    bad = steps.corrupt_batch(steps.corrupt_batch(batch, "nulls"), "missing_column")
    with pytest.raises(steps.DataValidationError) as err:
        steps.validate(bad)
    assert len(err.value.problems) == 2, err.value.problems


def test_too_few_rows(batch):
    with pytest.raises(steps.DataValidationError, match="at least 200 rows"):
        steps.validate(batch.head(50))


def test_unknown_corruption_and_preset_are_errors(batch):
    with pytest.raises(ValueError, match="unknown corruption"):
        steps.corrupt_batch(batch, "gremlins")
    with pytest.raises(ValueError, match="unknown preset"):
        steps.config("magic")
    with pytest.raises(ValueError, match="unknown config keys"):
        steps.config("baseline", learning_rate=0.1)


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("preset", list(steps.PRESETS))
def test_every_preset_predicts_from_frames_and_arrays(batch, preset):
    X_tr, X_te, y_tr, y_te = steps.split(batch)
    model = steps.train(X_tr, y_tr, steps.config(preset, n_estimators=10))
    from_frame = model.predict_proba(X_te)
    from_array = model.predict_proba(X_te.to_numpy())  # the server sends arrays
    assert (abs(from_frame - from_array) < 1e-12).all()
    m = steps.evaluate(model, X_te, y_te)
    assert 0.5 < m["auc"] <= 1.0 and m["n_test"] == len(y_te)


def test_crossed_features_beat_the_baseline_and_weak_is_worse(batch):
    X_tr, X_te, y_tr, y_te = steps.split(batch)
    auc = {p: steps.evaluate(steps.train(X_tr, y_tr, steps.config(p)), X_te, y_te)["auc"]
           for p in ("baseline", "weak", "crossed")}
    assert auc["weak"] < 0.70 < auc["baseline"] < auc["crossed"], auc


@pytest.mark.parametrize("cand, champ, promote, words", [
    (0.80, None, True, "no champion yet"),
    (0.60, None, False, "FAIL auc 0.6000 < floor"),
    (0.85, 0.80, True, "PASS auc 0.8500 >= champion"),
    (0.80, 0.80, False, "FAIL auc 0.8000 < champion 0.8000 + 0.001"),  # a rerun never churns
    (0.79, 0.80, False, "FAIL"),
])
def test_gate(cand, champ, promote, words):
    d = steps.gate({"auc": cand}, {"auc": champ} if champ is not None else None)
    assert d.promote is promote
    assert any(words in r for r in d.reasons), d.reasons
    assert str(d).startswith("PROMOTE" if promote else "KEEP CHAMPION")


def test_fingerprint_and_config_key_are_stable(batch):
    assert steps.fingerprint(batch) == steps.fingerprint(batch.copy())
    changed = batch.copy()
    changed.iloc[0, 0] += 1e-9
    assert steps.fingerprint(changed) != steps.fingerprint(batch)
    assert steps.config("baseline").key() == steps.TrainConfig().key()
    assert steps.config("baseline", C=0.5).key() != steps.TrainConfig().key()


def test_content_key_ignores_pickle_layout(batch):
    import pickle

    from course_helpers.pipeline.flow import content_key

    X_tr, *_ = steps.split(batch)
    assert content_key(X_tr) == content_key(pickle.loads(pickle.dumps(X_tr)))
    assert content_key({"df": X_tr, "n": 1}) != content_key({"df": X_tr, "n": 2})
    assert content_key(X_tr) != content_key(X_tr.iloc[:-1])


def test_inbox_sees_only_finished_files(tmp_path):
    from course_helpers.pipeline import triggers

    path = triggers.drop_batch(tmp_path, n_rows=300, seed=3)
    (tmp_path / ".batch-being-written.parquet.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not a batch")
    assert triggers.pending(tmp_path) == [path]
    assert steps.ingest(path=path).equals(steps.make_batch(300, seed=3))
    assert triggers.ledger(tmp_path) == {}


def test_cli_has_pipeline_and_tracking_and_stays_light():
    for args in (["pipeline", "run", "--help"], ["pipeline", "trigger", "--help"],
                 ["tracking", "start", "--help"]):
        out = subprocess.run([sys.executable, "-m", "course_helpers.cli", *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage: mlops-course" in out.stdout, out.stderr
    code = ("import sys, course_helpers.cli as c; c.build_parser(); "
            "print(sorted({'pandas','numpy','mlflow','prefect','sklearn','pandera'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"
