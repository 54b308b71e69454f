"""Instructor only: a10's artefacts, a real capstone run with problems planted in it.

Never released (``nbgrader_config.py`` ignores ``instructor_*``, ``course student-copy`` drops
them). To regenerate everything from a fresh run (about 3.5 min at load 2-7 on 2 cores), from
the repository root::

    mlops-course capstone run --profile classroom --days 7 --seed 0 --out /tmp/a10-run
    python assignments/source/a10_capstone/instructor_artefacts.py --base /tmp/a10-run

``--base`` cuts the run directory to the capstone contract's keys and columns (``trim``: rss
only; no gates, skew or plan) and stores it beside this file (``instructor_base.json``);
without it the stored run is used, so ``python .../instructor_artefacts.py`` (or ``--check``)
needs no run. The students' week (``data/``) is that run with seed 1's problems; the hidden
week (zlib + base64 in the notebook's cell ``test_find_leaks_hidden``) is the same run seen
from its second day (day 1 dropped, later days renumbered, so its replica kill falls on day 1
and every planted answer differs) with seed 2's.

Everything else is the run's own: traffic, memory (the killed replica reloading, the replicas
restarted by the promotion), events, canaries, lineage. Planted, per seed:

* a leak in one production replica (+8 %/day of its rss) from a day after the last promotion
  whose day before was flat;
* a scheduled retrain on a quiet day after the last registration whose version passes the
  gate (the run's own gate text) and is then neither promoted nor rolled back;
* failures in the two samples after the run's real replica kill (in the real run nginx
  retried every request on the other replica) and a latency ticket, while the page never
  fired: 1.8-3 % of the requests of the 5-sample window with the fewest requests.

The day records' failures and error budget (the run's own SLO) follow the planted failures;
``summary.peak_mb`` adds the leak's largest extra. Before anything is written, the
notebook's own solution must find exactly the planted problems (a run with a problem of its
own, e.g. a version the model gate refused, which is never promoted nor rolled back, is
refused: use another run).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "a10_capstone.ipynb"
BASE = HERE / "instructor_base.json"
SEED, HIDDEN_SEED = 1, 2
PAGE = "ModelServerAvailabilityBurnRateFast"
TICKET = "ModelServerLatencyBurnRateSlow"
PAGE_RATIO, WINDOW = 0.0144, 5
LEAK_PER_DAY = 0.08
DAY_KEYS = ("day", "rows", "drift_score", "alerts", "pipeline_runs", "registered", "promoted",
            "rolled_back", "requests", "failed_requests", "p95_ms", "slo_budget_left",
            "cost_per_1m", "status")
SUMMARY_KEYS = ("drift_day", "drift_detected_day", "retrained_day", "bad_model_day",
                "bad_model_max_weight", "slo_met", "wall_s", "peak_mb")
TIMELINE_COLUMNS = ["t_s", "day", "requests", "failed_requests", "rps", "p95_ms", "error_ratio",
                    "drift_score", "version", "canary_weight", "alerts_firing"]
MEMORY_COLUMNS = ["t_s", "day", "process", "rss_mb"]
REPORT_KEYS = ("profile", "seed", "days", "summary", "events", "canaries", "lineage")


def trim(run_dir: Path) -> dict:
    """The contract's part of a capstone run directory: ``{"report", "timeline", "memory"}``
    (the CSVs as text); one sentence (SystemExit) when the run is not a usable week."""
    try:
        report = json.loads((run_dir / "capstone.json").read_text())
        tl = pd.read_csv(run_dir / "timeline.csv", dtype={"version": str})
        mem = pd.read_csv(run_dir / "memory.csv")
    except (OSError, ValueError) as err:
        raise SystemExit(f"{run_dir} is not a capstone run directory ({err})") from None
    bad = [d["day"] for d in report["days"] if d.get("status", "ok") != "ok"]
    kills = [e for e in report["events"] if e["kind"] == "replica_killed"]
    if len(report["days"]) < 7 or bad or len(kills) != 1:
        raise SystemExit(f"{run_dir}: a base run needs 7 or more days, all ok, and one replica "
                         f"kill (`mlops-course capstone run --profile classroom --days 7`); it "
                         f"has {len(report['days'])} days, failed days {bad}, {len(kills)} kills")
    out = {k: report[k] for k in REPORT_KEYS}
    out["days"] = [{k: d.get(k) for k in DAY_KEYS} for d in report["days"]]
    out["summary"] = {k: report["summary"][k] for k in SUMMARY_KEYS}
    out["availability"] = report.get("slo", {}).get("availability", 0.99)
    return {"report": out, "timeline": tl[TIMELINE_COLUMNS].to_csv(index=False),
            "memory": mem[MEMORY_COLUMNS].to_csv(index=False)}


def load(base: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(report, timeline, memory) of a trimmed run; counts as nullable integers (a sample
    taken while no traffic was measured, as in the set-up's day 0, has empty counts)."""
    report = json.loads(json.dumps(base["report"]))
    tl = pd.read_csv(io.StringIO(base["timeline"]), dtype={"version": str})
    for c in ("requests", "failed_requests", "alerts_firing"):
        tl[c] = tl[c].round().astype("Int64")
    mem = pd.read_csv(io.StringIO(base["memory"]))
    return report, tl, mem


