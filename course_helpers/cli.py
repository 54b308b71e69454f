"""``mlops-course``: the course's command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from .config import PROFILE_NAMES
from .errors import CourseError


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import render, report

    rep = report(args.profile)
    print(json.dumps(rep, indent=2) if args.json else render(rep))
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from .supervisor import Supervisor

    stopped = Supervisor().cleanup(containers=not args.no_containers)
    print("\n".join(f"stopped {s}" for s in stopped) if stopped else "nothing was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    from .supervisor import Supervisor

    rows = Supervisor().status()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("nothing is running")
    for r in rows if not args.json else []:
        where = f"pid {r['pid']}" if r["kind"] == "process" else f"container {r['container'][:12]}"
        state = "running" if r["alive"] else "dead"
        print(f"{r['name']:<24} {state:<8} {where}  port {r['port'] or '-'}  log {r['log'] or '-'}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from . import grading

    if args.grade_cmd == "ci":
        return grading.grade_ci(args.assignments or None)
    if args.grade_cmd == "check":
        return grading.grade_check(args.assignment, args.notebook)
    if args.grade_cmd == "batch":
        if args.timeout:
            import os

            os.environ["MLOPS_GRADING_TIMEOUT"] = str(args.timeout)
        return grading.grade_batch(args.assignment, args.submissions_dir, args.out,
                                   sandbox=args.sandbox)
    if args.grade_cmd == "mutants":
        return grading.grade_mutants(args.assignments or None)
    if args.grade_cmd == "image":
        from .grading.sandbox import build_grader_image

        print(f"built {build_grader_image(args.tag)}")
        return 0
    if args.grade_cmd == "fetch":
        dest = args.dest or args.assignment
        for path in grading.release(args.assignment, dest):
            print(f"wrote {path}")
        print(f"work in {dest}/, then: mlops-course grade check {args.assignment} "
              f"{dest}/{args.assignment}.ipynb")
        return 0
    raise AssertionError(args.grade_cmd)


def _course(args: argparse.Namespace) -> int:
    from .grading import student

    if args.course_cmd == "release":
        names = student.release_here()
        print(f"released {len(names)} assignments into assignments/release/: {', '.join(names)}")
        return 0
    if args.course_cmd == "student-copy":
        copy = student.student_copy(args.dir, binder_repo=args.binder_repo, force=args.force)
        print(f"wrote the students' repository to {copy.dest}: {copy.files} files, "
              f"{len(copy.assignments)} released assignments; no solution or hidden-test text "
              f"found ({copy.secrets_checked} lines searched for)")
        if copy.overlaps:
            pairs = sorted({(f.origin.split("/")[0], f.path) for f in copy.overlaps})
            print(f"note: {len(copy.overlaps)} lines of answers also appear in the course's own "
                  "code, which the lessons teach with (students can read it):")
            for assignment, path in pairs:
                print(f"  {assignment}: {path}")
        print(f"next: cd {copy.dest} && git init && git add -A && git commit -m 'Course release', "
              f"push it as {args.binder_repo}; the Binder badge already points there")
        return 0
    raise AssertionError(args.course_cmd)


def _image(args: argparse.Namespace) -> int:
    from . import images

    if args.image_cmd == "base":
        print(images.build_base_image(args.name, force=args.force))
    elif args.image_cmd == "serving":
        from .deploy.docker import serving_image

        print(serving_image(verbose=True))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does

    from . import model as model_mod
    from .serving import serve

    uri = args.model or model_mod.prepare(args.kind, profile=args.profile)
    redis_url = args.redis_url
    if args.cache == "redis" and not redis_url:
        from .services import start_redis

        redis_url = start_redis(name=f"{args.name}-redis")
    handle = serve(uri, name=args.name, port=args.port, workers=args.workers, cache=args.cache,
                   redis_url=redis_url, db=args.db or "default", follow_alias_s=args.follow_alias)
    print(f"serving {uri} at {handle.url} ({args.workers} worker(s), cache {args.cache}, "
          f"log {handle.db or 'off'})")
    print(f"try: curl -s {handle.url}/version ; docs at {handle.url}/docs")
    if args.detach:
        print("running in the background: stop it with `mlops-course cleanup`")
        from . import supervisor

        supervisor._exit_hooks.clear()  # leave it running on purpose
        return 0
    print("Ctrl-C stops it")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping (in-flight requests finish, the prediction log is flushed) ...")
        handle.stop()
    return 0


def _notebooks(args: argparse.Namespace) -> int:
    from .notebooks import run_all

    results = run_all(args.notebooks or None, profile=args.profile)
    return 0 if all(r.ok for r in results) else 1


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(profile=args.profile, backend=args.backend, out=args.out)


# Modules that add their own subcommands: each defines ``register_cli(subparsers)`` that
# adds parsers with ``set_defaults(func=...)``. Keep their module-level imports light.
CLI_MODULES = ("course_helpers.tracking", "course_helpers.pipeline", "course_helpers.cicd",
               "course_helpers.features", "course_helpers.monitoring",
               "course_helpers.rollout", "course_helpers.capstone")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one sentence and a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mlops-course", description="MLOps with Cloud: course helpers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("doctor", help="what this machine gives the course")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--profile", choices=PROFILE_NAMES)
    p.set_defaults(func=_doctor)

    p = sub.add_parser("cleanup", help="stop every process and container the helpers started")
    p.add_argument("--no-containers", action="store_true", help="leave containers alone")
    p.set_defaults(func=_cleanup)

    p = sub.add_parser("status", help="list what the helpers are running")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)

    p = sub.add_parser("grade", help="nbgrader: instructor checks, student self-check, batches")
    gsub = p.add_subparsers(dest="grade_cmd", required=True, metavar="ACTION")
    g = gsub.add_parser("ci", help="solutions score full marks, blank releases score zero")
    g.add_argument("assignments", nargs="*", help="default: every assignment in source/")
    g = gsub.add_parser("check", help="run the visible tests of your notebook")
    g.add_argument("assignment")
    g.add_argument("notebook", nargs="?", help="path to your notebook (default: the released one)")
    g = gsub.add_parser("batch", help="autograde a folder of student notebooks")
    g.add_argument("assignment")
    g.add_argument("submissions_dir")
    g.add_argument("--out", help="where to write grades.csv and feedback (default: workspace)")
    g.add_argument("--timeout", type=int, help="seconds a cell may run (default 30)")
    g.add_argument("--sandbox", choices=["auto", "process", "docker"], default="auto",
                   help="where student code runs (default auto: docker if the grading image "
                        "is built, else process)")
    g = gsub.add_parser("mutants", help="plausible wrong solutions must lose points")
    g.add_argument("assignments", nargs="*", help="default: every assignment in source/")
    g = gsub.add_parser("image", help="build the docker sandbox's grading image (offline)")
    g.add_argument("--tag", help="image name (default: $MLOPS_GRADER_IMAGE or "
                                 "mlops-course/grader:latest)")
    g = gsub.add_parser("fetch", help="copy the blank student version of an assignment")
    g.add_argument("assignment")
    g.add_argument("dest", nargs="?", help="folder to write to (default: ./<assignment>)")
    p.set_defaults(func=_grade)

    p = sub.add_parser("course", help="the course repositories: released assignments, the "
                       "students' copy")
    csub = p.add_subparsers(dest="course_cmd", required=True, metavar="ACTION")
    g = csub.add_parser("release", help="generate assignments/release/ (the student versions) "
                        "in this checkout")
    g = csub.add_parser("student-copy", help="write the students' repository: no solutions, "
                        "no hidden tests")
    g.add_argument("dir", help="an empty folder outside this checkout")
    g.add_argument("--binder-repo", default="mlops-with-cloud/course-student",
                   metavar="OWNER/NAME", help="the students' GitHub repository, where the "
                   "copy's Binder badge points (default: %(default)s)")
    g.add_argument("--force", action="store_true", help="replace a non-empty DIR's contents "
                   "(its .git is kept)")
    p.set_defaults(func=_course)

    p = sub.add_parser("image", help="container images without a registry")
    isub = p.add_subparsers(dest="image_cmd", required=True, metavar="ACTION")
    g = isub.add_parser("base", help="build the offline base image from Debian packages")
    g.add_argument("--name", help="image name (default: $BASE_IMAGE or the offline default)")
    g.add_argument("--force", action="store_true", help="rebuild even if it exists")
    isub.add_parser("serving", help="build the model-server image (offline, on $BASE_IMAGE)")
    p.set_defaults(func=_image)

    p = sub.add_parser("serve", help="start the lesson-01 model server (gunicorn + FastAPI)")
    p.add_argument("--model", help="model URI: models:/name@alias, runs:/..., or a path "
                   "(default: train the course model for the profile)")
    p.add_argument("--kind", default="logreg", choices=["logreg", "forest"],
                   help="which course model to train when --model is not given")
    p.add_argument("--name", default="model-server")
    p.add_argument("--port", type=int, help="default: a free port")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cache", default="lru", choices=["none", "lru", "redis"])
    p.add_argument("--redis-url", help="default with --cache redis: start a local redis-server")
    p.add_argument("--db", help="prediction log: SQLite path, postgresql:// URL or 'none'")
    p.add_argument("--profile", choices=PROFILE_NAMES)
    p.add_argument("--detach", action="store_true", help="return and leave it running")
    p.add_argument("--follow-alias", type=float, default=0.0, metavar="SECONDS",
                   help="with --model models:/NAME@ALIAS: poll the registry this often and "
                        "swap in the version the alias points at, without failing a request")
    p.set_defaults(func=_serve)

    p = sub.add_parser("notebooks", help="execute lesson notebooks headless, with time and memory")
    p.add_argument("notebooks", nargs="*", help="default: every notebooks/*.ipynb")
    p.add_argument("--profile", default="smoke", choices=PROFILE_NAMES)
    p.set_defaults(func=_notebooks)

    p = sub.add_parser("demo", help="the scaling showdown: single-large vs many-small under load")
    p.add_argument("--profile", choices=PROFILE_NAMES)
    p.add_argument("--backend", default="auto", choices=["auto", "local", "docker"])
    p.add_argument("--out", help="output directory (default: under the workspace)")
    p.set_defaults(func=_demo)

    import importlib

    for name in CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CourseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from .supervisor import Supervisor

        Supervisor().cleanup()
        print("interrupted: stopped what was started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
