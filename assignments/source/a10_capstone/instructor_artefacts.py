"""Instructor only: the seeded capstone artefacts of a10 and the problems planted in them.

Never released (``nbgrader_config.py`` ignores this file, ``course student-copy`` drops it).
Run from the repository root::

    python assignments/source/a10_capstone/instructor_artefacts.py [--base RUN_DIR]

It writes the students' set (seed 1) to ``data/`` beside the notebook and the hidden set
(seed 2) into the notebook's hidden test cell ``test_find_leaks_hidden`` (zlib + base64 of
the same three files, with the planted answers), and prints the planted answers of both.

The base week is a seeded simulation in the format of the capstone contract
(``capstone.json``, ``timeline.csv``, ``memory.csv``): 7 days of 20 samples 2 s apart, a
drift retrain whose canary finishes the next day, a bad model rolled back at the first
step, a scheduled retrain on the last day still in its canary when the week ends, and
harmless look-alikes in memory (the capstone driver growing ~1 %/day and prometheus ~0.7 %/day,
prefect jumping once by 30 %, the alert receiver growing for three days then freeing and
spiking while it runs the retrain, a killed replica reloading). Process names and memory
levels follow a capstone smoke run of 27 November 2026. ``--base`` takes
a real capstone run directory instead and keeps its traffic and memory (its own day count).
Planted on top, per seed: a leak in one replica from some day (+8 %/day of its rss), a
scheduled retrain that registers a version nobody promotes nor rolls back, and a replica
kill whose short error burst crosses the page threshold on a day the page never fired.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "a10_capstone.ipynb"
DAYS, PER_DAY, SAMPLE_S = 7, 20, 2.0
PAGE = "ModelServerAvailabilityBurnRateFast"
TICKET = "ModelServerLatencyBurnRateSlow"
DRIFT = "ModelInputDrift"
PAGE_RATIO = 0.0144  # 14.4 x the 0.1 % error budget (lesson 08's fast-burn page)
REPLICAS = ("capstone-stable-r0", "capstone-stable-r1")
BASE_MB = {"alert-receiver": 25.3, "alertmanager": 32.7, "capstone": 422.0,
           "capstone-stable-lb": 14.1, "capstone-stable-r0": 608.6, "capstone-stable-r1": 609.1,
           "prefect": 218.0, "prometheus": 51.2}
LEAK_PER_DAY = 0.08
TIMELINE_COLUMNS = ["t_s", "day", "requests", "failed_requests", "rps", "p95_ms", "error_ratio",
                    "drift_score", "version", "canary_weight", "alerts_firing"]
MEMORY_COLUMNS = ["t_s", "day", "process", "rss_mb"]


def roles(rng: np.random.Generator, days: int) -> dict:
    """Which day gets which event (distinct days, all before the last)."""
    drift = int(rng.integers(2, 4))
    free = [d for d in range(2, days) if d not in (drift, drift + 1)]
    bad, stuck, missed = (int(d) for d in rng.choice(free, size=3, replace=False))
    return {"drift": drift, "bad": bad, "stuck": stuck, "missed": missed,
            "leak_process": str(rng.choice(REPLICAS)),
            "leak_start": int(rng.integers(3, days - 1)),
            "step_day": int(rng.integers(2, days)), "grow_from": int(rng.integers(2, days - 2))}


def base_week(rng: np.random.Generator, r: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """A clean seeded week in the contract's format (no planted problem yet)."""
    rows, mem = [], []
    version, weight = "1", 0.0
    for day in range(1, DAYS + 1):
        ones = rng.choice(PER_DAY, size=3, replace=False)  # isolated single failures
        for i in range(PER_DAY):
            t = round(((day - 1) * PER_DAY + i + 1) * SAMPLE_S, 2)
            req = int(rng.integers(52, 92))
            fail = int(i in ones and i % 3 == 0)
            rows.append({"t_s": t, "day": day, "requests": req, "failed_requests": fail,
                         "p95_ms": round(float(rng.normal(24, 2)), 1),
                         "drift_score": round(float(rng.uniform(0.02, 0.06)), 3),
                         "version": version, "canary_weight": weight, "alerts_firing": 0})
            frac = day - 1 + (i + 0.5) / PER_DAY  # the day, as a fraction of the week
            for p, mb in BASE_MB.items():
                level = mb
                if p == "prometheus":
                    level *= 1 + 0.007 * frac
                if p == "capstone":
                    level *= 1 + 0.01 * frac
                if p == "prefect" and day >= r["step_day"]:
                    level *= 1.3
                if p == "alert-receiver":
                    grow = min(max(frac - (r["grow_from"] - 1), 0), 3)
                    level *= 1 + 0.06 * grow if frac < r["grow_from"] + 2.5 else 1.0
                    if day == r["drift"] and 7 <= i < 10:  # it runs the retrain: a spike
                        level = 474.0
                mem.append({"t_s": t, "day": day, "process": p,
                            "rss_mb": round(level * (1 + float(rng.normal(0, 0.004))), 1)})
    tl, mem_df = pd.DataFrame(rows), pd.DataFrame(mem)
    days = [{"day": d, "rows": int(rng.integers(1900, 2100)), "drift_score": 0.0, "alerts": [],
             "pipeline_runs": 0, "registered": [], "promoted": None, "rolled_back": None}
            for d in range(1, DAYS + 1)]
    return {"profile": "classroom", "days": days, "events": []}, tl, mem_df


