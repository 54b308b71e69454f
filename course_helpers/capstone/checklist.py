"""Best practices scored from evidence, in the spirit of the ML Test Score.

Breck, Cai, Nielsen, Salib and Sculley, "The ML Test Score: A Rubric for ML Production
Readiness and Technical Debt Reduction" (IEEE Big Data 2017) lists tests in four areas:
data, model, ML infrastructure and monitoring. Here each item the capstone can check is
checked from the run directory's own artefacts (``capstone.json``, ``timeline.csv``, the
canary reports) with the evidence quoted; items no artefact can show are listed as not
checked and do not count. One point per passing item (the paper gives half a point for a
manual test, a full point for an automated one: every check here is automated), and
``ml_test_score`` is the paper's final score: the lowest area score.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

AREAS = ("data", "model", "infrastructure", "monitoring")


@dataclasses.dataclass
class Item:
    area: str
    item: str
    passed: bool | None  # None: not checked (no artefact shows it)
    evidence: str


@dataclasses.dataclass
class Checklist:
    """The scored items; ``score`` passing items, ``checked`` items that could be checked."""

    items: list[Item]

    @property
    def score(self) -> int:
        return sum(1 for i in self.items if i.passed is True)

    @property
    def checked(self) -> int:
        return sum(1 for i in self.items if i.passed is not None)

    @property
    def not_checked(self) -> list[str]:
        return [i.item for i in self.items if i.passed is None]

    @property
    def ml_test_score(self) -> int:
        """The paper's aggregate: the minimum over the four areas of their points."""
        return min(sum(1 for i in self.items if i.area == a and i.passed is True)
                   for a in AREAS)

    def table(self):
        """One row per item: area, item, result (PASS / FAIL / not checked), evidence."""
        import pandas as pd

        return pd.DataFrame([{"area": i.area, "item": i.item,
                              "result": {True: "PASS", False: "FAIL", None: "not checked"}[i.passed],
                              "evidence": i.evidence} for i in self.items])

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "checked": self.checked,
                "ml_test_score": self.ml_test_score,
                "items": [dataclasses.asdict(i) for i in self.items]}

    def __str__(self) -> str:
        return f"{self.score} of {self.checked} checked items pass ({len(self.items) - self.checked} not checked)"


def _lines(gates: list[dict], name: str) -> list[str]:
    return [ln.strip() for g in gates if g.get("stage") == "model" for ln in g.get("lines", [])
            if f" {name}:" in ln]


