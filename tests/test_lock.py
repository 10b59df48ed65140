"""Locked environments (tools/lock.py): what the suite runs with does not depend on the day it runs.

The day-independence tests publish wheels they build into a local registry (a --find-links
directory), lock and install from it with the real uv and pip, then publish a newer release.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.test_bake import make_wheel
from tools import lock

ROOT = lock.REPO_ROOT

def _named(locked: lock.Lock) -> str:
    return str(locked.path.relative_to(ROOT))


class Registry:
    """A --find-links directory of wheels built here; `publish` is a release going live."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        self.options = ("--no-index", "--find-links", str(directory))  # the same for uv and pip

    def publish(self, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
        make_wheel(self.directory, name, version, requires)


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("UV_NO_CACHE", "1")
    registry = Registry(tmp_path / "registry")
    registry.publish("sdgke-probe-dep", "1.0")
    registry.publish("sdgke-probe-app", "1.0", requires=("sdgke-probe-dep>=1.0",))
    return registry


def _locked(tmp_path: Path, registry: Registry, name: str, requirements: str, within: Path | None = None) -> lock.Lock:
    source = tmp_path / f"{name}.in"
    source.write_text(requirements)
    locked = lock.Lock(source, tmp_path / f"{name}.lock", within)
    lock.resolve(locked, registry.options)
    return locked


def _installed(venv: Path) -> dict[str, str]:
    script = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    out = subprocess.run([venv / "bin" / "python", "-c", script], capture_output=True, text=True, check=True).stdout
    return {lock.canonical(name): version for name, version in json.loads(out).items()}


def test_the_lock_installs_the_version_it_pinned_after_a_newer_release(tmp_path, registry, capsys):
    app = _locked(tmp_path, registry, "app", "sdgke-probe-app\n")
    registry.publish("sdgke-probe-dep", "1.1")
    venv = tmp_path / "venv"

    assert lock.install(venv, app.path, registry=registry.options)

    assert _installed(venv)["sdgke-probe-dep"] == "1.0"
    assert capsys.readouterr().out.splitlines() == [
        f"setup: creating {venv}",
        f"setup: installing 2 locked packages into {venv} (hash-checked, from {app.path})",
        f"setup: removing from {venv} what {app.path} does not name: setuptools",  # venv's seed
    ]
    # Without the lock, the same install takes the new release: the lock is what holds it.
    unlocked = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         *registry.options, "sdgke-probe-app"], capture_output=True, text=True, check=True)
    assert {item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(unlocked.stdout)["install"]} == {
        "sdgke-probe-app": "1.0", "sdgke-probe-dep": "1.1"}


def test_a_wheel_whose_hash_the_lock_does_not_have_is_refused(tmp_path, registry):
    app = _locked(tmp_path, registry, "app", "sdgke-probe-app\n")
    (registry.directory / "sdgke_probe_dep-1.0-py3-none-any.whl").unlink()
    registry.publish("sdgke-probe-dep", "1.0", requires=("sdgke-probe-extra",))  # same version, other bytes

    with pytest.raises(lock.LockError, match=r"install --require-hashes --no-deps .* exited 1 \(whole log: .*\):\n(.|\n)*HASH"):
        lock.install(tmp_path / "venv", app.path, registry=registry.options)


def test_make_lock_takes_the_new_release_and_prints_what_moved(tmp_path, registry, capsys):
    app = _locked(tmp_path, registry, "app", "sdgke-probe-app\n")
    registry.publish("sdgke-probe-dep", "1.1")
    registry.publish("sdgke-probe-extra", "2.0")
    registry.publish("sdgke-probe-app", "1.1", requires=("sdgke-probe-dep>=1.1", "sdgke-probe-extra"))

    lock.relock((app,), node=None, registry=registry.options)

    assert {name: pin.version for name, pin in lock.read_pins(app.path).items()} == {
        "sdgke-probe-app": "1.1", "sdgke-probe-dep": "1.1", "sdgke-probe-extra": "2.0"}
    assert capsys.readouterr().out == (
        f"lock: {app.path}: sdgke-probe-app 1.0 -> 1.1, sdgke-probe-dep 1.0 -> 1.1, added sdgke-probe-extra 2.0\n")


def test_a_changed_lock_is_reinstalled_exactly_and_an_unchanged_one_costs_nothing(tmp_path, registry, capsys):
    app = _locked(tmp_path, registry, "app", "sdgke-probe-app\n")
    venv = tmp_path / "venv"
    lock.install(venv, app.path, registry=registry.options)
    registry.publish("sdgke-probe-dep", "1.1")
    dep = _locked(tmp_path, registry, "dep", "sdgke-probe-dep\n")
    capsys.readouterr()

    assert lock.install(venv, dep.path, registry=registry.options)
    assert not lock.install(venv, dep.path, registry=registry.options)

    installed = _installed(venv)
    assert (installed.get("sdgke-probe-app"), installed["sdgke-probe-dep"]) == (None, "1.1")
    assert capsys.readouterr().out.splitlines() == [
        f"setup: installing 1 locked packages into {venv} (hash-checked, from {dep.path})",
        f"setup: removing from {venv} what {dep.path} does not name: sdgke-probe-app",
    ]