class Week:
    """Adds the course's ordinary events (and the planted ones) to a base week."""

    def __init__(self, report: dict, tl: pd.DataFrame, mem: pd.DataFrame, rng) -> None:
        self.report, self.tl, self.mem, self.rng = report, tl, mem, rng
        self.next_version = 1 + max([int(v) for d in report["days"] for v in d["registered"]]
                                    + [1])

    def day(self, d: int) -> dict:
        return self.report["days"][d - 1]

    def event(self, d: int, kind: str, detail: str, at: int | None = None) -> None:
        """An event on day d, after the day's others (or at sample ``at`` of the day)."""
        times = self.tl.loc[self.tl.day == d, "t_s"].to_numpy()
        n = sum(e["day"] == d for e in self.report["events"])
        t = times[at] - 1.0 if at is not None else times[0] + 1.3 * n
        self.report["events"].append({"t_s": round(float(t), 2), "day": d, "kind": kind,
                                      "detail": detail})

    def register(self, d: int, why: str) -> str:
        v = str(self.next_version)
        self.next_version += 1
        self.day(d)["pipeline_runs"] += 1
        self.day(d)["registered"].append(v)
        self.event(d, "pipeline_run", f"training pipeline ({why})")
        self.event(d, "registered", f"simple-system v{v}")
        return v

    def burst(self, d: int, start: int, n: int, ratio: float) -> None:
        idx = self.tl.index[self.tl.day == d][start:start + n]
        failed = (self.tl.loc[idx, "requests"] * ratio).round().astype(int)
        self.tl.loc[idx, "failed_requests"] = failed

    def firing(self, d: int, alert: str, start: int, n: int = 4) -> None:
        self.day(d)["alerts"].append(alert)
        idx = self.tl.index[self.tl.day == d][start:start + n]
        self.tl.loc[idx, "alerts_firing"] += 1

    def set_version(self, d: int, start: int, version: str, weight: float = 0.0) -> None:
        idx = self.tl.index[(self.tl.day > d) | ((self.tl.day == d) & (
            self.tl.groupby("day").cumcount() >= start))]
        self.tl.loc[idx, "version"] = version
        self.tl.loc[idx, "canary_weight"] = weight