def drop_first_day(report: dict, tl: pd.DataFrame,
                   mem: pd.DataFrame) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The week seen from its second day: day 1 removed, later days renumbered (day 0, the
    set-up, stays)."""
    report["days"] = [{**d, "day": d["day"] - 1} for d in report["days"] if d["day"] != 1]
    report["events"] = [{**e, "day": e["day"] - 1} for e in report["events"] if e["day"] != 1]
    report["canaries"] = [{**c, "day": c["day"] - 1} for c in report["canaries"]]
    s = report["summary"]
    for k in ("drift_day", "drift_detected_day", "retrained_day", "bad_model_day"):
        s[k] = s[k] - 1 if s[k] else s[k]
    tl, mem = (df[df.day != 1].reset_index(drop=True) for df in (tl, mem))
    for df in (tl, mem):
        df.loc[df.day > 1, "day"] -= 1
    return report, tl, mem


def plant(report: dict, tl: pd.DataFrame, mem: pd.DataFrame, rng: np.random.Generator) -> dict:
    """The three problems, in place; returns the answers (as the notebook's tasks state them)."""
    days = report["days"]
    last = days[-1]["day"]
    ev = report["events"]
    # the leak: a replica, from a day after the last promotion (a restart would reset it)
    # whose day before was flat
    replicas = sorted(p for p in mem.process.unique() if re.fullmatch(r".+-stable-r\d+", p))
    promoted = max([d["day"] for d in days if d["promoted"]] or [0])
    med = mem.groupby(["process", "day"]).rss_mb.median()
    pairs = [(r, s) for r in replicas for s in range(max(promoted + 1, 3), last - 1)
             if med[r][s - 1] / med[r][s - 2] - 1 < 0.02]  # flat before (no kill's reload)
    if not pairs:
        raise SystemExit("the base run has no replica with a flat day after its last promotion "
                         "and three days left to plant the leak in")
    p, start = pairs[int(rng.integers(len(pairs)))]
    per_day = mem.groupby(["day", "process"]).day.transform("size")
    frac = mem.day - 1 + (mem.groupby(["day", "process"]).cumcount() + 0.5) / per_day
    sel = (mem.process == p) & (frac > start - 1)
    extra = mem.loc[sel, "rss_mb"] * LEAK_PER_DAY * (frac[sel] - (start - 1))
    mem.loc[sel, "rss_mb"] = (mem.loc[sel, "rss_mb"] + extra).round(1)
    report["summary"]["peak_mb"] = round(report["summary"]["peak_mb"] + float(extra.max()), 1)
    # the stuck version: a scheduled retrain on a quiet day after the last registration
    registered = [int(v) for d in days for v in d["registered"]]
    busy = {e["day"] for e in ev if e["kind"] != "batch"}
    quiet = [d["day"] for d in days if d["day"] not in busy
             and d["day"] > max([d["day"] for d in days if d["registered"]] or [0])
             and d["day"] + 1 <= last]
    if not quiet:
        raise SystemExit("the base run has no quiet day after its last registration to plant "
                         "the stuck retrain on")
    s = int(rng.choice(quiet))
    v = str(max(registered + [1]) + 1)
    champion = "v" + tl.loc[tl.day == s, "version"].dropna().iloc[-1]  # in production then
    gate = next(e for e in ev if e["kind"] == "gate" and ": passed (" in e["detail"])
    checks = gate["detail"].split(": passed (", 1)[1]
    times = tl.loc[tl.day == s, "t_s"].to_numpy()
    t0 = float(times[1] if len(times) > 1 else times[0])
    name = next(e for e in ev if e["kind"] == "registered")["detail"].split()[0]
    for i, (kind, detail) in enumerate([
            ("pipeline_run", f"scheduled retrain: {name} v{v}"),
            ("registered", f"{name} v{v}"),
            ("gate", f"v{v} vs production {champion}: passed ({checks}")]):
        ev.append({"t_s": round(t0 + 0.4 * i, 2), "day": s, "kind": kind, "detail": detail})
    day = days[s - days[0]["day"]]
    day["pipeline_runs"] += 1
    day["registered"].append(v)
    code = next((x["code"] for x in report["lineage"] if x["how"].startswith("pipeline")), None)
    report["lineage"].append({"version": v, "how": "pipeline (scheduled)",
                              "run_id": rng.bytes(16).hex(), "data": rng.bytes(6).hex(),
                              "code": code})
    # the missed page: failures right after the real replica kill, a ticket, no page
    kill = next(e for e in ev if e["kind"] == "replica_killed")
    m = kill["day"]
    whole = tl.index[tl.day == m]
    part = tl[(tl.day == m) & (tl.t_s > kill["t_s"]) & (tl.requests.fillna(0) > 0)].index[:2]
    n = min(WINDOW, len(whole))
    sums = tl.loc[whole, "requests"].astype(float).rolling(n).sum()  # NaN: an empty count
    ends = sums.loc[part[-1]:].iloc[:n - len(part) + 1].dropna()
    if part.empty or ends.empty:
        raise SystemExit(f"day {m} has no {n} samples with counts around its replica kill")
    failed = math.ceil(float(rng.uniform(0.018, 0.03)) * float(ends.min()))
    share = tl.loc[part, "requests"] / tl.loc[part, "requests"].sum()
    bad = (share * failed).round().astype(int)
    bad.iloc[0] += failed - int(bad.sum())
    tl.loc[part, "failed_requests"] += bad.to_numpy()
    tl.loc[part, "error_ratio"] = (tl.loc[part, "failed_requests"]
                                   / tl.loc[part, "requests"]).astype(float).round(4)
    tl.loc[part[-1:], "alerts_firing"] += 1
    day = days[m - days[0]["day"]]
    day["alerts"] = sorted(set(day["alerts"]) | {TICKET})
    day["failed_requests"] += failed
    spent = requests = 0
    for d in days:
        requests, spent = requests + d["requests"], spent + d["failed_requests"]
        allowed = (1 - report["availability"]) * requests
        d["slo_budget_left"] = round(max(0.0, 1 - spent / allowed), 4) if allowed else 1.0
    report["summary"]["slo_met"] = bool(days[-1]["slo_budget_left"] > 0
                                        and report["summary"]["slo_met"])
    ev.sort(key=lambda e: e["t_s"])
    return {"leaks": [{"process": p, "start_day": start}], "stuck": [{"version": v, "day": s}],
            "missed": [m]}


def make(seed: int, base: dict, first_day_dropped: bool = False) -> tuple[dict, dict[str, str]]:
    """(planted answers, {file name: text}) of one artefact set, checked by the solution."""
    report, tl, mem = load(base)
    if first_day_dropped:
        report, tl, mem = drop_first_day(report, tl, mem)
    answers = plant(report, tl, mem, np.random.default_rng(seed))
    report.pop("availability")
    report = {k: report[k] for k in REPORT_KEYS}
    files = {"capstone.json": json.dumps(report, indent=1) + "\n",
             "timeline.csv": tl[TIMELINE_COLUMNS].to_csv(index=False),
             "memory.csv": mem[MEMORY_COLUMNS].to_csv(index=False)}
    expected = sorted(
        [{"day": x["start_day"], "kind": "memory_leak", "subject": x["process"]}
         for x in answers["leaks"]]
        + [{"day": x["day"], "kind": "stuck_version", "subject": x["version"]}
           for x in answers["stuck"]]
        + [{"day": d, "kind": "missed_alert", "subject": "replica_killed"}
           for d in answers["missed"]], key=lambda f: (f["day"], f["kind"]))
    found = solution()["diagnose"](*read(files))
    if found != expected:
        raise SystemExit(f"the solution finds {found} in seed {seed}'s week, not only the "
                         f"planted {expected}: plant into another run")
    return answers, files


def read(files: dict[str, str]) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The artefacts as the notebook's ``load_run`` reads them."""
    return (json.loads(files["capstone.json"]),
            pd.read_csv(io.StringIO(files["timeline.csv"]), dtype={"version": str}),
            pd.read_csv(io.StringIO(files["memory.csv"])))


def solution() -> dict:
    """The notebook's solution functions (cells find_leaks, find_stuck, missed_alerts,
    diagnose)."""
    nb = json.loads(NOTEBOOK.read_text())
    ns: dict = {"pd": pd}
    for c in nb["cells"]:
        if c["metadata"].get("nbgrader", {}).get("grade_id") in (
                "find_leaks", "find_stuck", "missed_alerts", "diagnose"):
            exec("".join(c["source"]), ns)  # noqa: S102 - the course's own notebook
    return ns


def pack(answers: dict, files: dict[str, str]) -> str:
    """The hidden set as Python source lines: one base64 string of zlib-compressed JSON."""
    blob = base64.b64encode(zlib.compress(json.dumps({"answers": answers, "files": files})
                                          .encode(), 9)).decode()
    lines = [blob[i:i + 96] for i in range(0, len(blob), 96)]
    return "_SECOND = (\n" + "".join(f'    "{ln}"\n' for ln in lines) + ")\n"


SECOND_BLOCK = re.compile(r"^_SECOND = \(\n(?:    \"[A-Za-z0-9+/=]*\"\n)*\)\n", re.M)


def with_second(nb_text: str, second: dict, files: dict[str, str]) -> str:
    """The notebook's JSON with the hidden set packed into cell ``test_find_leaks_hidden``."""
    nb = json.loads(nb_text)
    cell = next(c for c in nb["cells"]
                if c["metadata"].get("nbgrader", {}).get("grade_id") == "test_find_leaks_hidden")
    src = "".join(cell["source"])
    if not SECOND_BLOCK.search(src):
        raise SystemExit("no `_SECOND = (...)` block in cell test_find_leaks_hidden")
    cell["source"] = SECOND_BLOCK.sub(lambda _: pack(second, files), src).splitlines(keepends=True)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def both() -> tuple[tuple[dict, dict], tuple[dict, dict]]:
    """The students' set and the hidden set, from the stored run."""
    base = json.loads(BASE.read_text())
    return make(SEED, base), make(HIDDEN_SEED, base, first_day_dropped=True)


def check() -> list[str]:
    """What differs between the committed artefacts and a fresh build ([] if none)."""
    (_, files), (second, files2) = both()
    out = [f"data/{n} differs from seed {SEED}'s" for n, text in files.items()
           if not (HERE / "data" / n).exists() or (HERE / "data" / n).read_text() != text]
    text = NOTEBOOK.read_text()
    if with_second(text, second, files2) != text:
        out.append(f"the hidden set in {NOTEBOOK.name} differs from seed {HIDDEN_SEED}'s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="a capstone run directory to plant into")
    ap.add_argument("--check", action="store_true",
                    help="only check that the committed files are what the stored run gives")
    args = ap.parse_args()
    if args.check:
        problems = check()
        print("\n".join(problems) or "OK: data/ and the hidden set are what the stored run gives")
        raise SystemExit(1 if problems else 0)
    if args.base is not None:
        BASE.write_text(json.dumps(trim(args.base), indent=1) + "\n")
    (answers, files), (second, files2) = both()
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    print(f"students' set (seed {SEED}):", json.dumps(answers))
    print(f"hidden set (seed {HIDDEN_SEED}):   ", json.dumps(second))
    NOTEBOOK.write_text(with_second(NOTEBOOK.read_text(), second, files2))
    size = sum((out / n).stat().st_size for n in files)
    print(f"wrote {out} ({size / 1024:.0f} KB) and the hidden set into {NOTEBOOK.name}; the "
          f"stored run {BASE.name} takes {BASE.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