def evaluate(data: dict, run_dir: Path | None = None) -> Checklist:
    """Score a parsed ``capstone.json`` (``run_dir`` lets items read other artefacts)."""
    days = data.get("days", [])
    events = data.get("events", [])
    gates = data.get("gates", [])
    canaries = data.get("canaries", [])
    lineage = data.get("lineage", [])
    s = data.get("summary", {})
    plan = data.get("plan", {})
    kinds = [e["kind"] for e in events]
    items: list[Item] = []

    def add(area: str, item: str, passed: bool | None, evidence: str) -> None:
        items.append(Item(area, item, None if passed is None else bool(passed), evidence))

    # -- data ------------------------------------------------------------------------------
    data_gates = [g for g in gates if g.get("stage") == "data"]
    add("data", "every batch is validated against a schema (the data contract)",
        bool(data_gates) and len(data_gates) >= len([d for d in days if d.get("rows")])
        and all(g["passed"] for g in data_gates) if data_gates else None if not days else False,
        f"{sum(g['passed'] for g in data_gates)} of {len(data_gates)} daily batches passed the "
        f"data gate (lesson 05)" if data_gates else "no batch was validated")
    drift_days = [d for d in days if d.get("drift_score") is not None]
    add("data", "input distributions are compared with the training data every day",
        bool(days) and len(drift_days) == len(days),
        f"a drift score on {len(drift_days)} of {len(days)} days"
        + (f"; max {max(d['drift_score'] for d in drift_days):.3f}" if drift_days else ""))
    add("data", "features' privacy controls and the cost of each feature are reviewed", None,
        "a review, not an artefact of this run")

    # -- model -----------------------------------------------------------------------------
    model_gates = [g for g in gates if g.get("stage") == "model"]
    gated = {str(g["version"]) for g in model_gates if g.get("champion")}
    rolled_out = {str(c["version"]) for c in canaries}
    add("model", "every new version is gated against the production model before serving",
        bool(rolled_out) and rolled_out <= gated if model_gates else None,
        f"{len(model_gates)} model gate run(s) against the champion; versions that reached a "
        f"canary: {sorted(rolled_out) or 'none'}, all gated first" if model_gates else
        "no new version this week")
    slices = _lines(gates, "weakest slice")
    add("model", "model quality is checked on slices of the data",
        bool(slices) and all(ln.startswith("PASS") for ln in slices) if slices else None,
        "; ".join(slices[:2]) or "no model gate ran")
    add("model", "a stale model is retrained on fresh data (drift triggers a retrain)",
        s.get("retrained_day") is not None if s.get("drift_day") else None,
        f"drift on day {s.get('drift_day')}, retrained on day {s.get('retrained_day')}")
    add("model", "hyperparameters were tuned and a simpler baseline compared", None,
        "not part of this run (lesson 03's presets compare kinds offline)")

    # -- infrastructure --------------------------------------------------------------------
    traced = [t for t in lineage if t.get("run_id") and t.get("data") and t.get("code")]
    add("infrastructure", "every model in production traces to its data and code in MLflow",
        len(traced) == len(lineage) if lineage else None,
        f"{len(traced)} of {len(lineage)} versions have an MLflow run with data and code "
        f"references" + ("" if len(traced) == len(lineage) else ": untraced "
                         + ", ".join(f"v{t['version']} ({t.get('how')})" for t in lineage
                                     if t not in traced)))
    contract = _lines(gates, "serving contract")
    skew = data.get("skew", [])
    evidence = [f"served vs offline probabilities of v{k['version']} on {k['rows']} rows: "
                + (f"max |diff| {k['max_abs_diff']:.2g}" if "max_abs_diff" in k
                   else k.get("error", "?")) for k in skew[:2]]
    if contract:
        evidence.append(f"{contract[0]} ({len(contract)} gate checks)")
    add("infrastructure", "training/serving skew is tested (the server answers as the trained "
        "model does)",
        (all(k["passed"] for k in skew) and all(ln.startswith("PASS") for ln in contract))
        if skew or contract else None,
        "; ".join(evidence) or "no skew check and no model gate")
    steps = plan.get("canary_steps") or []
    second = steps[1] if len(steps) > 1 else None
    bad = [c for c in canaries if c.get("bad")]
    add("infrastructure", "a bad model is caught by a canary and rolled back automatically",
        bool(bad) and all(c["outcome"] == "rolled_back" and second is not None
                          and c["max_weight"] <= second for c in bad) if bad else None,
        "; ".join(f"v{c['version']} {c['outcome']} at {c['max_weight']}% (second step "
                  f"{second}%)" for c in bad) or "no bad model this week")
    good = [c for c in canaries if not c.get("bad")]
    add("infrastructure", "new versions reach production through a gradual rollout",
        bool(good) and all(c["outcome"] in ("promoted", "rolled_back") for c in good)
        if good else None,
        "; ".join(f"v{c['version']}: {' -> '.join(str(s['weight']) for s in c['steps'])}% "
                  f"{c['outcome']}" for c in good) or "no retrained version this week")
    killed, healed = kinds.count("replica_killed"), kinds.count("replica_healed")
    add("infrastructure", "the deployment heals after a replica crash",
        killed > 0 and healed >= killed if killed else None,
        next((e["detail"] for e in events if e["kind"] == "replica_healed"),
             f"{killed} kill(s), {healed} heal(s)"))

    # -- monitoring ------------------------------------------------------------------------
    alerted = [e for e in events if e["kind"] == "alert"]
    add("monitoring", "the drift alert is tested end to end (it fired and started the pipeline)",
        s.get("drift_detected_day") is not None and "pipeline_run" in kinds
        if s.get("drift_day") else None,
        (alerted[0]["detail"] + f" (day {alerted[0]['day']})") if alerted else
        "no alert reached the receiver")
    slo = data.get("slo", {})
    left = days[-1].get("slo_budget_left") if days else None
    add("monitoring", "the serving SLO is measured and held over the week",
        s.get("slo_met") if days else None,
        f"availability objective {slo.get('availability')}, error budget left "
        f"{left}; p95 per day " + ", ".join(str(d.get("p95_ms")) for d in days) + " ms")
    has_perf: bool | None = None  # not checked without a run directory to read
    if run_dir is not None:
        has_perf = False
    if run_dir is not None and (run_dir / "timeline.csv").exists():
        import pandas as pd

        tl = pd.read_csv(run_dir / "timeline.csv")
        has_perf = bool(len(tl)) and tl["p95_ms"].notna().any() and tl["rps"].notna().any()
        perf_ev = f"{len(tl)} timeline samples with throughput and p95"
    else:
        perf_ev = "no timeline.csv" if run_dir is not None else "no run directory given"
    add("monitoring", "serving latency and throughput are monitored continuously", has_perf,
        perf_ev)
    add("monitoring", "prediction quality is monitored with delayed labels", None,
        "labels of served traffic are not collected in this run")
    return Checklist(items)


def checklist(run_dir: str | Path, store: bool = True) -> Checklist:
    """Score the run in ``run_dir``; ``store`` writes it into ``capstone.json`` (key
    ``checklist``)."""
    from ..errors import CourseError

    run_dir = Path(run_dir)
    path = run_dir / "capstone.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CourseError(f"{path} is missing or not JSON: run `mlops-course capstone run` "
                          "first") from None
    ck = evaluate(data, run_dir)
    if store:
        data["checklist"] = ck.to_dict()
        tmp = run_dir / ".capstone.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(path)
    return ck