def ordinary(w: Week, r: dict) -> None:
    """Drift -> alert -> retrain -> canary over midnight; bad model rolled back at 10 %;
    a scheduled retrain on the last day still in its canary when the week ends."""
    for d in range(1, DAYS + 1):
        w.event(d, "batch", f"{w.day(d)['rows']} rows; data contract passed")
    d = r["drift"]
    w.tl.loc[w.tl.day >= d, "drift_score"] = np.round(w.rng.uniform(0.35, 0.5), 3)
    w.tl.loc[w.tl.day > d + 1, "drift_score"] = np.round(w.rng.uniform(0.03, 0.06), 3)
    w.event(d, "drift_alert", "3 feature(s) drifted (max PSI 0.41); gauges published")
    w.firing(d, DRIFT, 6)
    w.event(d, "alert", f"{DRIFT} firing: Alertmanager called the receiver, retrain started")
    v = w.register(d, "alert-triggered retrain")
    w.event(d, "gate", f"v{v} vs production v1: passed (PASS no regression)")
    for pct in (10, 25):
        w.event(d, "canary_step", f"v{v} at {pct}%: continue (every check passed: next step)")
    w.set_version(d, 14, "1", 0.25)
    w.event(d + 1, "canary_step", f"v{v} at 50%: continue (every check passed: next step)")
    w.event(d + 1, "canary_step", f"v{v} at 100%: promote (every check passed at 100 %)")
    w.event(d + 1, "promoted", f"v{v} replaced v1 in production (replicas restarted one at a time)")
    w.day(d + 1)["promoted"] = v
    w.set_version(d + 1, 6, v, 0.0)
    b = r["bad"]
    v = w.register(b, "scheduled retrain")
    w.event(b, "gate", f"v{v} vs production: passed (PASS no regression)")
    w.event(b, "canary_step", f"v{v} at 10%: rollback (failed error_ratio (0.30 > 0.01))")
    w.event(b, "rolled_back", f"v{v}: rolled_back at 10% (production stays on the champion)")
    w.day(b)["rolled_back"] = v
    w.burst(b, 8, 4, 0.03)
    w.firing(b, PAGE, 9, 3)
    last = DAYS
    v = w.register(last, "scheduled retrain")
    w.event(last, "gate", f"v{v} vs production: passed (PASS no regression)")
    w.event(last, "canary_step", f"v{v} at 10%: continue")
    w.set_version(last, 15, w.tl.loc[w.tl.day == last, "version"].iloc[0], 0.1)


def plant(w: Week, r: dict) -> dict:
    """The three problems the student must find; returns the answers."""
    s = r["stuck"]
    v = w.register(s, "scheduled retrain")
    w.event(s, "gate", f"v{v} vs production: passed (PASS no regression)")  # then nothing
    m = r["missed"]
    start = int(w.rng.integers(3, max(4, int((w.tl.day == m).sum()) - 8)))
    killed = next(p for p in REPLICAS if p != r["leak_process"])
    w.event(m, "replica_killed", f"SIGKILL {killed}", at=start)
    w.event(m, "replica_healed", f"{killed} restarted by the restart policy and ready 8.1 s "
                                 "after the kill", at=start + 4)
    rows = w.mem.index[(w.mem.day == m) & (w.mem.process == killed)][start:start + 3]
    w.mem.loc[rows, "rss_mb"] = [72.4, 301.5, 590.2]  # the replica reloads its model
    w.burst(m, start, 4, 0.04)  # 4 samples at 4 %: above 0.0144 over 5 samples, not over the day
    w.firing(m, TICKET, start + 2, 3)  # the latency ticket fired; the page never did
    p, ls = r["leak_process"], r["leak_start"]
    per_day = w.mem.groupby(["day", "process"]).day.transform("size")
    frac = w.mem.day - 1 + (w.mem.groupby(["day", "process"]).cumcount() + 0.5) / per_day
    sel = (w.mem.process == p) & (frac > ls - 1)
    w.mem.loc[sel, "rss_mb"] = (w.mem.loc[sel, "rss_mb"]
                                * (1 + LEAK_PER_DAY * (frac[sel] - (ls - 1)))).round(1)
    return {"leaks": [{"process": p, "start_day": ls}], "stuck": [{"version": v, "day": s}],
            "missed": [m]}