def test_a_share_that_drifted_from_its_lock_fails_naming_make_lock(tmp_path, registry):
    app = _locked(tmp_path, registry, "app", "sdgke-probe-app\n")
    share = _locked(tmp_path, registry, "share", "sdgke-probe-dep\n", within=app.path)
    assert lock.drift(share) == ""
    registry.publish("sdgke-probe-dep", "1.1")

    lock.resolve(app, registry.options)

    assert lock.drift(share) == (
        f"{share.path} disagrees with {app.path}: sdgke-probe-dep 1.0 where it has 1.1. "
        "Run `make lock` to regenerate it from the lock.")
    lock.resolve(share, registry.options)
    assert lock.drift(share) == ""


def test_the_attachers_old_pins_against_todays_lock_fail_naming_make_lock(tmp_path):
    """The 2026-11-29 failure, now a drift between two files of the repository, with its fix named."""
    stale = tmp_path / "requirements.txt"
    text = lock.ATTACHER.path.read_text()
    stale.write_text(re.sub(r"^grpcio==\S+", "grpcio==1.85.1", text, flags=re.M))

    message = lock.drift(lock.Lock(lock.ATTACHER.source, stale, within=lock.PROGRAM.path))

    locked = lock.read_pins(lock.PROGRAM.path)["grpcio"].version
    assert message == (f"{stale} disagrees with requirements.lock: grpcio 1.85.1 where it has {locked}. "
                       "Run `make lock` to regenerate it from the lock.")


def test_setup_with_a_python_the_locks_are_not_for_stops_before_creating_anything(tmp_path, registry, monkeypatch):
    app = _locked(tmp_path, registry, "app", "sdgke-probe-app\n")
    monkeypatch.setattr(lock, "PYTHON", (3, 99))
    found = ".".join(map(str, sys.version_info[:2]))

    with pytest.raises(lock.LockError, match=rf"^{re.escape(sys.executable)} is Python {found}, the locks are for Python "
                                             r"3\.99: run make with PYTHON=python3\.99"):
        lock.install(tmp_path / "venv", app.path, registry=registry.options)
    assert not (tmp_path / "venv").exists()


def test_the_venv_the_suite_runs_in_holds_the_locked_versions():
    wrong = {}
    for name, pin in lock.read_pins(lock.PROGRAM.path).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            wrong[name] = (installed, pin.version)

    assert not wrong, f"(installed, locked) differ: {wrong}; run `make setup`"


@pytest.mark.parametrize("share", lock.SHARES, ids=_named)
def test_every_share_is_cut_from_the_lock(share):
    assert lock.drift(share) == ""


@pytest.mark.parametrize("locked", lock.LOCKS, ids=_named)
def test_every_lock_pins_every_package_with_hashes(locked):
    unhashed = [name for name, pin in lock.read_pins(locked.path).items() if not pin.hashes]

    assert lock.read_pins(locked.path) and not unhashed


@pytest.mark.parametrize("locked", lock.LOCKS, ids=_named)
def test_every_lock_satisfies_its_input(locked):
    """An input edited without `make lock` shows here."""
    pins = lock.read_pins(locked.path)
    unmet = []
    for line in _requirements(locked.source):
        requirement = Requirement(line)
        pin = pins.get(lock.canonical(requirement.name))
        if pin is None or not requirement.specifier.contains(pin.version, prereleases=True):
            unmet.append(f"{line} (locked: {pin.version if pin else 'absent'})")

    assert not unmet, f"{locked.path.name} does not satisfy {locked.source.name}: {unmet}; run `make lock`"


def _requirements(source: Path) -> list[str]:
    lines = []
    for line in source.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            lines += _requirements(source.parent / line.removeprefix("-r ").strip())
        elif line:
            lines.append(line)
    return lines


def test_the_google_cloud_compute_hold_and_its_reason_stay_in_the_input():
    text = lock.PULUMI_PROGRAM.source.read_text()

    assert "google-cloud-compute==1.48.0\n" in text
    assert "1.49+ needs protobuf>=6.33, pulumi-policy 1.21 needs protobuf~=5.29" in text


def test_the_npm_lock_checks_integrity_and_names_no_download_host():
    manifest = json.loads((lock.NODE_TOOLS / "package.json").read_text())
    locked = json.loads((lock.NODE_TOOLS / "package-lock.json").read_text())["packages"]

    assert locked[""]["dependencies"] == manifest["dependencies"]
    assert [path for path, entry in locked.items() if path and not entry.get("integrity", "").startswith("sha512-")] == []
    assert [entry["resolved"] for entry in locked.values() if "resolved" in entry] == []


def test_ci_runs_exactly_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    two_commands = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make [^#\n]*?)\s*#", two_commands, re.M)
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]

    assert "make test e2e" in commands
    assert ci == ["make test e2e"]
    assert "set -euo pipefail" in (ROOT / ".ci" / "run").read_text()
