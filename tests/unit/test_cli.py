import json
import subprocess
import sys

import pytest

from course_helpers import cli, doctor

pytestmark = pytest.mark.unit

KEYS = {"python", "docker", "nginx", "redis", "cpus", "memory_gb", "binder", "profile", "workspace"}


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "course_helpers.cli", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_doctor_json_has_the_documented_keys(tmp_path, monkeypatch):
    import os

    env = dict(os.environ, MLOPS_HOME=str(tmp_path), MLOPS_PROFILE="smoke")
    out = run("doctor", "--json", env=env)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert KEYS <= rep.keys()
    assert rep["profile"] == "smoke" and rep["workspace"] == str(tmp_path.resolve())
    assert isinstance(rep["docker"], bool) and rep["cpus"] > 0 and rep["memory_gb"] > 0


def test_doctor_text_gives_advice_without_docker(monkeypatch):
    rep = doctor.report()
    rep.update(docker=False, docker_version=None, nginx=False, nginx_version=None, backend="local")
    text = doctor.render(rep)
    assert "local backend" in text and "`nginx`" in text


def test_course_errors_print_one_line_without_traceback(capsys, monkeypatch):
    from course_helpers.errors import CourseError

    def boom(args):
        raise CourseError("port 8000 on 127.0.0.1 is already in use: pick another port.")

    monkeypatch.setattr(cli, "_status", boom)
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: port 8000 on 127.0.0.1 is already in use: pick another port."


@pytest.mark.parametrize("argv", [["capstone", "run", "--profile", "nope"],
                                  ["capstone", "run", "--days", "abc"],
                                  ["rollout", "canary", "--steps"], ["bogus"]])
def test_bad_arguments_give_one_line_and_the_help_pointer(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: mlops-course"), lines
    assert "--help')" in lines[0] and "usage:" not in lines[0]


def test_every_command_has_help():
    for cmd in ("doctor", "cleanup", "status", "grade", "image", "notebooks", "demo", "serve",
                "mlflow", "tracking", "pipeline", "ci"):
        out = run(cmd, "--help")
        assert out.returncode == 0 and "usage: mlops-course" in out.stdout


def test_import_stays_light():
    code = ("import sys, course_helpers, course_helpers.cli, course_helpers.config, "
            "course_helpers.supervisor; "
            "heavy = {'pandas', 'numpy', 'docker', 'mlflow', 'nbgrader', 'sklearn', 'matplotlib',"
            " 'psutil', 'requests'}; print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