def renumber(report: dict, tl: pd.DataFrame, answers: dict) -> None:
    """Version numbers in the order of registration days (MLflow numbers them as they come)."""
    order = [v for d in report["days"] for v in d["registered"]]
    first = min((int(v) for v in order), default=2)
    new = {v: str(first + i) for i, v in enumerate(order)}
    for d in report["days"]:
        d["registered"] = [new[v] for v in d["registered"]]
        for k in ("promoted", "rolled_back"):
            d[k] = new.get(d[k], d[k])
    for e in report["events"]:
        e["detail"] = re.sub(r"\bv(\d+)\b", lambda m: "v" + new.get(m[1], m[1]), e["detail"])
    tl["version"] = tl["version"].map(lambda v: new.get(v, v))
    for s in answers["stuck"]:
        s["version"] = new[s["version"]]


def finish(report: dict, tl: pd.DataFrame, mem: pd.DataFrame, rng, r: dict, seed: int,
           real: bool = False) -> None:
    """Per-day totals, the error budget, summary: everything derived from the samples (of a
    real run, only what planting changed: failures, the error budget, peak memory)."""
    if not real:
        tl["rps"] = (tl.requests / SAMPLE_S).round(2)
    tl["error_ratio"] = (tl.failed_requests / tl.requests).round(4)
    tl["drift_score"] = tl["drift_score"].astype(float)
    budget = 0.001 * tl.requests.sum()
    spent = 0
    for rec in report["days"]:
        part = tl[tl.day == rec["day"]]
        spent += int(part.failed_requests.sum())
        if real:
            rec.update({"failed_requests": rec["failed_requests"] + int(
                part.failed_requests.sum() - part.planted_base.sum()),
                "slo_budget_left": round(max(0.0, 1 - spent / budget), 3)})
            continue
        rec.update({"drift_score": round(float(part.drift_score.max()), 3),
                    "requests": int(part.requests.sum()),
                    "failed_requests": int(part.failed_requests.sum()),
                    "p95_ms": round(float(part.p95_ms.quantile(0.95)), 1),
                    "slo_budget_left": round(max(0.0, 1 - spent / budget), 3),
                    "cost_per_1m": round(0.0384 / (part.rps.mean() * 3600) * 1e6, 3),
                    "status": "ok"})
    report["events"].sort(key=lambda e: e["t_s"])
    report["seed"] = seed
    if real:
        report["summary"]["peak_mb"] = round(float(mem.groupby("t_s").rss_mb.sum().max()), 1)
        report["summary"]["slo_met"] = bool(spent <= budget)
    else:
        report["summary"] = {"drift_day": r["drift"], "drift_detected_day": r["drift"],
                             "retrained_day": r["drift"], "bad_model_day": r["bad"],
                             "bad_model_max_weight": 0.1,
                             "slo_met": bool(spent <= budget),
                             "wall_s": float(tl.t_s.max()),
                             "peak_mb": round(float(mem.groupby("t_s").rss_mb.sum().max()), 1)}
    keys = ["profile", "seed", "days", "summary", "events"]
    report.update({k: report.pop(k) for k in keys})


