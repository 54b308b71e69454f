"""The flagship demo behind `make demo`.

Until the scaling showdown lands (lesson 02), it runs the doctor and lesson 00 headless
and writes both to the output directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import config


def run_demo(profile: str | None = None, out: str | Path | None = None) -> int:
    """Run the demo; returns a process exit code. Writes doctor.json and the executed lesson."""
    from .doctor import render, report
    from .notebooks import notebook_paths, run_notebook

    prof = config.get_profile(profile)
    out_dir = Path(out) if out else config.workspace_dir("demo")
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = report(prof.name)
    print(render(rep), "\n", flush=True)
    (out_dir / "doctor.json").write_text(json.dumps(rep, indent=2))
    lesson = notebook_paths(["00_welcome_and_setup"])[0]
    print(f"running {lesson.name} headless ({prof.name} profile) ...", flush=True)
    # run_notebook stops whatever the notebook left running; Ctrl-C is handled by the CLI.
    res = run_notebook(lesson, profile=prof.name, save_to=out_dir)
    (out_dir / "results.json").write_text(json.dumps(
        {"profile": prof.name, "backend": rep["backend"],
         "notebooks": [{"name": res.name, "ok": res.ok, "seconds": res.seconds,
                        "peak_rss_mb": res.peak_rss_mb, "error": res.error}]}, indent=2))
    status = "ok" if res.ok else f"FAILED: {res.error}"
    print(f"{res.name}: {res.seconds} s, peak {res.peak_rss_mb} MB, {status}")
    print(f"outputs in {out_dir}: doctor.json, results.json, {lesson.name} (executed)")
    return 0 if res.ok else 1
