"""a10's artefact builder on a capstone run directory as the capstone writes it: extra keys,
``pss_mb``, the set-up's day 0 and samples with empty counts, a missing memory sample."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from tests.helpers import ROOT, load_script

pytestmark = pytest.mark.grading

SOURCE = ROOT / "assignments" / "source" / "a10_capstone"


@pytest.fixture(scope="module")
def gen():
    return load_script(SOURCE / "instructor_artefacts.py", "a10_instructor_artefacts")


def _run_dir(gen, path, days=None):
    """The stored real run written back as a run directory, with what trimming removed."""
    base = json.loads(gen.BASE.read_text())
    report = dict(base["report"], slo={"availability": base["report"]["availability"]},
                  plan={"days": 7}, gates=[], skew=[], restarts={})
    report.pop("availability")
    tl = pd.read_csv(io.StringIO(base["timeline"]), dtype={"version": str})
    mem = pd.read_csv(io.StringIO(base["memory"])).assign(pss_mb=lambda m: m.rss_mb / 2)
    if days:
        report["days"] = report["days"][:days]
    path.mkdir()
    (path / "capstone.json").write_text(json.dumps(report))
    return path, tl, mem


def test_builder_plants_into_a_run_with_empty_counts_and_gaps(gen, tmp_path):
    run, tl, mem = _run_dir(gen, tmp_path / "run")
    assert tl[tl.day == 0].requests.isna().all()  # the set-up: no traffic measured yet
    gap = tl.index[tl.day == 6][1]
    tl.loc[gap, ["requests", "failed_requests", "rps", "error_ratio"]] = None
    mem = mem.drop(mem.index[(mem.day == 5) & (mem.process == "prometheus")][:1])
    tl.to_csv(run / "timeline.csv", index=False)
    mem.to_csv(run / "memory.csv", index=False)

    base = gen.trim(run)
    answers, files = gen.make(1, base)  # refuses unless the solution finds what was planted
    hidden, _ = gen.make(2, base, first_day_dropped=True)

    assert answers["missed"] == [2] and hidden["missed"] == [1]  # the run's kill day
    report = json.loads(files["capstone.json"])
    assert set(report) == set(gen.REPORT_KEYS)
    assert set(report["summary"]) == set(gen.SUMMARY_KEYS)
    out = pd.read_csv(io.StringIO(files["timeline.csv"]))
    assert out.loc[gap, ["requests", "failed_requests"]].isna().all()
    assert out.requests.dropna().eq(out.requests.dropna().round()).all()
    planted = report["days"][1]["failed_requests"]
    assert planted == out[out.day == 2].failed_requests.sum() > 0
    assert "pss_mb" not in files["memory.csv"].splitlines()[0]


def test_builder_refuses_a_short_week_in_one_sentence(gen, tmp_path):
    run, tl, mem = _run_dir(gen, tmp_path / "run", days=5)
    tl.to_csv(run / "timeline.csv", index=False)
    mem.to_csv(run / "memory.csv", index=False)
    with pytest.raises(SystemExit, match="needs 7 or more days, all ok, and one replica kill"):
        gen.trim(run)
    with pytest.raises(SystemExit, match="is not a capstone run directory"):
        gen.trim(tmp_path / "nowhere")
