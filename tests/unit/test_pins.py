"""pyproject.toml is the single source of pins; every derived file must agree with it."""

import importlib.metadata
import tomllib

import pytest

from tests.helpers import ROOT, load_script

pytestmark = pytest.mark.unit

lock = load_script(ROOT / "scripts" / "lock.py", "lock")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def direct(group: list[str]) -> dict[str, str]:
    out = {}
    for req in group:
        pin = lock.exact_pin(req)
        assert pin, f"{req!r} in pyproject.toml must be pinned exactly (name==version)"
        out[pin[0]] = pin[1]
    return out


def test_direct_dependencies_are_in_the_lock_at_the_same_version():
    runtime = lock.read_pins(ROOT / "requirements.lock")
    for name, version in direct(PYPROJECT["dependencies"]).items():
        assert runtime.get(name) == version, f"{name}: pyproject {version}, lock {runtime.get(name)}"


def test_dev_lock_extends_the_runtime_lock_without_changing_it():
    runtime = lock.read_pins(ROOT / "requirements.lock")
    dev = lock.read_pins(ROOT / "requirements-dev.lock")
    changed = {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v}
    assert not changed, f"dev lock disagrees with runtime lock: {changed}"
    for name, version in direct(PYPROJECT["optional-dependencies"]["dev"]).items():
        assert dev.get(name) == version


def test_binder_requirements_are_derived_from_the_lock():
    expected = lock.binder_requirements(lock.read_pins(ROOT / "requirements.lock"))
    assert (ROOT / "binder" / "requirements.txt").read_text() == expected, \
        "binder/requirements.txt is stale: run `python scripts/lock.py --derive`"


def test_environment_yml_is_derived_from_the_lock():
    expected = lock.environment_yml(lock.read_pins(ROOT / "requirements.lock"))
    assert (ROOT / "environment.yml").read_text() == expected, \
        "environment.yml is stale: run `python scripts/lock.py --derive`"


def test_environment_yml_asks_for_python_311():
    assert "  - python=3.11\n" in (ROOT / "environment.yml").read_text()


def test_installed_versions_match_the_lock():
    runtime = lock.read_pins(ROOT / "requirements.lock")
    wrong = {}
    for name in direct(PYPROJECT["dependencies"]):
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != runtime[name]:
            wrong[name] = (have, runtime[name])
    assert not wrong, f"installed != locked (run `make setup`): {wrong}"
