"""Grading time per ordinary submission, per assignment and sandbox (targets: process < 10 s,
docker < 20 s), against grading with no sandbox in the same run.

    python benchmarks/grading.py [--students 3] [--sandboxes none,process,docker] [A ...]

Each batch grades ``--students`` copies of the instructor's solution (an honest, complete
submission) with ``grade_batch``; the time per submission is the median of the CSV's
``seconds`` column. Prints the load average too: timings on a shared machine move with it.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from course_helpers import grading
from course_helpers.grading.sandbox import docker_sandbox_available

DEFAULT = ["a00_warmup", "a01_simple_system", "a02_scaling", "a04_deployment_spec"]


def per_submission(assignment: str, sandbox: str, students: int, tmp: Path) -> float:
    subs = tmp / f"{assignment}-{sandbox}"
    source = grading.course_dir() / "source" / assignment
    for i in range(students):
        for nb in source.glob("*.ipynb"):
            (subs / f"s{i}").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(nb, subs / f"s{i}" / nb.name)
    out = tmp / f"out-{assignment}-{sandbox}"
    grading.grade_batch(assignment, str(subs), str(out), sandbox=sandbox)
    with open(out / "grades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # the solution must keep its full autograded marks here, or the timing means nothing
    bad = [r for r in rows if r["status"] != "ok" or r["tamper"] or
           float(r["score"]) != float(r["max_score"]) - float(r["manual_pending"])]
    if bad:
        sys.exit(f"{assignment} ({sandbox}): the solution did not grade cleanly: {bad[0]}")
    return statistics.median(float(r["seconds"]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", default=DEFAULT)
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--sandboxes", default="none,process,docker")
    args = parser.parse_args()
    sandboxes = args.sandboxes.split(",")
    if "docker" in sandboxes and not docker_sandbox_available()[0]:
        print(f"docker sandbox skipped: {docker_sandbox_available()[1]}")
        sandboxes.remove("docker")
    results: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for a in args.assignments:
            for box in sandboxes:
                results[a, box] = per_submission(a, box, args.students, Path(tmp))
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    for (a, box), seconds in results.items():
        print(f"{a}.{box}_s_per_submission={seconds:.1f}")
        if box != "none" and (a, "none") in results:
            print(f"{a}.{box}_vs_none={seconds / results[a, 'none']:.2f}")


if __name__ == "__main__":
    main()
