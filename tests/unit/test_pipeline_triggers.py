"""The trigger's ledger: only a finished batch is marked done; a transient failure is retried
at the next trigger. A stand-in runner replaces the pipeline (this is the ledger's own logic)."""

from __future__ import annotations

import dataclasses
import urllib.error

import pytest

from course_helpers.pipeline import steps, triggers

pytestmark = pytest.mark.unit


@dataclasses.dataclass
class Outcome:
    ok: bool
    transient: bool = False
    state: str = "Completed"
    version: str | None = None
    alias: str | None = None
    promote: bool = False
    error: str = ""

    def summary(self) -> str:
        return "ok" if self.ok else f"failed: {self.error}"


class Runner:
    """Answers with the given outcomes in turn and records the batches it was given."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.paths: list[str] = []

    def __call__(self, path, **kwargs):
        self.paths.append(path.name)
        return self.outcomes.pop(0)


def batch_file(inbox, name="b.csv", seed=1):
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    steps.make_batch(50, seed=seed).to_csv(path, index=False)
    return path


def test_a_transient_failure_stays_in_the_inbox_and_runs_again(tmp_path):
    inbox = tmp_path / "inbox"
    path = batch_file(inbox)
    runner = Runner(Outcome(False, transient=True, state="Failed", error="timed out"),
                    Outcome(True, version="4", alias="champion", promote=True))
    first = triggers.process_pending(inbox, runner=runner)
    assert [r.ok for r in first] == [False]
    assert path.exists(), "a transient failure must leave the batch for the next trigger"
    entry = triggers.ledger(inbox)[triggers.digest(path)]
    assert (entry["status"], entry["attempts"]) == ("retry", 1)

    second = triggers.process_pending(inbox, runner=runner)
    assert [r.ok for r in second] == [True] and runner.paths == ["b.csv", "b.csv"]
    assert not path.exists() and (inbox / "processed" / "b.csv").exists()
    entry = triggers.ledger(inbox)[triggers.digest(inbox / "processed" / "b.csv")]
    assert (entry["status"], entry["attempts"], entry["version"]) == ("processed", 2, "4")


def test_bad_data_is_rejected_at_once_and_a_copy_is_skipped(tmp_path):
    inbox = tmp_path / "inbox"
    path = batch_file(inbox)
    runner = Runner(Outcome(False, state="Failed", error="batch rejected by the data checks"))
    triggers.process_pending(inbox, runner=runner)
    assert (inbox / "rejected" / "b.csv").exists()
    (inbox / "copy.csv").write_bytes((inbox / "rejected" / "b.csv").read_bytes())
    assert triggers.process_pending(inbox, runner=runner) == [], "same content: not run again"
    assert (inbox / "rejected" / "copy.csv").exists()
    assert not path.exists()


def test_a_batch_that_keeps_failing_transiently_is_rejected_after_max_attempts(tmp_path):
    inbox = tmp_path / "inbox"
    path = batch_file(inbox)
    fail = Outcome(False, transient=True, state="Failed", error="timed out")
    runner = Runner(*[fail] * triggers.MAX_ATTEMPTS)
    for _ in range(triggers.MAX_ATTEMPTS):
        triggers.process_pending(inbox, runner=runner)
    assert not path.exists() and (inbox / "rejected" / "b.csv").exists()
    entry = triggers.ledger(inbox)[triggers.digest(inbox / "rejected" / "b.csv")]
    assert (entry["status"], entry["attempts"]) == ("rejected", triggers.MAX_ATTEMPTS)


def test_a_ledger_from_before_statuses_still_counts_as_done(tmp_path):
    import json

    inbox = tmp_path / "inbox"
    path = batch_file(inbox)
    (inbox / "ledger.json").write_text(json.dumps({triggers.digest(path): {"file": "old.csv",
                                                                           "ok": True}}))
    assert triggers.process_pending(inbox, runner=Runner()) == []
    assert (inbox / "processed" / "b.csv").exists()


@pytest.mark.parametrize("error, transient", [
    (TimeoutError("read timed out"), True),
    (ConnectionResetError("reset by peer"), True),
    (urllib.error.HTTPError("http://x", 503, "busy", {}, None), True),
    (urllib.error.HTTPError("http://x", 404, "not found", {}, None), False),
    (urllib.error.URLError(ConnectionRefusedError("refused")), True),
    (FileNotFoundError("no such file"), False),
    (ValueError("could not parse"), False),
    (steps.DataValidationError("batch rejected"), False),
    (None, False),
])
def test_only_transient_errors_are_retried(error, transient):
    assert steps.is_transient(error) is transient


def test_retries_back_off_exponentially():
    pytest.importorskip("prefect")
    from course_helpers.pipeline import flow

    assert flow.RETRY_DELAYS == [0.5, 1.0]
    assert flow.ingest.retries == 2 and flow.ingest.retry_condition_fn is flow.retry_if_transient