def read_base(base: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """A real capstone run directory, cut to the contract's keys and columns."""
    global DAYS  # noqa: PLW0603 - a real run sets the week's length
    report = json.loads((base / "capstone.json").read_text())
    if len(report["days"]) < 6 or any(d.get("status", "ok") != "ok" for d in report["days"]):
        raise SystemExit(f"{base}: a base run needs 6 or more days, all ok (`mlops-course "
                         "capstone run --profile classroom --days 7`); this one has "
                         f"{[d.get('status', 'ok')[:40] for d in report['days']]}")
    DAYS = len(report["days"])
    report = {"profile": report["profile"], "days": report["days"],
              "events": report["events"], "summary": report["summary"]}
    tl = pd.read_csv(base / "timeline.csv", dtype={"version": str})
    tl[["requests", "failed_requests"]] = tl[["requests", "failed_requests"]].round().astype(int)
    mem = pd.read_csv(base / "memory.csv")[MEMORY_COLUMNS]
    return report, tl, mem


def roles_of(rng: np.random.Generator, report: dict, mem: pd.DataFrame) -> dict:
    """Roles in a real run: its own drift and bad-model days; the planted ones on quiet days."""
    s = report["summary"]
    busy = {e["day"] for e in report["events"] if e["kind"] not in ("batch", "drift_alert")}
    quiet = [d for d in range(2, DAYS) if d not in busy] or list(range(2, DAYS))
    stuck, missed = (int(d) for d in rng.choice(quiet, size=2, replace=len(quiet) < 2))
    replicas = sorted(p for p in mem.process.unique() if str(p).startswith("capstone-stable-r"))
    global REPLICAS  # noqa: PLW0603 - the real run's replica names
    REPLICAS = tuple(replicas)
    return {"drift": s["drift_day"], "bad": s["bad_model_day"], "stuck": stuck,
            "missed": missed, "leak_process": str(rng.choice(replicas)),
            "leak_start": int(rng.integers(3, DAYS - 1))}


def make(seed: int, base: Path | None = None) -> tuple[dict, dict[str, str]]:
    """(planted answers, {file name: text}) of one seeded artefact set."""
    rng = np.random.default_rng(seed)
    if base is not None:
        report, tl, mem = read_base(base)
        tl["planted_base"] = tl["failed_requests"]
        r = roles_of(rng, report, mem)
    else:
        r = roles(rng, DAYS)
        report, tl, mem = base_week(rng, r)
        w = Week(report, tl, mem, rng)
        ordinary(w, r)
    w = Week(report, tl, mem, rng)
    answers = plant(w, r)
    renumber(report, w.tl, answers)
    finish(report, w.tl, w.mem, rng, r, seed, real=base is not None)
    files = {"capstone.json": json.dumps(report, indent=1) + "\n",
             "timeline.csv": w.tl[TIMELINE_COLUMNS].to_csv(index=False),
             "memory.csv": w.mem[MEMORY_COLUMNS].to_csv(index=False)}
    answers["roles"] = r
    return answers, files


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
    answers = {k: v for k, v in second.items() if k != "roles"}
    cell["source"] = SECOND_BLOCK.sub(lambda _: pack(answers, files), src).splitlines(keepends=True)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def check(base: Path | None = None) -> list[str]:
    """What differs between the committed artefacts and a fresh seeded build ([] if none)."""
    _, files = make(1, base)
    second, files2 = make(2, base)
    out = [f"data/{n} differs from seed 1" for n, text in files.items()
           if not (HERE / "data" / n).exists() or (HERE / "data" / n).read_text() != text]
    text = NOTEBOOK.read_text()
    if with_second(text, second, files2) != text:
        out.append(f"the hidden set in {NOTEBOOK.name} differs from seed 2")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="a real capstone run directory to plant into")
    ap.add_argument("--check", action="store_true",
                    help="only check that the committed files are what the seeds give")
    args = ap.parse_args()
    if args.check:
        problems = check(args.base)
        print("\n".join(problems) or "OK: data/ and the hidden set are what seeds 1 and 2 give")
        raise SystemExit(1 if problems else 0)
    answers, files = make(1, args.base)
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    print("students' set (seed 1):", json.dumps(answers))
    second, files2 = make(2, args.base)
    print("hidden set (seed 2):   ", json.dumps(second))
    NOTEBOOK.write_text(with_second(NOTEBOOK.read_text(), second, files2))
    size = sum((out / n).stat().st_size for n in files)
    print(f"wrote {out} ({size / 1024:.0f} KB) and the hidden set into {NOTEBOOK.name}")


if __name__ == "__main__":
    main()
